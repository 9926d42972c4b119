"""VoxPopuli: transcribed (ASR) segments and unlabelled segments. See corpora-formats.md.

ASR rows come from ``transcribed_data/<lang>/asr_<lang>.tsv.gz`` (``|``-separated, quoting
off). A row's audio is, in order of preference: the pre-cut segment the official cutter writes
(``transcribed_data/<lang>/<YYYY>/<session>-<id_>.ogg``), else its ``vad`` pieces cut from the
session audio and concatenated, read from ``raw_audios/<lang>/<YYYY>/<session>_<lang>.ogg``
(falling back to ``raw_audios/original/<YYYY>/<session>_original.ogg``; ``--voxpopuli-audio
original`` always reads the floor audio). Rows with ``split == invalid`` are rejects.

Unlabelled rows come from ``unlabelled_data/unlabelled_v2.tsv.gz`` (TAB: event_id segment_no
start end; the event id ends in ``_<lang>``): the pre-cut ``unlabelled_data/<lang>/<YYYY>/
<event_id>_<n>.ogg`` or the span of ``raw_audios/<lang>/<YYYY>/<event_id>.ogg``. Without
--languages, only languages with audio on disk are read.
"""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Iterator

from voxshard.corpora.base import (
    CorpusOptions,
    ParseResult,
    Setting,
    SourceUtterance,
    map_gender,
    none_if_empty,
    read_table_requiring,
)
from voxshard.schemas import ConfigError, CorpusFormatError, InvalidKeyError, make_key, storage

NAME = "voxpopuli"
DEFAULT_SPLITS = ("train", "dev", "test", "unlabelled")
SETTINGS = {
    setting.name: setting
    for setting in (
        Setting(
            "voxpopuli_data",
            "the transcribed ASR segments, the unlabelled data, or both",
            ("asr", "unlabelled", "both"),
            "asr",
        ),
        Setting(
            "voxpopuli_audio",
            "cut from the language channel, or from the original (floor) audio",
            ("lang", "original"),
            "lang",
        ),
    )
}
ASR_REQUIRED = ("id_", "session_id", "speaker_id", "original_text", "normed_text", "vad", "split")
UNLABELLED_TABLE = "unlabelled_data/unlabelled_v2.tsv.gz"
UNLABELLED_REQUIRED = ("event_id", "segment_no", "start", "end")


class _Listing:
    """Cached directory listings, so existence checks cost one listdir per folder."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.cache: dict[str, frozenset[str]] = {}

    def exists(self, relative: str) -> bool:
        folder, name = os.path.split(relative)
        if folder not in self.cache:
            full = storage.join(self.root, folder)
            found = storage.listdir(full) if storage.isdir(full) else []
            self.cache[folder] = frozenset(found)
        return name in self.cache[folder]


def list_sources(options: CorpusOptions) -> list[str]:
    data = options.setting("voxpopuli_data", "asr")
    sources = []
    if data in ("asr", "both"):
        folder = storage.join(options.root, "transcribed_data")
        for lang in sorted(storage.listdir(folder)) if storage.isdir(folder) else []:
            table = f"transcribed_data/{lang}/asr_{lang}.tsv.gz"
            if storage.isfile(storage.join(options.root, table)) and options.wants_language(lang):
                sources.append(table)
    if data in ("unlabelled", "both") and storage.isfile(
        storage.join(options.root, UNLABELLED_TABLE)
    ):
        sources.append(UNLABELLED_TABLE)
    if not sources:
        raise ConfigError(
            f"no VoxPopuli tables for --voxpopuli-data {data} under {options.root!r}: expected "
            "transcribed_data/<lang>/asr_<lang>.tsv.gz or " + UNLABELLED_TABLE
        )
    return sources


def parse_source(options: CorpusOptions, source: str) -> Iterator[ParseResult]:
    listing = _Listing(options.root)
    if source == UNLABELLED_TABLE:
        yield from _parse_unlabelled(options, source, listing)
    else:
        yield from _parse_asr(options, source, source.split("/")[1], listing)


def parse_vad(text: str) -> tuple[tuple[float, float], ...]:
    """``[[0.0, 1.2], [1.5, 3.0]]`` (a Python literal) -> pieces; raises ValueError."""
    value = ast.literal_eval(text.strip())
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("vad must be a non-empty list of [start, end] pairs")
    pieces = []
    for piece in value:
        if not isinstance(piece, list | tuple) or len(piece) != 2:
            raise ValueError(f"vad piece {piece!r} is not a [start, end] pair")
        start, end = float(piece[0]), float(piece[1])
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise ValueError(f"vad piece {piece!r} is not 0 <= start < end")
        pieces.append((start, end))
    return tuple(pieces)


def _parse_asr(
    options: CorpusOptions, source: str, lang: str, listing: _Listing
) -> Iterator[ParseResult]:
    channel = lang.split("_")[0]  # en_accented is cut from the English channel
    audio_choice = options.setting("voxpopuli_audio", "lang")
    table = storage.join(options.root, source)
    # CSV with quoting, as the official reader (get_asr_data.py: csv.DictReader, "|"):
    # '"""Brexit"" is ..."' is '"Brexit" is ...', and a quoted field may hold a '|'
    for number, row in read_table_requiring(table, source, ASR_REQUIRED, "|", quoting=True):
        if isinstance(row, CorpusFormatError):
            yield row
            continue
        split = row["split"].strip()
        if split == "invalid":
            yield CorpusFormatError(source, number, "split is invalid", row["id_"])
            continue
        if not options.wants_split(split):
            continue
        try:
            yield _asr_row(row, source, number, lang, channel, audio_choice, listing)
        except CorpusFormatError as error:
            yield error


