"""Common Voice: ``ROOT/<locale>/{train,dev,test,validated,...}.tsv`` + ``clips/*.mp3``.

Every TSV generation (v1 to v17+) is read by column name with quoting off; see
shared/corpora-formats.md. ROOT may also be one locale folder itself (it holds ``clips/``).
Corpus 1-4 archives unpack to ``cv-corpus-<N>_<locale>/`` with the TSVs and clips inside and
no ``locale`` column: their locale is the folder name's suffix. A folder's locale comes from
that suffix, else its name when that is a language tag, else its clips' names
(``common_voice_<locale>_<n>.mp3``); one that none of these give is an error, never a guess.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import replace

from voxshard.corpora.base import (
    CorpusOptions,
    ParseResult,
    SourceUtterance,
    map_gender,
    none_if_empty,
    read_table,
    read_table_requiring,
)
from voxshard.schemas import (
    ConfigError,
    CorpusFormatError,
    InvalidKeyError,
    is_language_tag,
    make_key,
    storage,
)

NAME = "commonvoice"
DURATIONS = "clip_durations.tsv"
DEFAULT_SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("client_id", "path")


ARCHIVE_FOLDER = re.compile(
    r"^cv-corpus-[0-9][0-9.]*(?:-[0-9]{4}-[0-9]{2}-[0-9]{2})?[_-](?P<locale>[A-Za-z]{2,3}(?:-[A-Za-z0-9]+)*)$"
)
CLIP_NAME = re.compile(r"^common_voice_(?P<locale>[A-Za-z]{2,3}(?:-[A-Za-z0-9]+)*)_[0-9]+")
TSV_NAMES = ("validated", *DEFAULT_SPLITS, "other", "invalidated")
KNOWN_SPLITS = (*DEFAULT_SPLITS, "validated", "other", "invalidated")  # one TSV each


def _is_locale_folder(path: str) -> bool:
    return storage.isdir(storage.join(path, "clips")) or any(
        storage.isfile(storage.join(path, f"{s}.tsv")) for s in DEFAULT_SPLITS
    )


def _clip_locale(folder: str) -> str | None:
    """The locale in the first clip name of the folder's first TSV."""
    for name in TSV_NAMES:
        path = storage.join(folder, f"{name}.tsv")
        if not storage.isfile(path):
            continue
        for _number, row in read_table_requiring(path, name, REQUIRED_COLUMNS):
            if isinstance(row, CorpusFormatError):
                continue
            match = CLIP_NAME.match(os.path.basename(row["path"].strip()))
            return match["locale"] if match else None
    return None


def folder_locale(folder: str) -> str | None:
    """A Common Voice folder's locale: the archive name's suffix, the name itself when it is a
    language tag, or the clips' names. None when none of them says."""
    name = os.path.basename(os.path.normpath(folder))
    match = ARCHIVE_FOLDER.match(name)
    if match:
        return match["locale"]
    if is_language_tag(name):  # the whole name, never a prefix of it ("my-copy" is no "my")
        return name
    return _clip_locale(folder)


def _locale_dirs(root: str) -> list[tuple[str, str]]:
    """(locale, folder relative to ROOT) pairs, sorted. Raises ConfigError for a folder of
    clips whose locale cannot be determined."""
    if _is_locale_folder(root) and storage.isdir(storage.join(root, "clips")):
        candidates = [("", root)]
    else:
        candidates = [
            (name, storage.join(root, name))
            for name in storage.listdir(root)
            if _is_locale_folder(storage.join(root, name))
        ]
    found, unknown = [], []
    for relative, path in sorted(candidates):
        locale = folder_locale(path)
        if locale is None:
            unknown.append(relative or root)
        else:
            found.append((locale, relative))
    if unknown:
        raise ConfigError(
            f"cannot tell the locale of {', '.join(map(repr, unknown))}: its name is not a "
            "language tag or cv-corpus-<N>_<locale>, and its clips are not named "
            "common_voice_<locale>_<n>; rename the folder after its locale (e.g. de)"
        )
    return found


