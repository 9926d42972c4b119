"""What every corpus adapter produces and the shared, strict table readers."""

from __future__ import annotations

import csv
import difflib
import gzip
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO

from voxshard.schemas import CorpusFormatError, UnknownLanguageError, resolve_language, storage
from voxshard.schemas.pickling import pickled_by_fields

MAX_LINE_BYTES = 1 << 20  # a table row longer than 1 MiB is malformed (and not read whole)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class SourceUtterance:
    """One utterance as the source describes it; points at audio instead of holding it."""

    key: str
    corpus: str
    split: str
    source_language: str
    audio_path: str  # relative to the corpus base folder, POSIX separators
    origin: str  # "table:line" that produced it, for rejects and tie-breaking
    start_s: float | None = None
    end_s: float | None = None
    # pieces (start_s, end_s) of the audio concatenated into the utterance (VoxPopuli VAD);
    # None means the one span start_s..end_s (or the whole file)
    pieces: tuple[tuple[float, float], ...] | None = None
    speaker: str | None = None
    gender: str | None = None
    age: str | None = None
    accent: str | None = None
    transcript: str | None = None
    # the source's own normalized text (VoxPopuli normed_text, BABEL minus its tags); when
    # normalized_by_source is set, None means "nothing left" and is not filled from transcript
    transcript_normalized: str | None = None
    normalized_by_source: bool = False
    lat: float | None = None
    lon: float | None = None
    # the whole file's duration as the corpus states it (Common Voice clip_durations.tsv):
    # the plan uses it instead of reading the file's header
    duration_s: float | None = None
    # the row's own licence (a manifest's license column); None: the corpus's (CorpusSpec)
    license: str | None = None


@dataclass(frozen=True)
class CorpusOptions:
    """What the user chose. ``languages`` holds ISO 639-3 codes; None means all."""

    root: str
    splits: tuple[str, ...] | None = None
    languages: frozenset[str] | None = None
    settings: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @cached_property
    def base_dir(self) -> str:
        """The folder that audio paths and ``source.path`` are relative to (asked of the
        filesystem once: every row and every audio file uses it)."""
        return self.root if storage.isdir(self.root) else storage.dirname(self.root)

    def setting(self, name: str, default: str) -> str:
        """A corpus-specific option (``--subset``, ``--voxpopuli-audio``, ...)."""
        return dict(self.settings).get(name, default)

    def wants_language(self, tag: str) -> bool:
        if self.languages is None:
            return True
        try:
            return resolve_language(tag) in self.languages
        except UnknownLanguageError:
            return False

    def wants_split(self, split: str) -> bool:
        return self.splits is None or split in self.splits

    def split_rank(self, split: str) -> int:
        """Position of ``split`` in the user's list: the earlier split wins a duplicate."""
        if self.splits is None or split not in self.splits:
            return 0
        return self.splits.index(split)


ParseResult = SourceUtterance | CorpusFormatError


@dataclass(frozen=True)
class Setting:
    """A corpus's own build option, declared with the corpus: the CLI makes ``--name``
    from it (``voxshard build --help`` shows ``summary``), the API takes it by name, and
    BuildConfig checks its value. ``choices`` None means a positive number; a ``flag`` is
    an on/off switch (``--keep-silence``) stored as yes/no."""

    name: str  # snake_case; the flag is --name-with-dashes
    summary: str
    choices: tuple[str, ...] | None = None
    default: str | None = None  # what the adapter does when it is not given
    flag: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def origin_order(origin: str) -> tuple[str, int]:
    """Sort key of a "table:line" origin (or a plain path): line numbers compare as numbers."""
    path, _, line = origin.rpartition(":")
    if path and line.isdigit():
        return (path, int(line))
    return (origin, -1)


