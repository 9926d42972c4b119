from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import tone, write_audio
from test_build import check_contract, read_jsonl
from voxshard.corpora.voxpopuli import parse_vad
from voxshard.pipelines.audio import to_int16
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build

SESSION = "20180206-0900-PLENARY-15"
ASR_HEADER = (
    "id_|paragraph_id|session_id|speaker_id|original_text|normed_text|decoded|start_time|"
    "end_time|cer|wer|vad|split|gender"
)


def session_audio(seed: int, seconds: float = 12.0) -> np.ndarray:
    """A different tone every second, so a wrong cut shows."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [tone(float(rng.integers(200, 2000)), 1.0, 16000) for _ in range(int(seconds))]
    )


def write_gz(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


@pytest.fixture
def voxpopuli_root(tmp_path: Path) -> Path:
    root = tmp_path / "voxpopuli"
    write_audio(
        root / f"raw_audios/original/2018/{SESSION}_original.ogg", session_audio(1), 16000, "ogg"
    )
    write_audio(root / f"raw_audios/hr/2018/{SESSION}_hr.ogg", session_audio(2), 16000, "ogg")
    precut_id = f"{SESSION}-hr_20180206-16:20:00_9"
    write_audio(
        root / f"transcribed_data/hr/2018/{SESSION}-{precut_id}.ogg",
        tone(440, 1.25, 16000),
        16000,
        "ogg",
    )
    rows = [
        f"{SESSION}-hr_20180206-16:10:06_5|p1|{SESSION}|1234|Hvala lijepa.|hvala lijepa|x|1.0|4.2|"
        "0.1|0.2|[[1.0, 2.5], [3.0, 4.2]]|train|female",
        f"{SESSION}-hr_20180206-16:11:00_6|p1|{SESSION}|99||dobar dan|x|5|6|0|0|[[5.0, 6.0]]|dev|"
        "male",
        f"{SESSION}-hr_20180206-16:12:00_7|p1|{SESSION}|99|x|x|x|5|6|0|0|[[7.0, 8.0]]|invalid|male",
        f"{SESSION}-hr_20180206-16:13:00_8|p1|{SESSION}|99|x|x|x|5|6|0|0|not a list|train|male",
        f"{precut_id}|p2|{SESSION}|77|Precut.|precut|x|0|1|0|0|[[0.0, 1.25]]|test|",
    ]
    write_gz(root / "transcribed_data/hr/asr_hr.tsv.gz", [ASR_HEADER, *rows])
    event = f"{SESSION}_hr"
    write_audio(
        root / f"unlabelled_data/hr/2018/{event}_1.ogg", tone(300, 2.0, 16000), 16000, "ogg"
    )
    write_gz(
        root / "unlabelled_data/unlabelled_v2.tsv.gz",
        [
            "event_id\tsegment_no\tstart\tend",
            f"{event}\t0\t0.5\t3.5",
            f"{event}\t1\t4.0\t6.0",
            f"{SESSION}_de\t0\t0.0\t2.0",  # no German audio on disk: not part of this download
        ],
    )
    return root


def shard_audio(out: Path) -> dict[str, np.ndarray]:
    import tarfile

    audio = {}
    for shard in read_jsonl(out / "shards.jsonl"):
        with tarfile.open(out / shard["path"]) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".flac"):
                    data, _ = sf.read(io.BytesIO(tar.extractfile(member).read()), dtype="int16")  # type: ignore[union-attr]
                    audio[member.name[: -len(".flac")]] = data
    return audio


def test_asr_segments_are_cut_from_vad_pieces(voxpopuli_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = run_build(BuildConfig("voxpopuli", str(voxpopuli_root), str(out), max_error_rate=1))
    check_contract(out)
    assert (stats["discovered"], stats["written"], stats["rejected"]) == (5, 3, 2)
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [(r["stage"], r["reason"]) for r in rejects] == [
        ("parse", "split is invalid"),
        ("parse", "invalid vad"),
    ]
    index = {r["key"]: r for r in pq.read_table(out / "utterances.parquet").to_pylist()}
    first = next(r for k, r in index.items() if "16_10_06_5" in k)
    assert {
        k: first[k]
        for k in (
            "corpus",
            "split",
            "language",
            "source_language",
            "speaker",
            "gender",
            "accent",
            "geo",
        )
    } == {
        "corpus": "voxpopuli",
        "split": "train",
        "language": "hrv",
        "source_language": "hr",
        "speaker": "voxpopuli_1234",
        "gender": "female",
        "accent": None,
        "geo": {"lat": 45.2008, "lon": 16.8211, "source": "language"},
    }
    assert first["transcript"] == {  # --normalize canonical applies to original_text
        "raw": "Hvala lijepa.",
        "normalized": "Hvala lijepa.",
        "scripts": ["Latn", "Latn"],
        "cmi": 0.0,
    }
    assert first["source"] == {
        "path": f"raw_audios/hr/2018/{SESSION}_hr.ogg",
        "start_s": 1.0,
        "end_s": 4.2,
    }
    assert first["num_samples"] == 24000 + 19200 and first["duration_s"] == 2.7
    # the exact samples: the official cutter's slices of the lang channel, concatenated
    full, _ = sf.read(voxpopuli_root / f"raw_audios/hr/2018/{SESSION}_hr.ogg", dtype="float32")
    expected, _ = to_int16(np.concatenate([full[16000:40000], full[48000:67200]]))
    np.testing.assert_array_equal(shard_audio(out)[first["key"]], expected)
    second = next(r for k, r in index.items() if "16_11_00_6" in k)
    assert second["transcript"]["raw"] is None and second["gender"] == "male"
    assert second["transcript"]["normalized"] == "dobar dan"  # only normed_text: kept
    precut = next(r for k, r in index.items() if "16_20_00_9" in k)
    assert precut["source"]["path"].startswith("transcribed_data/hr/2018/")
    assert precut["num_samples"] == 20000 and precut["gender"] is None


def test_original_audio_on_request(voxpopuli_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_build(
        BuildConfig(
            "voxpopuli",
            str(voxpopuli_root),
            str(out),
            max_error_rate=1,
            settings=(("voxpopuli_audio", "original"),),
            splits=("dev",),
        )
    )
    [row] = pq.read_table(out / "utterances.parquet").to_pylist()
    assert row["source"]["path"] == f"raw_audios/original/2018/{SESSION}_original.ogg"
    full, _ = sf.read(voxpopuli_root / row["source"]["path"], dtype="float32")
    np.testing.assert_array_equal(shard_audio(out)[row["key"]], to_int16(full[80000:96000])[0])


def test_unlabelled_segments(voxpopuli_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = run_build(
        BuildConfig(
            "voxpopuli", str(voxpopuli_root), str(out), settings=(("voxpopuli_data", "unlabelled"),)
        )
    )
    check_contract(out)
    assert stats["discovered"] == 2  # the German row has no audio in this download
    rows = sorted(pq.read_table(out / "utterances.parquet").to_pylist(), key=lambda r: r["key"])
    assert [
        (r["source"]["path"], r["num_samples"], r["speaker"], r["transcript"]["raw"], r["split"])
        for r in rows
    ] == [
        (f"raw_audios/hr/2018/{SESSION}_hr.ogg", 48000, None, None, "unlabelled"),
        (f"unlabelled_data/hr/2018/{SESSION}_hr_1.ogg", 32000, None, None, "unlabelled"),
    ]


def test_parse_vad() -> None:
    assert parse_vad("[[0.5, 1.0], (2, 3.25)]") == ((0.5, 1.0), (2.0, 3.25))
    for bad in ["[]", "[[1, 0.5]]", "[[1]]", "__import__('os')", "[[-1, 2]]"]:
        with pytest.raises((ValueError, SyntaxError)):
            parse_vad(bad)


def test_session_file_is_opened_once_for_all_its_segments(
    voxpopuli_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voxshard.pipelines.audio as audio

    opened: list[str] = []
    original = audio._open

    def counting_open(path: str):  # type: ignore[no-untyped-def]
        opened.append(path)
        return original(path)

    monkeypatch.setattr(audio, "_open", counting_open)
    run_build(BuildConfig("voxpopuli", str(voxpopuli_root), str(tmp_path / "o"), max_error_rate=1))
    session = [p for p in opened if p.endswith(f"{SESSION}_hr.ogg")]
    # one decode pass per (language, corpus, split) group: its train and dev segments go to
    # different shards, each written in its own step (no audio crosses a shuffle)
    assert len(session) == 2
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["written"] == 3


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("keep", "Hvala lijepa."), ("canonical", "Hvala lijepa."), ("source", "hvala lijepa")],
)
def test_normalize_applies_to_voxpopuli_and_source_keeps_its_normed_text(
    voxpopuli_root: Path, tmp_path: Path, policy: str, expected: str
) -> None:
    out = tmp_path / "out"
    config = BuildConfig(
        "voxpopuli", str(voxpopuli_root), str(out), max_error_rate=1, normalize=policy
    )
    run_build(config)
    index = {r["key"]: r for r in pq.read_table(out / "utterances.parquet").to_pylist()}
    first = next(r for k, r in index.items() if "16_10_06_5" in k)
    assert first["transcript"]["normalized"] == expected


def test_asr_tables_are_csv_with_quoting_as_the_official_reader_reads_them(
    voxpopuli_root: Path,
) -> None:
    """get_asr_data.py reads the tables with csv.DictReader(delimiter="|"): doubled quotes
    inside a quoted field are one quote, and a quoted field may hold the delimiter."""
    import csv

    from voxshard.corpora import CorpusOptions, get_corpus
    from voxshard.schemas import CorpusFormatError

    table = voxpopuli_root / "transcribed_data" / "hr" / "asr_hr.tsv.gz"
    lines = gzip.decompress(table.read_bytes()).decode("utf-8").splitlines()
    header = lines[0].split("|")
    fields = lines[1].split("|")
    fields[header.index("original_text")] = '"""Brexit"" is | hard"'
    fields[header.index("normed_text")] = '"brexit is hard"'
    lines[1] = "|".join(fields)
    table.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8")))
    with gzip.open(table, "rt", encoding="utf-8") as handle:
        official = list(csv.DictReader(handle, delimiter="|"))
    options = CorpusOptions(root=str(voxpopuli_root), splits=("train", "dev", "test"))
    spec = get_corpus("voxpopuli")
    items = [
        item
        for source in spec.list_sources(options)
        for item in spec.parse_source(options, source)
        if not isinstance(item, CorpusFormatError) and "16_10_06_5" in item.key
    ]
    assert [item.transcript for item in items] == ['"Brexit" is | hard']
    assert official[0]["original_text"] == '"Brexit" is | hard'
