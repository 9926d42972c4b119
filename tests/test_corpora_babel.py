from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import tone, write_tsv
from test_build import check_contract, read_jsonl
from voxshard.corpora.babel import has_speech, normalize_transcript, speaker_of
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build

PACK = "BABEL_OP1_206"
IN = "BABEL_OP1_206_12345_20120101_120000_inLine"
OUT = "BABEL_OP1_206_12345_20120101_120000_outLine"
DEMOGRAPHICS_14 = (
    "outputFn sessID date time spkrCode lineType dialect gen envType age network "
    "phoneModel sampleCount sampleRate"
).split()

IN_TRANSCRIPT = """[0.000]
<no-speech>
[1.500]
sawubona (()) <hes> *ngiyabonga* hel-
[3.250]
[4.000]
yebo <breath>
[3.900]
ngiyabonga kakhulu
[6.000]
<no-speech>
[9.500]
kusasa
[10.800]
kude
[11.500]
"""
OUT_TRANSCRIPT = """[1.000]
first take
[2.000]
kunjalo
[3.000]
[1.000]
second take
[2.500]
"""


def write_sph(path: Path, seconds: float, subtype: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(300.0, seconds, 8000), 8000, format="NIST", subtype=subtype)


@pytest.fixture
def babel_root(tmp_path: Path) -> Path:
    root = tmp_path / "babel"
    conv = root / PACK / "conversational"
    write_sph(conv / "training/audio" / f"{IN}.sph", 10.0, "ULAW")
    write_sph(conv / "training/audio" / f"{OUT}.sph", 10.0, "ALAW")
    (conv / "training/transcription").mkdir(parents=True)
    (conv / "training/transcription" / f"{IN}.txt").write_text(IN_TRANSCRIPT, encoding="utf-8")
    (conv / "training/transcription" / f"{OUT}.txt").write_text(OUT_TRANSCRIPT, encoding="utf-8")
    write_tsv(
        conv / "reference_materials/demographics.tsv",
        DEMOGRAPHICS_14,
        [
            [
                f"{IN}.sph",
                "12345",
                "20120101",
                "120000",
                "12345",
                "inLine",
                "Zulu-Natal",
                "F",
                "HOME",
                "25",
                "MTN",
                "Nokia",
                "80000",
                "8000",
            ],
        ],
    )
    # a dev side as WAV, and a shorten-compressed file that libsndfile cannot read
    dev = "BABEL_OP1_206_54321_20120202_130000_inLine"
    (conv / "dev/audio").mkdir(parents=True)
    sf.write(conv / "dev/audio" / f"{dev}.wav", tone(500.0, 3.0, 8000), 8000)
    (conv / "dev/transcription").mkdir(parents=True)
    (conv / "dev/transcription" / f"{dev}.txt").write_text("[0.5]\nsalibonani\n[2.0]\n")
    shorten = "BABEL_OP1_206_99999_20120303_140000_inLine"
    header = (
        b"NIST_1A\n   1024\nsample_rate -i 8000\nchannel_count -i 1\n"
        b"sample_coding -s26 pcm,embedded-shorten-v2.00\nend_head\n"
    ).ljust(1024, b" ")
    (conv / "training/audio" / f"{shorten}.sph").write_bytes(header + b"ajkg" + bytes(64))
    (conv / "training/transcription" / f"{shorten}.txt").write_text("[0]\nyebo\n[1.0]\n")
    write_sph(conv / "eval/audio" / "BABEL_OP1_206_77777_20120404_150000_inLine.sph", 10.0, "ULAW")
    # an older pack with the 12-column demographics and scripted speech
    old = root / "BABEL_BP_101"
    stem = "BABEL_BP_101_10470_20111118_172644_C1_scripted"
    write_sph(old / "scripted/training/audio" / f"{stem}.sph", 2.0, "PCM_16")
    (old / "scripted/training/transcription").mkdir(parents=True)
    (old / "scripted/training/transcription" / f"{stem}.txt").write_text("[0.0]\n你好\n[1.5]\n")
    write_tsv(
        old / "conversational/reference_materials/demographics.tsv",
        DEMOGRAPHICS_14[:12],
        [
            [
                f"{stem}.sph",
                "10470",
                "20111118",
                "172644",
                "10470",
                "inLine",
                "Guangzhou",
                "M",
                "HOME",
                "33",
                "x",
                "y",
            ]
        ],
    )
    return root