@dataclass(frozen=True)
class CorpusSpec:
    """One registry entry: how to list a corpus's tables and parse one of them."""

    name: str
    summary: str
    default_splits: tuple[str, ...] | None
    list_sources: Callable[[CorpusOptions], list[str]]
    parse_source: Callable[[CorpusOptions, str], Iterator[ParseResult]]
    # the corpus's own options (Setting), by name
    settings: dict[str, Setting] = field(default_factory=dict)
    # every split name the layout has (None: any, as a manifest's own split column)
    known_splits: tuple[str, ...] | None = None
    # the language tags found under ROOT, as the layout writes them (None: not known before
    # parsing, as a manifest's language column)
    list_languages: Callable[[CorpusOptions], list[str]] | None = None
    # the licence of the corpus's audio and transcripts, carried in every sample's metadata:
    # an SPDX identifier, LicenseRef-... for a licence SPDX does not list, or "unknown"
    license: str = "unknown"
    license_note: str = ""  # where the licence is stated, and its terms in a line

    def check_splits(self, splits: Sequence[str]) -> list[str]:
        """A problem for each name in ``splits`` this layout does not have, with the nearest."""
        if self.known_splits is None:
            return []
        problems = []
        for split in splits:
            if split not in self.known_splits:
                near = difflib.get_close_matches(split, self.known_splits, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                problems.append(
                    f"--splits: {self.name} has no split {split!r}; {hint}"
                    f"choose from {', '.join(self.known_splits)}"
                )
        return problems

    def check_settings(self, settings: tuple[tuple[str, str], ...]) -> list[str]:
        """Every problem with ``settings`` for this corpus, as messages for the user."""
        problems = []
        for name, value in settings:
            if name not in self.settings:
                problems.append(f"--{name.replace('_', '-')} does not apply to {self.name}")
                continue
            allowed = self.settings[name].choices
            if allowed is None:
                try:
                    ok = float(value) > 0
                except ValueError:
                    ok = False
                if not ok:
                    flag = f"--{name.replace('_', '-')}"
                    problems.append(f"{flag} {value!r} must be a positive number")
            elif value not in allowed:
                problems.append(
                    f"--{name.replace('_', '-')} {value!r} must be one of {', '.join(allowed)}"
                )
        return problems


GENDER_MAP = {
    "female": "female",
    "male": "male",
    "other": "other",
    "f": "female",
    "m": "male",
    "female_feminine": "female",
    "male_masculine": "male",
    "transgender": "other",
    "non-binary": "other",
    "intersex": "other",
    "do_not_wish_to_say": None,
    "": None,
}


def map_gender(value: str | None) -> str | None:
    """Map every corpus gender vocabulary to female / male / other / None."""
    if value is None:
        return None
    return GENDER_MAP.get(value.strip().lower())


def none_if_empty(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


def read_lines(path: str, display: str) -> Iterator[tuple[int, str | CorpusFormatError]]:
    """Yield ``(line_number, text)`` of a UTF-8 file (gzip if it ends in .gz); undecodable
    lines and lines over MAX_LINE_BYTES come as errors (a long line is skipped, not held)."""
    with storage.open_read(path) as stream:
        handle: IO[bytes] = (
            gzip.GzipFile(fileobj=stream) if path.endswith(".gz") else stream  # type: ignore[assignment]
        )
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                skipped = len(raw)
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    skipped += len(rest)
                yield (
                    number,
                    CorpusFormatError(
                        display,
                        number,
                        "line too long",
                        f"over {skipped + len(rest)} bytes; a row may hold {MAX_LINE_BYTES}",
                    ),
                )
                continue
            if number == 1 and b"\r" in raw.rstrip(b"\r\n"):
                raise CorpusFormatError(
                    display,
                    1,
                    "lines end in CR only",
                    "classic Mac line endings; convert with: tr '\\r' '\\n' < OLD > NEW",
                )
            raw = raw.rstrip(b"\r\n")
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield (
                    number,
                    CorpusFormatError(
                        display, number, "not valid UTF-8", f"{error.reason} at byte {error.start}"
                    ),
                )


def read_rows(
    path: str, display: str, delimiter: str = "\t", quoting: bool = False
) -> Iterator[tuple[int, list[str] | CorpusFormatError]]:
    """Rows of a header-less delimited table. Blank lines are skipped. Quoting is off (Common
    Voice's sentences hold bare quotes) unless ``quoting``: then each line is read as CSV
    (RFC 4180 quotes, ``""`` inside a quoted field), a row on one line, and a line whose
    quoting is malformed is an error."""
    for number, line in read_lines(path, display):
        if isinstance(line, CorpusFormatError):
            yield number, line
        elif not line.strip():
            continue
        elif not quoting:
            yield number, line.split(delimiter)
        else:
            try:
                yield number, next(csv.reader([line], delimiter=delimiter, strict=True))
            except csv.Error as error:
                yield number, CorpusFormatError(display, number, "malformed quoting", str(error))


def read_table(
    path: str, display: str, delimiter: str = "\t", quoting: bool = False
) -> Iterator[tuple[int, dict[str, str] | CorpusFormatError]]:
    """Rows of a delimited table whose first line names the columns, by name, quoting off.

    A row with another column count than the header, or bytes that are not UTF-8, comes as a
    CorpusFormatError so the caller can reject it and go on. A header that cannot be read
    raises. Blank lines are skipped.
    """
    columns: list[str] | None = None
    for number, fields in read_rows(path, display, delimiter, quoting):
        if columns is None:
            if isinstance(fields, CorpusFormatError):
                raise CorpusFormatError(display, number, "header is not valid UTF-8")
            columns = [name.strip() for name in fields]
        elif isinstance(fields, CorpusFormatError):
            yield number, fields
        elif len(fields) != len(columns):
            yield (
                number,
                CorpusFormatError(
                    display,
                    number,
                    "wrong column count",
                    f"expected {len(columns)} columns, found {len(fields)}",
                ),
            )
        else:
            yield number, dict(zip(columns, fields, strict=True))


def read_header(path: str, display: str, delimiter: str = "\t", quoting: bool = False) -> list[str]:
    """The column names of a delimited table (empty for an empty file)."""
    for _number, fields in read_rows(path, display, delimiter, quoting):
        if isinstance(fields, CorpusFormatError):
            raise CorpusFormatError(display, 1, "header is not valid UTF-8")
        return [name.strip() for name in fields]
    return []


def read_table_requiring(
    path: str,
    display: str,
    required: Sequence[str],
    delimiter: str = "\t",
    quoting: bool = False,
) -> Iterator[tuple[int, dict[str, str] | CorpusFormatError]]:
    """``read_table``, but a header lacking a required column yields one error and no rows."""
    columns = read_header(path, display, delimiter, quoting)
    missing = [name for name in required if name not in columns]
    if missing:
        yield 1, CorpusFormatError(display, 1, "header lacks required columns", ", ".join(missing))
        return
    yield from read_table(path, display, delimiter, quoting)
