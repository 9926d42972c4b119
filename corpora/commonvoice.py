"""Common Voice: ``ROOT/<locale>/{train,dev,test,validated,...}.tsv`` + ``clips/*.mp3``.

Every TSV generation (v1 to v17+) is read by column name with quoting off; see
shared/corpora-formats.md. ROOT may also be one locale folder itself (it holds ``clips/``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from voxshard.corpora.base import (
    CorpusOptions,
    ParseResult,
    SourceUtterance,
    map_gender,
    none_if_empty,
    read_table_requiring,
)
from voxshard.schemas import ConfigError, CorpusFormatError, InvalidKeyError, make_key, storage

NAME = "commonvoice"
DEFAULT_SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("client_id", "path")


def _locale_dirs(root: str) -> list[tuple[str, str]]:
    """(locale, folder relative to ROOT) pairs, sorted."""
    if storage.isdir(storage.join(root, "clips")):
        return [(os.path.basename(os.path.normpath(root)), "")]
    return sorted(
        (name, name)
        for name in storage.listdir(root)
        if storage.isdir(storage.join(root, name, "clips"))
        or any(storage.isfile(storage.join(root, name, f"{s}.tsv")) for s in DEFAULT_SPLITS)
    )


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
    locale_default = folder or os.path.basename(os.path.normpath(options.root))
    split = os.path.basename(source)[: -len(".tsv")]
    for number, row in read_table_requiring(path, source, REQUIRED_COLUMNS):
        if isinstance(row, CorpusFormatError):
            yield row
            continue
        try:
            yield _parse_row(row, source, number, folder, locale_default, split)
        except CorpusFormatError as error:
            yield error


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