def _asr_row(
    row: dict[str, str],
    source: str,
    number: int,
    lang: str,
    channel: str,
    audio_choice: str,
    listing: _Listing,
) -> SourceUtterance:
    utterance_id = row["id_"].strip()
    session = row["session_id"].strip() or "-".join(utterance_id.split("-")[:4])
    year = session[:4]
    try:
        key = make_key(NAME, utterance_id)
    except InvalidKeyError as error:
        raise CorpusFormatError(source, number, "invalid key", str(error)) from error
    try:
        pieces = parse_vad(row["vad"])
    except (ValueError, SyntaxError, TypeError) as error:
        raise CorpusFormatError(source, number, "invalid vad", str(error)) from error
    precut = f"transcribed_data/{lang}/{year}/{session}-{utterance_id}.ogg"
    if listing.exists(precut):
        audio_path, audio_pieces = precut, None
        start_s, end_s = None, None
    else:
        own = f"raw_audios/{channel}/{year}/{session}_{channel}.ogg"
        original = f"raw_audios/original/{year}/{session}_original.ogg"
        audio_path = own if audio_choice == "lang" and listing.exists(own) else original
        audio_pieces = pieces
        start_s, end_s = pieces[0][0], pieces[-1][1]
    speaker = none_if_empty(row.get("speaker_id"))
    return SourceUtterance(
        key=key,
        corpus=NAME,
        split=row["split"].strip(),
        source_language=lang,
        audio_path=audio_path,
        origin=f"{source}:{number}",
        start_s=start_s,
        end_s=end_s,
        pieces=audio_pieces,
        speaker=None if speaker is None else f"{NAME}_{speaker}",
        gender=map_gender(row.get("gender")),
        accent=none_if_empty(row.get("accent")),
        transcript=none_if_empty(row.get("original_text")),
        # VoxPopuli's own normalization: --normalize applies to original_text like every
        # corpus; --normalize source takes this instead
        transcript_normalized=none_if_empty(row.get("normed_text")),
    )


def _parse_unlabelled(
    options: CorpusOptions, source: str, listing: _Listing
) -> Iterator[ParseResult]:
    on_disk = {
        name
        for folder in ("unlabelled_data", "raw_audios")
        if storage.isdir(storage.join(options.root, folder))
        for name in storage.listdir(storage.join(options.root, folder))
    }
    table = storage.join(options.root, source)
    for number, row in read_table_requiring(table, source, UNLABELLED_REQUIRED):
        if isinstance(row, CorpusFormatError):
            yield row
            continue
        event = row["event_id"].strip()
        lang = event.rsplit("_", 1)[-1]
        if not options.wants_split("unlabelled") or not (
            options.wants_language(lang) if options.languages is not None else lang in on_disk
        ):
            continue
        try:
            start_s, end_s = float(row["start"]), float(row["end"])
            if not 0 <= start_s < end_s:
                raise ValueError(f"{start_s}..{end_s} is not 0 <= start < end")
        except ValueError as error:
            yield CorpusFormatError(source, number, "invalid start/end", str(error))
            continue
        segment = row["segment_no"].strip()
        year = event[:4]
        precut = f"unlabelled_data/{lang}/{year}/{event}_{segment}.ogg"
        session = f"raw_audios/{lang}/{year}/{event}.ogg"
        use_precut = listing.exists(precut) or not listing.exists(session)
        try:
            key = make_key(NAME, f"{event}_{segment}")
        except InvalidKeyError as error:
            yield CorpusFormatError(source, number, "invalid key", str(error))
            continue
        yield SourceUtterance(
            key=key,
            corpus=NAME,
            split="unlabelled",
            source_language=lang,
            audio_path=precut if use_precut else session,
            origin=f"{source}:{number}",
            start_s=None if use_precut else start_s,
            end_s=None if use_precut else end_s,
        )


def list_languages(options: CorpusOptions) -> list[str]:
    """Languages with a folder of tables or audio under ROOT."""
    found: set[str] = set()
    for folder in ("transcribed_data", "raw_audios", "unlabelled_data"):
        path = storage.join(options.root, folder)
        if storage.isdir(path):
            found.update(
                name
                for name in storage.listdir(path)
                if name != "original" and storage.isdir(storage.join(path, name))
            )
    return sorted(found)
