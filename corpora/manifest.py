"""A user's own manifest: a TSV (header line) or JSONL file, one utterance per row.

Columns: ``path`` and ``language`` (required); ``id, speaker, transcript, split, start_s,
end_s, lat, lon, gender, age, accent, license`` (optional; a row without a licence is
``unknown``: name it, e.g. an SPDX identifier such as CC-BY-4.0). Paths are relative to the
manifest's folder; a path that escapes it (``..``, an absolute path elsewhere, a symlink
pointing outside) is a reject. A missing split is ``train``.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from collections.abc import Iterator
from typing import Any

from voxshard.corpora.base import (
    CorpusOptions,
    ParseResult,
    SourceUtterance,
    map_gender,
    none_if_empty,
    read_lines,
    read_table,
)
from voxshard.schemas import (
    ConfigError,
    CorpusFormatError,
    GeoError,
    InvalidKeyError,
    make_key,
    storage,
    validate_lat_lon,
)

NAME = "manifest"
REQUIRED_COLUMNS = ("path", "language")
OPTIONAL_COLUMNS = (
    "id",
    "speaker",
    "transcript",
    "split",
    "start_s",
    "end_s",
    "lat",
    "lon",
    "gender",
    "age",
    "accent",
    "license",
)
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def list_sources(options: CorpusOptions) -> list[str]:
    if not storage.isfile(options.root):
        raise ConfigError(
            f"manifest ROOT {options.root!r} is not a file: pass the manifest's path "
            "(a .tsv with a header line, or a .jsonl file)"
        )
    return [os.path.basename(options.root)]


def parse_source(options: CorpusOptions, source: str) -> Iterator[ParseResult]:
    path = storage.join(options.base_dir, source)
    for number, row in _rows(path, source):
        if isinstance(row, CorpusFormatError):
            yield row
            continue
        try:
            utterance = _parse_row(row, options, source, number)
        except CorpusFormatError as error:
            yield error
            continue
        if options.wants_split(utterance.split) and options.wants_language(
            utterance.source_language
        ):
            yield utterance


def _rows(path: str, source: str) -> Iterator[tuple[int, dict[str, str] | CorpusFormatError]]:
    if not path.lower().endswith(JSON_SUFFIXES):
        yield from read_table(path, source)
        return
    for number, line in read_lines(path, source):
        if isinstance(line, CorpusFormatError):
            yield number, line
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, CorpusFormatError(source, number, "not a JSON line", str(error))
            continue
        except RecursionError:
            yield number, CorpusFormatError(source, number, "not a JSON line", "nested too deep")
            continue
        if not isinstance(value, dict):
            yield number, CorpusFormatError(source, number, "a JSON line must be an object")
            continue
        row = {name: _text(item) for name, item in value.items()}
        try:
            for text in (*row, *row.values()):
                text.encode("utf-8")
        except UnicodeEncodeError as error:  # "\ud800": a lone surrogate escaped in JSON
            yield number, CorpusFormatError(source, number, "not valid UTF-8", str(error))
            continue
        yield number, row


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _float(row: dict[str, str], name: str, source: str, number: int) -> float | None:
    text = none_if_empty(row.get(name))
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError as error:
        raise CorpusFormatError(source, number, f"{name} is not a number", repr(text)) from error
    if not math.isfinite(value):
        raise CorpusFormatError(source, number, f"{name} is not finite", repr(text))
    return value


def safe_relative_path(base_dir: str, path: str) -> str | None:
    """``path`` relative to ``base_dir`` (POSIX), or None when it escapes ``base_dir``.

    Symlinks are resolved, so a link inside the folder that points outside it escapes too.
    Under a URL base (object stores have no links) ``..`` segments and other prefixes escape.
    """
    if storage.is_remote(base_dir):
        prefix = base_dir.rstrip("/") + "/"
        if "://" in path:
            if not path.startswith(prefix):
                return None
            path = path[len(prefix) :]
        normalized = posixpath.normpath(path)
        if normalized.startswith(("..", "/")) or normalized == ".":
            return None
        return normalized
    base = os.path.realpath(base_dir)
    joined = path if os.path.isabs(path) else storage.join(base_dir, path)
    if os.path.commonpath([base, os.path.realpath(joined)]) != base:
        return None
    relative = os.path.relpath(os.path.abspath(joined), os.path.abspath(base_dir))
    if relative.startswith(".."):
        return None
    return relative.replace(os.sep, "/")


def _parse_row(
    row: dict[str, str], options: CorpusOptions, source: str, number: int
) -> SourceUtterance:
    missing = [name for name in REQUIRED_COLUMNS if not none_if_empty(row.get(name))]
    if missing:
        raise CorpusFormatError(source, number, "missing required columns", ", ".join(missing))
    raw_path = row["path"]  # as written: " lead.wav" is a file name too
    if "\x00" in raw_path:
        raise CorpusFormatError(source, number, "invalid path", "contains a NUL byte")
    try:
        audio_path = safe_relative_path(options.base_dir, raw_path)
    except ValueError as error:  # a name the file system's encoding cannot hold
        raise CorpusFormatError(source, number, "invalid path", str(error)) from error
    if audio_path is None:
        raise CorpusFormatError(source, number, "path escapes the manifest folder", raw_path)
    start_s = _float(row, "start_s", source, number)
    end_s = _float(row, "end_s", source, number)
    if start_s is not None and start_s < 0:
        raise CorpusFormatError(source, number, "start_s is negative", str(start_s))
    if end_s is not None and end_s <= (start_s or 0.0):
        raise CorpusFormatError(
            source, number, "end_s is not after start_s", f"{start_s} .. {end_s}"
        )
    lat = _float(row, "lat", source, number)
    lon = _float(row, "lon", source, number)
    if (lat is None) != (lon is None):
        raise CorpusFormatError(source, number, "lat and lon must be given together")
    if lat is not None and lon is not None:
        try:
            lat, lon = validate_lat_lon(lat, lon)
        except GeoError as error:
            raise CorpusFormatError(source, number, "invalid lat/lon", str(error)) from error
    gender_text = none_if_empty(row.get("gender"))
    gender = map_gender(gender_text)
    if gender_text is not None and gender is None and gender_text.lower() != "do_not_wish_to_say":
        raise CorpusFormatError(
            source, number, "gender is not female, male, other or empty", repr(gender_text)
        )
    source_id = none_if_empty(row.get("id"))
    if source_id is None:
        source_id = audio_path.rsplit(".", 1)[0]
        if start_s is not None or end_s is not None:
            source_id += f"_{round((start_s or 0.0) * 1000)}_{round((end_s or 0.0) * 1000)}"
    try:
        key = make_key(NAME, source_id)
    except InvalidKeyError as error:
        raise CorpusFormatError(source, number, "invalid key", str(error)) from error
    speaker = none_if_empty(row.get("speaker"))
    return SourceUtterance(
        key=key,
        corpus=NAME,
        split=none_if_empty(row.get("split")) or "train",
        source_language=row["language"].strip(),
        audio_path=audio_path,
        origin=f"{source}:{number}",
        start_s=start_s,
        end_s=end_s,
        speaker=None if speaker is None else f"{NAME}_{speaker}",
        gender=gender,
        age=none_if_empty(row.get("age")),
        accent=none_if_empty(row.get("accent")),
        license=none_if_empty(row.get("license")),
        transcript=none_if_empty(row.get("transcript")),
        lat=lat,
        lon=lon,
    )
