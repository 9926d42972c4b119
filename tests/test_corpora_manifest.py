from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from conftest import write_tsv
from voxshard.corpora import CorpusOptions, SourceUtterance, get_corpus
from voxshard.schemas import CorpusFormatError

MANIFEST = get_corpus("manifest")


def parse(
    path: Path,
    splits: tuple[str, ...] | None = None,
    languages: frozenset[str] | None = None,
) -> list[Any]:
    options = CorpusOptions(str(path), splits, languages)
    return [r for s in MANIFEST.list_sources(options) for r in MANIFEST.parse_source(options, s)]


def test_tsv_manifest_full_row(tmp_path: Path) -> None:
    header = [
        "id",
        "path",
        "language",
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
    ]
    write_tsv(
        tmp_path / "m.tsv",
        header,
        [
            [
                "utt 1",
                "audio/a.wav",
                "hi",
                "s1",
                'a "quoted',
                "dev",
                "0.5",
                "2.0",
                "28.6",
                "77.2",
                "f",
                "thirties",
                "Delhi",
                "CC-BY-SA-4.0",
            ],
            ["", "audio/b.flac", "eng", "", "", "", "", "", "", "", "", "", "", ""],
        ],
    )
    first, second = parse(tmp_path / "m.tsv")
    assert first == SourceUtterance(
        key=first.key,
        corpus="manifest",
        split="dev",
        source_language="hi",
        audio_path="audio/a.wav",
        origin="m.tsv:2",
        start_s=0.5,
        end_s=2.0,
        speaker="manifest_s1",
        gender="female",
        age="thirties",
        accent="Delhi",
        license="CC-BY-SA-4.0",
        transcript='a "quoted',
        lat=28.6,
        lon=77.2,
    )
    assert first.key.startswith("manifest_utt_1-")
    assert second == SourceUtterance(
        key=second.key,
        corpus="manifest",
        split="train",
        source_language="eng",
        audio_path="audio/b.flac",
        origin="m.tsv:3",
    )
    assert second.key.startswith("manifest_audio_b-")


def test_jsonl_manifest_and_segment_keys(tmp_path: Path) -> None:
    lines = [
        {"path": "long.wav", "language": "pl", "start_s": 0, "end_s": 1.5},
        {"path": "long.wav", "language": "pl", "start_s": 1.5, "end_s": 3},
        "not an object",
    ]
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps(line) for line in lines) + "\n{broken\n", encoding="utf-8"
    )
    first, second, third, fourth = parse(tmp_path / "m.jsonl")
    assert first.key == "manifest_long_0_1500"
    assert second.key == "manifest_long_1500_3000"
    assert isinstance(third, CorpusFormatError) and third.line == 3
    assert isinstance(fourth, CorpusFormatError) and fourth.reason == "not a JSON line"


def test_paths_escaping_the_manifest_folder_are_errors(tmp_path: Path) -> None:
    outside = tmp_path / "outside.wav"
    outside.write_bytes(b"x")
    folder = tmp_path / "corpus"
    folder.mkdir()
    os.symlink(outside, folder / "link.wav")
    (folder / "inside.wav").write_bytes(b"x")
    write_tsv(
        folder / "m.tsv",
        ["path", "language"],
        [
            ["../outside.wav", "en"],
            [str(outside), "en"],
            ["link.wav", "en"],
            [str(folder / "inside.wav"), "en"],
            ["sub/../inside.wav", "en"],
        ],
    )
    results = parse(folder / "m.tsv")
    reasons = [r.reason if isinstance(r, CorpusFormatError) else r.audio_path for r in results]
    assert reasons == [
        "path escapes the manifest folder",
        "path escapes the manifest folder",
        "path escapes the manifest folder",
        "inside.wav",
        "inside.wav",
    ]


def test_bad_values_are_row_errors(tmp_path: Path) -> None:
    header = ["path", "language", "start_s", "end_s", "lat", "lon", "gender"]
    write_tsv(
        tmp_path / "m.tsv",
        header,
        [
            ["", "en", "", "", "", "", ""],
            ["a.wav", "en", "x", "", "", "", ""],
            ["a.wav", "en", "2", "1", "", "", ""],
            ["a.wav", "en", "", "", "95", "0", ""],
            ["a.wav", "en", "", "", "10", "", ""],
            ["a.wav", "en", "", "", "", "", "robot"],
            ["a.wav", "en", "-1", "", "", "", ""],
        ],
    )
    reasons = [r.reason for r in parse(tmp_path / "m.tsv")]
    assert reasons == [
        "missing required columns",
        "start_s is not a number",
        "end_s is not after start_s",
        "invalid lat/lon",
        "lat and lon must be given together",
        "gender is not female, male, other or empty",
        "start_s is negative",
    ]


def test_split_and_language_filters(tmp_path: Path) -> None:
    write_tsv(
        tmp_path / "m.tsv",
        ["path", "language", "split"],
        [
            ["a.wav", "en", "train"],
            ["b.wav", "pl", "train"],
            ["c.wav", "en", "test"],
            ["d.wav", "xx", "train"],
        ],
    )
    kept = parse(tmp_path / "m.tsv", ("train",), frozenset({"eng"}))
    assert [u.audio_path for u in kept] == ["a.wav"]
