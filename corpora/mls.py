"""Multilingual LibriSpeech, FLAC and Opus releases. See corpora-formats.md.

``ROOT/mls_<language>[_opus]/{train,dev,test}/transcripts.txt`` (id TAB text) with audio at
``<split>/audio/<speaker>/<book>/<id>.{flac,opus}``; speaker gender from ``metainfo.txt``.
When both releases of a language sit side by side, ``--mls-release auto`` (the default) reads
the lossless FLAC one, so an utterance is never counted twice; ``flac`` or ``opus`` picks one.
``--subset 9hr|1hr|10hr`` keeps only the limited-supervision handles in train (10hr = both).
Opus is decoded at the rate its header declares and resampled like any other source.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from voxshard.corpora.base import (
    CorpusOptions,
    ParseResult,
    Setting,
    SourceUtterance,
    map_gender,
    read_rows,
)
from voxshard.schemas import ConfigError, CorpusFormatError, make_key, storage

NAME = "mls"
DEFAULT_SPLITS = ("train", "dev", "test")
SETTINGS = {
    setting.name: setting
    for setting in (
        Setting(
            "subset",
            "limit train to a limited-supervision set (9hr, 1hr, 10hr)",
            ("all", "9hr", "1hr", "10hr"),
            "all",
        ),
        Setting(
            "mls_release",
            "which release when both are present (auto prefers FLAC)",
            ("auto", "flac", "opus"),
            "auto",
        ),
    )
}
FOLDER = re.compile(r"^mls_(?P<language>[a-z]+?)(?P<opus>_opus)?$")
UTTERANCE_ID = re.compile(r"^(?P<speaker>\d+)_(?P<book>\d+)_(?P<seq>\d+)$")


def _releases(root: str) -> dict[str, dict[str, str]]:
    """language -> {"flac": folder, "opus": folder} of what is on disk."""
    found: dict[str, dict[str, str]] = {}
    for name in sorted(storage.listdir(root)):
        match = FOLDER.match(name)
        if match and storage.isdir(storage.join(root, name)):
            release = "opus" if match["opus"] else "flac"
            found.setdefault(match["language"], {})[release] = name
    return found


def list_sources(options: CorpusOptions) -> list[str]:
    if not storage.isdir(options.root):
        raise ConfigError(f"MLS ROOT {options.root!r} is not a folder")
    choice = options.setting("mls_release", "auto")
    sources = []
    releases = _releases(options.root)
    for language, folders in sorted(releases.items()):
        if not options.wants_language(language):
            continue
        release = ("flac" if "flac" in folders else "opus") if choice == "auto" else choice
        folder = folders.get(release)
        if folder is None:
            continue
        subset = options.setting("subset", "all")
        for split in options.splits or DEFAULT_SPLITS:
            table = f"{folder}/{split}/transcripts.txt"
            if storage.isfile(storage.join(options.root, table)):
                sources.append(table)
                if split == "train" and subset != "all":  # a missing handle list: now, not
                    read_handles(storage.join(options.root, folder), subset)  # mid-pipeline
    if not sources:
        raise ConfigError(
            f"no MLS transcripts for the chosen languages/release under {options.root!r}: "
            f"expected mls_<language>[_opus]/<split>/transcripts.txt "
            f"(found: {', '.join(sorted(releases)) or 'nothing'})"
        )
    return sources


@functools.lru_cache(maxsize=64)
def read_metainfo(path: str) -> dict[str, str | None]:
    """speaker -> gender from metainfo.txt (``|``-separated, space-padded, one header line;
    a title may hold ``|``, so a row is split at most 5 times; ``secret`` rows are ignored)."""
    genders: dict[str, str | None] = {}
    if not storage.isfile(path):
        return genders
    lines = storage.read_bytes(path).decode("utf-8", errors="replace").splitlines()
    for line in lines[1:]:
        fields = [field.strip() for field in line.split("|", 5)]
        if len(fields) < 3 or fields[2] == "secret":
            continue
        genders.setdefault(fields[0], map_gender(fields[1]))
    return genders


def read_handles(folder: str, subset: str) -> frozenset[str]:
    """Utterance ids of a limited-supervision subset (9hr, 1hr = the six 1hr folders, 10hr)."""
    base = storage.join(folder, "train", "limited_supervision")
    paths = []
    if subset in ("9hr", "10hr"):
        paths.append(storage.join(base, "9hr", "handles.txt"))
    if subset in ("1hr", "10hr"):
        one_hour = storage.join(base, "1hr")
        if not storage.isdir(one_hour):
            raise ConfigError(f"--subset {subset}: {one_hour} is missing")
        paths.extend(
            storage.join(one_hour, name, "handles.txt") for name in storage.listdir(one_hour)
        )
    handles: set[str] = set()
    for path in paths:
        if not storage.isfile(path):
            raise ConfigError(f"--subset {subset}: {path} is missing")
        text = storage.read_bytes(path).decode("utf-8", errors="replace")
        handles.update(line.strip() for line in text.splitlines() if line.strip())
    return frozenset(handles)


def parse_source(options: CorpusOptions, source: str) -> Iterator[ParseResult]:
    folder, split, _ = source.split("/")
    match = FOLDER.match(folder)
    if match is None:
        yield CorpusFormatError(source, None, "not an MLS folder", folder)
        return
    language = match["language"]
    extension = "opus" if match["opus"] else "flac"
    genders = read_metainfo(storage.join(options.root, folder, "metainfo.txt"))
    subset = options.setting("subset", "all")
    keep = None
    if subset != "all" and split == "train":
        keep = read_handles(storage.join(options.root, folder), subset)
    for number, fields in read_rows(storage.join(options.root, source), source):
        if isinstance(fields, CorpusFormatError):
            yield fields
            continue
        if len(fields) != 2:
            yield CorpusFormatError(
                source, number, "wrong column count", f"expected 2 columns, found {len(fields)}"
            )
            continue
        utterance_id, text = fields[0].strip(), fields[1].strip()
        parts = UTTERANCE_ID.match(utterance_id)
        if parts is None:
            yield CorpusFormatError(source, number, "invalid utterance id", utterance_id)
            continue
        if keep is not None and utterance_id not in keep:
            continue
        speaker, book = parts["speaker"], parts["book"]
        yield SourceUtterance(
            key=make_key(NAME, f"{language}_{utterance_id}"),
            corpus=NAME,
            split=split,
            source_language=language,
            audio_path=f"{folder}/{split}/audio/{speaker}/{book}/{utterance_id}.{extension}",
            origin=f"{source}:{number}",
            speaker=f"{NAME}_{speaker}",
            gender=genders.get(speaker),
            transcript=text or None,
        )


def list_languages(options: CorpusOptions) -> list[str]:
    return sorted(_releases(options.root)) if storage.isdir(options.root) else []
