from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import tone, write_audio
from test_build import check_contract
from voxshard.corpora import CorpusOptions
from voxshard.corpora.mls import list_sources, read_metainfo
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build
from voxshard.schemas import ConfigError

METAINFO = """ SPEAKER   |   GENDER   | PARTITION  |  MINUTES   |  BOOK ID   |             TITLE              |            CHAPTER
  10087    |     F      |   train    |   25.190   |   10001    | Pan Tadeusz | Księga | pierwsza | Gospodarstwo
  2000     |     M      |    dev     |   12.000   |   20001    | Lalka                          | Rozdział 1
  3000     |     F      |   secret   |   12.000   |   30001    | Sekret                         | Rozdział 1
"""


def write_release(root: Path, folder: str, codec: str, rate: int) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "metainfo.txt").write_text(METAINFO, encoding="utf-8")
    layout = {
        "train": [("10087", "10001", 1), ("10087", "10001", 2), ("10087", "10001", 3)],
        "dev": [("2000", "20001", 7)],
    }
    for split, ids in layout.items():
        lines = []
        for speaker, book, seq in ids:
            utterance = f"{speaker}_{book}_{seq:06d}"
            path = root / folder / split / "audio" / speaker / book / f"{utterance}.{codec}"
            write_audio(path, tone(200.0 + 100 * seq, 1.0, rate), rate, codec)
            lines.append(f"{utterance}\tzdanie numer {seq}")
        (root / folder / split / "transcripts.txt").write_text("\n".join(lines) + "\n")
    limited = root / folder / "train" / "limited_supervision"
    for sub, handles in {
        "9hr": ["10087_10001_000001"],
        "1hr/0": ["10087_10001_000002"],
        "1hr/1": ["10087_10001_000003"],
    }.items():
        (limited / sub).mkdir(parents=True)
        (limited / sub / "handles.txt").write_text("\n".join(handles) + "\n")


@pytest.fixture
def mls_root(tmp_path: Path) -> Path:
    root = tmp_path / "mls"
    write_release(root, "mls_polish", "flac", 16000)
    write_release(root, "mls_polish_opus", "opus", 48000)
    return root


def build_rows(root: Path, out: Path, **settings: str) -> list[dict[str, Any]]:
    run_build(BuildConfig("mls", str(root), str(out), settings=tuple(settings.items())))
    check_contract(out)
    return sorted(pq.read_table(out / "utterances.parquet").to_pylist(), key=lambda r: r["key"])


def test_both_releases_side_by_side_count_once(mls_root: Path, tmp_path: Path) -> None:
    rows = build_rows(mls_root, tmp_path / "out")
    assert [r["key"] for r in rows] == [
        "mls_polish_10087_10001_000001",
        "mls_polish_10087_10001_000002",
        "mls_polish_10087_10001_000003",
        "mls_polish_2000_20001_000007",
    ]
    first = rows[0]
    assert {
        k: first[k]
        for k in ("split", "language", "source_language", "speaker", "gender", "num_samples")
    } == {
        "split": "train",
        "language": "pol",
        "source_language": "polish",
        "speaker": "mls_10087",
        "gender": "female",
        "num_samples": 16000,
    }
    assert first["transcript"]["raw"] == "zdanie numer 1"
    assert first["source"]["path"] == "mls_polish/train/audio/10087/10001/10087_10001_000001.flac"
    assert rows[3]["gender"] == "male" and rows[3]["split"] == "dev"


def test_opus_release_is_decoded_at_its_true_rate(mls_root: Path, tmp_path: Path) -> None:
    rows = build_rows(mls_root, tmp_path / "out", mls_release="opus")
    assert {r["source"]["path"].rsplit(".", 1)[1] for r in rows} == {"opus"}
    assert {r["num_samples"] for r in rows} == {16000}  # 48 kHz Opus resampled to 16 kHz


@pytest.mark.parametrize(
    ("subset", "train_keys"),
    [("9hr", ["000001"]), ("1hr", ["000002", "000003"]), ("10hr", ["000001", "000002", "000003"])],
)
def test_limited_supervision_subsets(
    mls_root: Path, tmp_path: Path, subset: str, train_keys: list[str]
) -> None:
    rows = build_rows(mls_root, tmp_path / "out", subset=subset)
    assert [r["key"][-6:] for r in rows if r["split"] == "train"] == train_keys
    assert [r["split"] for r in rows].count("dev") == 1  # the subset limits train only


def test_metainfo_tolerates_bars_in_titles_and_skips_secret(mls_root: Path) -> None:
    genders = read_metainfo(str(mls_root / "mls_polish" / "metainfo.txt"))
    assert genders == {"10087": "female", "2000": "male"}


def test_missing_release_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "mls_german_opus" / "train").mkdir(parents=True)
    with pytest.raises(ConfigError, match="found: german"):
        list_sources(CorpusOptions(str(tmp_path), ("train",), None, (("mls_release", "flac"),)))
