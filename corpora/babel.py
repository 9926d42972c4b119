"""IARPA BABEL language packs: conversational (training, dev, eval) and scripted speech.

Audio is NIST SPHERE (ulaw, alaw or PCM, coding read from its header by libsndfile) or WAV,
one call side per file. Transcripts alternate ``[seconds]`` lines and text; segment i spans
t[i]..t[i+1]. Real files' quirks, each handled: two timestamps in a row (no segment), zero or
negative durations and speech-free segments (rejects with that reason; ``--keep-silence``
keeps the latter), duplicate start times (the dedup stage), segments past the audio end
(trimmed by the decoder, or a reject when they start after it). Eval audio has no transcripts:
with ``--babel-eval-window S`` it is cut into S-second audio-only utterances, else skipped.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator

from voxshard.corpora.base import (
    CorpusOptions,
    ParseResult,
    Setting,
    SourceUtterance,
    map_gender,
    none_if_empty,
    read_lines,
    read_table,
)
from voxshard.schemas import ConfigError, CorpusFormatError, make_key, storage
from voxshard.schemas.tables import data_rows

NAME = "babel"
DEFAULT_SPLITS = ("train", "dev", "eval")
SETTINGS = {
    setting.name: setting
    for setting in (
        Setting("babel_eval_window", "cut eval audio into audio-only windows of S seconds"),
        Setting(
            "keep_silence",
            "keep segments with no speech in them",
            ("yes", "no"),
            "no",
            flag=True,
        ),
    )
}
# A pack is found by its content (conversational/ or scripted/ folders), at ROOT or up to
# PACK_DEPTH folders below it. Its language id comes from its name, or the name of a folder
# around it, in any of LDC's spellings: BABEL_OP1_102, IARPA_BABEL_OP1_102,
# BABEL_OP1_206-v0.1e, IARPA-babel202b-v1.0d-build; else from its files' stems.
PACK_PARTS = ("conversational", "scripted")
PACK_DEPTH = 3
PACK_NAME = re.compile(r"(?i)babel(?:_[a-z]+[0-9]*)?[_-]?(?P<id>[0-9]{3})(?![0-9])")
STEM = re.compile(r"^BABEL_[A-Z0-9]+_(?P<id>[0-9]{3})_")
TIMESTAMP = re.compile(r"^\[\s*(?P<t>[0-9]+(?:\.[0-9]*)?)\s*\]$")
# (folder inside the pack, split)
TRANSCRIBED = (
    ("conversational/training", "train"),
    ("conversational/dev", "dev"),
    ("scripted/training", "train"),
)
AUDIO_EXTENSIONS = (".sph", ".wav")
DEMOGRAPHICS = "conversational/reference_materials/demographics.tsv"


@functools.cache
def token_kinds() -> dict[str, str]:
    return {row["token"]: row["kind"] for row in data_rows("voxshard.corpora", "babel_tokens.tsv")}


def normalize_transcript(text: str) -> str | None:
    """Drop BABEL's annotation tokens; unmark ``*misspelled*`` words; keep fragments (``hel-``)."""
    kinds = token_kinds()
    words = []
    for token in text.split():
        if token in kinds or (token.startswith("<") and token.endswith(">")):
            continue
        token = token.strip("*")
        if token:
            words.append(token)
    return " ".join(words) or None


def has_speech(text: str) -> bool:
    kinds = token_kinds()
    return any(kinds.get(token, "word") in ("word", "speech") for token in text.split())


def _is_pack(folder: str) -> bool:
    return any(storage.isdir(storage.join(folder, part)) for part in PACK_PARTS)


def _stem_language(folder: str) -> str | None:
    """The language id in the stem of the pack's first transcript or audio file."""
    for inner, _split in TRANSCRIBED:
        for kind in ("transcription", "audio"):
            path = storage.join(folder, inner, kind)
            if storage.isdir(path):
                for name in sorted(storage.listdir(path))[:1]:
                    match = STEM.match(name)
                    if match:
                        return match["id"]
    return None


def pack_language(root: str, pack: str) -> str | None:
    """A pack's BABEL language id, from its name, a folder around it, or its files."""
    names = [os.path.basename(os.path.normpath(root)), *(p for p in pack.split("/") if p)]
    for name in reversed(names):
        match = PACK_NAME.search(name)
        if match:
            return match["id"]
    return _stem_language(storage.join(root, pack) if pack else root)


def find_packs(root: str) -> list[str]:
    """Pack folders relative to ROOT ("" for ROOT itself), found by their content."""
    if _is_pack(root):
        return [""]
    packs, level = [], [""]
    for _depth in range(PACK_DEPTH):
        below = []
        for relative in level:
            folder = storage.join(root, relative) if relative else root
            for name in sorted(storage.listdir(folder)):
                child = f"{relative}/{name}" if relative else name
                path = storage.join(root, child)
                if not storage.isdir(path):
                    continue
                if _is_pack(path):
                    packs.append(child)
                else:
                    below.append(child)
        level = below
    return sorted(packs)