def test_babel_segments_and_every_quirk(babel_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = run_build(BuildConfig("babel", str(babel_root), str(out), max_error_rate=1.0))
    check_contract(out)
    rejects = [
        (r["source"].rsplit("/", 1)[-1], r["stage"], r["reason"])
        for r in read_jsonl(out / "rejects.jsonl")
    ]
    assert rejects == [
        (f"{IN}.sph", "decode", "segment starts at or after the end of the audio"),
        (
            "BABEL_OP1_206_99999_20120303_140000_inLine.sph",
            "decode",
            "shorten-compressed SPHERE is not supported; convert it with sph2pipe",
        ),
        (f"{IN}.txt:2", "parse", "no speech in segment"),
        (f"{IN}.txt:7", "parse", "zero or negative duration"),
        (f"{IN}.txt:11", "parse", "no speech in segment"),
        (f"{OUT}.txt:7", "dedup", "duplicate key"),
    ]
    rows = {r["key"]: r for r in pq.read_table(out / "utterances.parquet").to_pylist()}
    first = rows[f"babel_{IN}_000001500"]
    assert {
        k: first[k]
        for k in (
            "corpus",
            "split",
            "language",
            "source_language",
            "speaker",
            "gender",
            "age",
            "accent",
            "num_samples",
        )
    } == {
        "corpus": "babel",
        "split": "train",
        "language": "zul",
        "source_language": "206",
        "speaker": "babel_206_12345_A",
        "gender": "female",
        "age": "25",
        "accent": "Zulu-Natal",
        "num_samples": 28000,
    }
    assert first["transcript"] == {
        "raw": "sawubona (()) <hes> *ngiyabonga* hel-",
        "normalized": "sawubona ngiyabonga hel-",
        "scripts": ["Latn", "Latn", "Latn"],
        "cmi": 0.0,
    }
    assert first["source"] == {
        "path": f"{PACK}/conversational/training/audio/{IN}.sph",
        "start_s": 1.5,
        "end_s": 3.25,
    }
    trimmed = rows[f"babel_{IN}_000009500"]  # 9.5 .. 10.8 in a 10 s file: trimmed to 0.5 s
    assert trimmed["num_samples"] == 8000 and trimmed["source"]["end_s"] == 10.8
    assert rows[f"babel_{IN}_000003900"]["transcript"]["raw"] == "ngiyabonga kakhulu"
    kept_twice = rows[f"babel_{OUT}_000001000"]  # duplicate start: the first listing wins
    assert kept_twice["transcript"]["raw"] == "first take"
    assert kept_twice["speaker"] == "babel_206_12345_B" and kept_twice["gender"] is None
    dev = [r for r in rows.values() if r["split"] == "dev"]
    assert len(dev) == 1 and dev[0]["source"]["path"].endswith(".wav")
    scripted = rows["babel_BABEL_BP_101_10470_20111118_172644_C1_scripted_000000000"]
    assert (scripted["language"], scripted["gender"], scripted["accent"], scripted["age"]) == (
        "yue",
        "male",
        "Guangzhou",
        "33",
    )
    assert stats["discovered"] == stats["written"] + 6
    assert not [r for r in rows.values() if r["split"] == "eval"]  # eval skipped by default


def test_keep_silence_and_eval_windows(babel_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_build(
        BuildConfig(
            "babel",
            str(babel_root),
            str(out),
            max_error_rate=1.0,
            languages=("zu",),
            settings=(("keep_silence", "yes"), ("babel_eval_window", "4")),
        )
    )
    rows = pq.read_table(out / "utterances.parquet").to_pylist()
    silent = [r for r in rows if r["transcript"]["raw"] == "<no-speech>"]
    assert len(silent) == 2 and all(r["transcript"]["normalized"] is None for r in silent)
    windows = sorted(
        (r["source"]["start_s"], r["source"]["end_s"], r["num_samples"])
        for r in rows
        if r["split"] == "eval"
    )
    assert windows == [(0.0, 4.0, 64000), (4.0, 8.0, 64000), (8.0, 10.0, 32000)]
    assert {r["language"] for r in rows} == {"zul"}
    assert json.loads((out / "stats.json").read_text())["by_language"]["utterances"]["zul"] == len(
        rows
    )


def test_transcript_helpers() -> None:
    assert normalize_transcript("<no-speech>") is None
    assert normalize_transcript("a ~ <overlap> b <foreign> (()) c-") == "a b c-"
    assert not has_speech("<no-speech> <breath> <click>")
    assert has_speech("<hes>") and has_speech("(())") and has_speech("word")
    assert speaker_of("BABEL_BP_101_10470_20111118_172644_outLine") == "babel_101_10470_B"
    assert speaker_of("nonsense") is None


@pytest.mark.parametrize(
    "layout",
    [
        "IARPA_BABEL_OP1_206",  # the IARPA_ prefix
        "BABEL_OP1_206-v0.1e",  # a version suffix
        "IARPA-babel206b-v0.1e-build/BABEL_OP1_206",  # nested in a build folder
        "IARPA-babel206b-v0.1e-build/pack",  # only the build folder names the language
        "downloads/zulu/unnamed",  # only the file stems name it
    ],
)
def test_packs_are_found_by_content_under_any_ldc_name(
    babel_root: Path, tmp_path: Path, layout: str
) -> None:
    root = tmp_path / "ldc"
    (root / layout).parent.mkdir(parents=True)
    (babel_root / PACK).rename(root / layout)
    out = tmp_path / "out"
    stats = run_build(BuildConfig("babel", str(root), str(out), max_error_rate=1.0))
    assert set(stats["by_language"]["utterances"]) == {"zul"}
    rows = pq.read_table(out / "utterances.parquet").to_pylist()
    assert {row["source_language"] for row in rows} == {"206"}
    assert all(row["source"]["path"].startswith(f"{layout}/conversational/") for row in rows)


def test_a_pack_whose_language_nothing_names_is_an_error(tmp_path: Path) -> None:
    from voxshard.corpora import CorpusOptions, get_corpus
    from voxshard.schemas import ConfigError

    pack = tmp_path / "mystery" / "conversational" / "training" / "transcription"
    pack.mkdir(parents=True)
    (pack / "call_a.txt").write_text("[0.0]\nhello\n[1.0]\n")
    with pytest.raises(ConfigError, match=r"cannot tell the BABEL language of pack\(s\) 'mystery'"):
        get_corpus("babel").list_sources(CorpusOptions(root=str(tmp_path)))


def test_bad_demographics_rows_are_rejects(babel_root: Path, tmp_path: Path) -> None:
    path = babel_root / PACK / "conversational/reference_materials/demographics.tsv"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\t".join(["", *(["x"] * (len(DEMOGRAPHICS_14) - 1))]) + "\n")  # no outputFn
        handle.write("too\tfew\n")
    out = tmp_path / "out"
    run_build(BuildConfig("babel", str(babel_root), str(out), max_error_rate=1.0))
    check_contract(out)
    source = f"{PACK}/conversational/reference_materials/demographics.tsv"
    found = [
        (r["source"], r["reason"])
        for r in read_jsonl(out / "rejects.jsonl")
        if source in r["source"]
    ]
    lines = len(path.read_text().splitlines())
    assert found == [
        (f"{source}:{lines - 1}", "missing required columns"),
        (f"{source}:{lines}", "wrong column count"),
    ]