def list_sources(options: CorpusOptions) -> list[str]:
    """The chosen split TSVs of the chosen locales, as paths relative to ROOT."""
    if not storage.isdir(options.root):
        raise ConfigError(f"Common Voice ROOT {options.root!r} is not a folder")
    splits = options.splits or DEFAULT_SPLITS
    locales = _locale_dirs(options.root)
    if not locales:
        raise ConfigError(
            f"no Common Voice locale folders under {options.root!r}: expected "
            "ROOT/<locale>/clips/ and ROOT/<locale>/<split>.tsv (point ROOT at cv-corpus-N/)"
        )
    sources = []
    for locale, folder in locales:
        if not options.wants_language(locale):
            continue
        for split in splits:
            relative = f"{folder}/{split}.tsv" if folder else f"{split}.tsv"
            if storage.isfile(storage.join(options.root, relative)):
                sources.append(relative)
    if not sources:
        raise ConfigError(
            f"no {'/'.join(splits)} TSVs for the chosen languages under {options.root!r} "
            f"(locales found: {', '.join(loc for loc, _ in locales)})"
        )
    return sources


def parse_source(options: CorpusOptions, source: str) -> Iterator[ParseResult]:
    """Parse one split TSV into SourceUtterances (bad rows become CorpusFormatErrors)."""
    path = storage.join(options.root, source)
    folder = os.path.dirname(source)
    locale_default = folder_locale(storage.join(options.root, folder) if folder else options.root)
    if locale_default is None:  # list_sources refused such a folder already
        raise CorpusFormatError(source, None, "cannot tell the folder's locale")
    split = os.path.basename(source)[: -len(".tsv")]
    durations = _clip_durations(options.root, folder, path, source)
    for number, row in read_table_requiring(path, source, REQUIRED_COLUMNS):
        if isinstance(row, CorpusFormatError):
            yield row
            continue
        try:
            utterance = _parse_row(row, source, number, folder, locale_default, split)
        except CorpusFormatError as error:
            yield error
            continue
        stated = durations.get(utterance.audio_path.rsplit("/", 1)[-1])
        yield utterance if stated is None else replace(utterance, duration_s=stated)


def _clip_durations(root: str, folder: str, table: str, display: str) -> dict[str, float]:
    """Seconds per clip of this TSV from the locale's clip_durations.tsv (Common Voice >=
    16.1: ``clip TAB duration[ms]``), read for this TSV's clips only; {} when absent."""
    durations_path = (
        storage.join(root, folder, DURATIONS) if folder else storage.join(root, DURATIONS)
    )
    if not storage.isfile(durations_path):
        return {}
    wanted = set()
    for _number, row in read_table_requiring(table, display, REQUIRED_COLUMNS):
        if not isinstance(row, CorpusFormatError):
            clip = row["path"].strip()
            wanted.add(clip if "." in clip else clip + ".mp3")
    found: dict[str, float] = {}
    for _number, row in read_table(durations_path, DURATIONS):
        if isinstance(row, CorpusFormatError) or row.get("clip") not in wanted:
            continue
        try:
            milliseconds = float(row.get("duration[ms]", ""))
        except ValueError:
            continue  # a bad row: the clip's header is read instead
        if milliseconds > 0:
            found[row["clip"]] = milliseconds / 1000.0
    return found


def _parse_row(
    row: dict[str, str], source: str, number: int, folder: str, locale_default: str, split: str
) -> SourceUtterance:
    clip = row["path"].strip()
    if not clip or "/" in clip or "\\" in clip or clip in (".", ".."):
        raise CorpusFormatError(source, number, "invalid clip name", repr(clip))
    if "." not in clip:
        clip += ".mp3"  # early releases listed clip names without the extension
    stem = clip.rsplit(".", 1)[0]
    if stem.startswith("common_voice_"):
        stem = stem[len("common_voice_") :]
    try:
        key = make_key(NAME, stem)
    except InvalidKeyError as error:
        raise CorpusFormatError(source, number, "invalid key", str(error)) from error
    client = none_if_empty(row.get("client_id"))
    accent = none_if_empty(row.get("accents", row.get("accent")))
    return SourceUtterance(
        key=key,
        corpus=NAME,
        split=split,
        source_language=none_if_empty(row.get("locale")) or locale_default,
        audio_path=f"{folder}/clips/{clip}" if folder else f"clips/{clip}",
        origin=f"{source}:{number}",
        speaker=None if client is None else f"{NAME}_{client}",
        gender=map_gender(row.get("gender")),
        age=none_if_empty(row.get("age")),
        accent=accent,
        transcript=none_if_empty(row.get("sentence")),
    )


def list_languages(options: CorpusOptions) -> list[str]:
    return [locale for locale, _folder in _locale_dirs(options.root)]