def _packs(options: CorpusOptions) -> list[tuple[str, str]]:
    """(pack folder relative to ROOT, BABEL language id) for the chosen languages."""
    if not storage.isdir(options.root):
        raise ConfigError(f"BABEL ROOT {options.root!r} is not a folder")
    packs, unknown = [], []
    for pack in find_packs(options.root):
        language = pack_language(options.root, pack)
        if language is None:
            unknown.append(pack or options.root)
        elif options.wants_language(language):
            packs.append((pack, language))
    if unknown:
        raise ConfigError(
            f"cannot tell the BABEL language of pack(s) {', '.join(map(repr, unknown))}: "
            "name the folder as LDC does (BABEL_<phase>_<id>, e.g. BABEL_OP1_102)"
        )
    return packs


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def list_sources(options: CorpusOptions) -> list[str]:
    sources: list[str] = []
    eval_window = options.setting("babel_eval_window", "")
    packs = _packs(options)
    for pack, _language_id in packs:
        for folder, split in TRANSCRIBED:
            if not options.wants_split(split):
                continue
            transcripts = storage.join(options.root, _join(pack, folder, "transcription"))
            if storage.isdir(transcripts):
                sources.extend(
                    _join(pack, folder, "transcription", name)
                    for name in sorted(storage.listdir(transcripts))
                    if name.endswith(".txt")
                )
        if storage.isfile(storage.join(options.root, _join(pack, DEMOGRAPHICS))):
            sources.append(_join(pack, DEMOGRAPHICS))  # parsed for its bad rows
        audio = storage.join(options.root, _join(pack, "conversational", "eval", "audio"))
        if eval_window and options.wants_split("eval") and storage.isdir(audio):
            sources.extend(
                _join(pack, "conversational", "eval", "audio", name)
                for name in sorted(storage.listdir(audio))
                if name.endswith(AUDIO_EXTENSIONS)
            )
    if not [source for source in sources if not source.endswith(DEMOGRAPHICS)]:
        raise ConfigError(
            f"no BABEL transcripts under {options.root!r} for the chosen languages and splits: "
            "expected <pack>/conversational/{training,dev}/transcription/*.txt "
            f"(packs found: {', '.join(p or '.' for p, _ in packs) or 'none'})"
        )
    return sources


def split_source(source: str) -> tuple[str, str]:
    """(pack relative to ROOT, path inside the pack) of a source path."""
    parts = source.split("/")
    at = next(i for i, part in enumerate(parts) if part in PACK_PARTS)
    return "/".join(parts[:at]), "/".join(parts[at:])


Demographics = dict[str, tuple[str | None, str | None, str | None]]


@functools.lru_cache(maxsize=16)
def read_demographics(
    path: str,
) -> tuple[Demographics, tuple[tuple[int | None, str, str | None], ...]]:
    """(outputFn stem -> (gender, age, dialect), the bad rows as (line, reason, detail)).
    Both the 12- and 14-column forms; a row without an outputFn is a bad row."""
    found: Demographics = {}
    bad: list[tuple[int | None, str, str | None]] = []
    if not storage.isfile(path):
        return found, ()
    for number, row in read_table(path, path):
        if isinstance(row, CorpusFormatError):
            bad.append((row.line, row.reason, row.detail))
            continue
        stem = os.path.splitext((row.get("outputFn") or "").strip())[0]
        if not stem:
            bad.append((number, "missing required columns", "outputFn"))
            continue
        found[stem] = (
            map_gender(row.get("gen")),
            none_if_empty(row.get("age")),
            none_if_empty(row.get("dialect")),
        )
    return found, tuple(bad)


def speaker_of(stem: str) -> str | None:
    """``BABEL_BP_101_10470_20111118_172644_inLine`` -> ``babel_101_10470_A`` (outLine: B)."""
    fields = stem.split("_")
    if len(fields) < 4 or not fields[2].isdigit():
        return None
    side = "B" if "outLine" in fields else "A"
    return f"{NAME}_{fields[2]}_{fields[3]}_{side}"


def _audio_for(options: CorpusOptions, folder: str, stem: str) -> str:
    base = f"{folder}/audio/{stem}"
    for extension in AUDIO_EXTENSIONS:
        if storage.isfile(storage.join(options.root, base + extension)):
            return base + extension
    return base + AUDIO_EXTENSIONS[0]  # missing: the decode stage rejects it


