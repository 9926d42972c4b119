from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import tone, write_audio, write_tsv
from voxshard.corpora.geo_table import read_geo_table
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build
from voxshard.schemas import ConfigError


def test_geo_fills_speaker_then_language(cv_root: Path, tmp_path: Path) -> None:
    table = tmp_path / "geo.csv"
    table.write_text(
        "speaker,language,lat,lon\n"
        f"commonvoice_{'en1'.ljust(128, '0')},,51.5072,-0.1276\n"  # namespaced
        f"{'pl1'.ljust(128, '0')},,52.2297,21.0122\n"  # the corpus's own id
        ",pl,50.0647,19.945\n"  # language fallback, any tag form
        ",deu,52.52,13.405\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    run_build(BuildConfig("commonvoice", str(cv_root), str(out), geo=str(table)))
    geo = {
        r["speaker"][12:15]: r["geo"] for r in pq.read_table(out / "utterances.parquet").to_pylist()
    }
    assert geo["en1"] == {"lat": 51.5072, "lon": -0.1276, "source": "speaker"}
    assert geo["pl1"] == {"lat": 52.2297, "lon": 21.0122, "source": "speaker"}
    assert geo["pl0"] == {"lat": 50.0647, "lon": 19.945, "source": "language-table"}
    assert geo["de0"] == {"lat": 52.52, "lon": 13.405, "source": "language-table"}
    # no speaker row, no English row: the language's own location
    assert geo["en0"] == {"lat": 52.9992, "lon": -1.0049, "source": "language"}
    run_build(BuildConfig("commonvoice", str(cv_root), str(tmp_path / "plain"), language_geo=False))
    rows = pq.read_table(tmp_path / "plain" / "utterances.parquet").to_pylist()
    assert {str(r["geo"]) for r in rows} == {"None"}


def test_manifest_coordinates_win_over_the_table(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.wav", tone(300, 1.0, 16000), 16000, "wav")
    write_tsv(
        tmp_path / "m.tsv",
        ["path", "language", "speaker", "lat", "lon"],
        [["a.wav", "hi", "s1", "-0.5", "179.9"]],
    )
    write_tsv(tmp_path / "geo.tsv", ["speaker", "lat", "lon"], [["s1", "10", "10"]])
    out = tmp_path / "out"
    run_build(
        BuildConfig("manifest", str(tmp_path / "m.tsv"), str(out), geo=str(tmp_path / "geo.tsv"))
    )
    [row] = pq.read_table(out / "utterances.parquet").to_pylist()
    assert row["geo"] == {"lat": -0.5, "lon": 179.9, "source": "manifest"}


def test_every_bad_row_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "geo.tsv"
    write_tsv(
        path,
        ["speaker", "language", "lat", "lon"],
        [
            ["s1", "", "91", "0"],
            ["", "klingon", "0", "0"],
            ["s2", "en", "0", "0"],
            ["s3", "", "x", "0"],
            ["s4", "", "10", "20"],
        ],
    )
    with pytest.raises(ConfigError) as info:
        read_geo_table(str(path))
    assert [p.split(": ", 1)[0] for p in info.value.problems] == [
        f"--geo {path}:2",
        f"--geo {path}:3",
        f"--geo {path}:4",
        f"--geo {path}:5",
    ]
    with pytest.raises(ConfigError, match="needs lat, lon"):
        write_tsv(path, ["who", "lat", "lon"], [["a", "1", "2"]])
        read_geo_table(str(path))