def parse_source(options: CorpusOptions, source: str) -> Iterator[ParseResult]:
    parts = source.split("/")
    pack, _inner = split_source(source)
    language_id = pack_language(options.root, pack)
    if language_id is None:
        yield CorpusFormatError(source, None, "not a BABEL pack folder", pack)
        return
    demographics_path = _join(pack, DEMOGRAPHICS)
    demographics, bad_rows = read_demographics(storage.join(options.root, demographics_path))
    if source == demographics_path:  # a source of its own: its bad rows are its rejects
        for number, reason, detail in bad_rows:
            yield CorpusFormatError(source, number, reason, detail)
        return
    if "/eval/audio/" in source:
        yield from _eval_windows(options, source, language_id, demographics)
        return
    folder = "/".join(parts[:-2])
    stem = os.path.splitext(parts[-1])[0]
    split = "dev" if folder.endswith("/dev") else "train"
    keep_silence = options.setting("keep_silence", "no") == "yes"
    audio_path = _audio_for(options, folder, stem)
    for number, start_s, end_s, text in _segments(options, source):
        if isinstance(text, CorpusFormatError):
            yield text
            continue
        if end_s <= start_s:
            yield CorpusFormatError(
                source, number, "zero or negative duration", f"[{start_s}] .. [{end_s}]"
            )
            continue
        if not has_speech(text) and not keep_silence:
            yield CorpusFormatError(source, number, "no speech in segment", text)
            continue
        yield _utterance(
            stem,
            split,
            language_id,
            audio_path,
            f"{source}:{number}",
            start_s,
            end_s,
            demographics,
            text,
        )


def _utterance(
    stem: str,
    split: str,
    language_id: str,
    audio_path: str,
    origin: str,
    start_s: float,
    end_s: float,
    demographics: dict[str, tuple[str | None, str | None, str | None]],
    text: str | None = None,
) -> SourceUtterance:
    """One segment of a call side: key from the stem and start, speaker and demographics."""
    gender, age, dialect = demographics.get(stem, (None, None, None))
    return SourceUtterance(
        key=make_key(NAME, f"{stem}_{round(start_s * 1000):09d}"),
        corpus=NAME,
        split=split,
        source_language=language_id,
        audio_path=audio_path,
        origin=origin,
        start_s=start_s,
        end_s=end_s,
        speaker=speaker_of(stem),
        gender=gender,
        age=age,
        accent=dialect,
        transcript=text,
        transcript_normalized=None if text is None else normalize_transcript(text),
        normalized_by_source=text is not None,
    )


def _segments(
    options: CorpusOptions, source: str
) -> Iterator[tuple[int, float, float, str | CorpusFormatError]]:
    """(line of the text, start, end, text) for each timestamp followed by text."""
    times: list[tuple[int, float]] = []
    texts: dict[int, tuple[int, str]] = {}  # index in times -> (line, text)
    for number, raw in read_lines(storage.join(options.root, source), source):
        if isinstance(raw, CorpusFormatError):
            yield number, 0.0, 0.0, raw
            continue
        line = raw.strip()
        if not line:
            continue
        match = TIMESTAMP.match(line)
        if match:
            times.append((number, float(match["t"])))
        elif not times:
            yield (
                number,
                0.0,
                0.0,
                CorpusFormatError(source, number, "text before the first timestamp", line),
            )
        elif len(times) - 1 in texts:  # a second text line for one segment: join them
            first, previous = texts[len(times) - 1]
            texts[len(times) - 1] = (first, f"{previous} {line}")
        else:
            texts[len(times) - 1] = (number, line)
    for index, (number, text) in sorted(texts.items()):
        if index + 1 >= len(times):
            yield (
                number,
                0.0,
                0.0,
                CorpusFormatError(source, number, "text after the last timestamp", text),
            )
            continue
        yield number, times[index][1], times[index + 1][1], text


def _eval_windows(
    options: CorpusOptions,
    source: str,
    language_id: str,
    demographics: dict[str, tuple[str | None, str | None, str | None]],
) -> Iterator[ParseResult]:
    import soundfile as sf

    window_s = float(options.setting("babel_eval_window", "0"))
    stem = os.path.splitext(os.path.basename(source))[0]
    try:
        with storage.open_read(storage.join(options.root, source)) as handle:
            info = sf.info(handle)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        yield CorpusFormatError(source, None, "unreadable audio", str(error))
        return
    duration_s = info.frames / info.samplerate
    start_s = 0.0
    while start_s < duration_s:
        end_s = min(start_s + window_s, duration_s)
        yield _utterance(
            stem,
            "eval",
            language_id,
            source,
            f"{source}@{start_s:g}",
            start_s,
            end_s,
            demographics,
        )
        start_s = end_s


def list_languages(options: CorpusOptions) -> list[str]:
    if not storage.isdir(options.root):
        return []
    found = (pack_language(options.root, pack) for pack in find_packs(options.root))
    return sorted({language for language in found if language is not None})
