from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import webdataset as wds
from scipy.signal import resample_poly

from conftest import tone, tree_digest, write_audio, write_tsv
from voxshard.corpora import get_corpus
from voxshard.pipelines.build import build_pipeline
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.outdir import prepare_output
from voxshard.pipelines.plan import FLAC_RATIO_ESTIMATE
from voxshard.pipelines.runner import run_build
from voxshard.pipelines.shards import archive_bytes
from voxshard.schemas import SCHEMA_VERSION, BuildError, ConfigError

REPO = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def build(root: Path, out: Path, source: str = "commonvoice", **options: Any) -> dict[str, Any]:
    return run_build(BuildConfig(source=source, root=str(root), out=str(out), **options))


def check_contract(out: Path) -> dict[str, Any]:
    """Every point of the build contract that holds for any build; returns stats.json."""
    stats: dict[str, Any] = json.loads((out / "stats.json").read_text())
    shards = read_jsonl(out / "shards.jsonl")
    rejects = read_jsonl(out / "rejects.jsonl")
    index = pq.read_table(out / "utterances.parquet").to_pylist()
    metadata = pq.ParquetFile(out / "utterances.parquet").metadata
    assert all(
        metadata.row_group(g).column(c).compression == "ZSTD"
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    )
    assert stats["discovered"] == stats["written"] + stats["rejected"]
    assert stats["written"] == len(index) == sum(s["num_samples"] for s in shards)
    assert stats["rejected"] == len(rejects)
    assert json.loads((out / "COMPLETED").read_text())["schema_version"] == SCHEMA_VERSION == 2
    assert not (out / ".work").exists()
    for row in index:  # every sample carries its corpus's licence (a manifest row: its own)
        if row["corpus"] != "manifest":
            assert row["license"] == get_corpus(row["corpus"]).license != "unknown"
    licensed = Counter(row["license"] for row in index)
    assert stats["by_license"]["utterances"] == dict(sorted(licensed.items()))
    card = (out / "README.md").read_text(encoding="utf-8")  # the dataset card
    for name, count in licensed.items():
        assert f"| {name} | {count:,} | {stats['by_license']['hours'][name]:.3f} |" in card
    for lang, count in stats["by_language"]["utterances"].items():
        speakers = stats["speakers"]["by_language"].get(lang, 0)
        assert re.search(rf"^\| {lang} \(.+\) \|.* \| {count:,} \| {speakers:,} \|$", card, re.M)
    for reason, count in stats["rejected_by_reason"].items():
        assert f"| {reason} | {count:,} |" in card
    by_key = {row["key"]: row for row in index}
    assert len(by_key) == len(index)  # keys unique
    for shard in shards:
        path = out / shard["path"]
        assert path.stat().st_size == shard["num_bytes"]
        assert shard["path"].startswith(
            f"shards/{shard['lang']}/{shard['corpus']}-{shard['split']}-"
        )
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            keys = [n.rsplit(".", 1)[0] for n in names[::2]]
            assert names == [f"{k}.{ext}" for k in keys for ext in ("flac", "json")]
            assert keys == sorted(keys)
            assert all((m.mtime, m.uid, m.gid, m.mode) == (0, 0, 0, 0o644) for m in members)
            for key in keys:
                record = json.loads(tar.extractfile(f"{key}.json").read())  # type: ignore[union-attr]
                assert record == {k: v for k, v in by_key[key].items() if k != "shard"}
                assert by_key[key]["shard"] == shard["path"]
                audio, rate = sf.read(io.BytesIO(tar.extractfile(f"{key}.flac").read()))  # type: ignore[union-attr]
                info = sf.info(io.BytesIO(tar.extractfile(f"{key}.flac").read()))  # type: ignore[union-attr]
                assert (info.channels, info.subtype, rate) == (1, "PCM_16", record["sample_rate"])
                assert len(audio) == record["num_samples"]
                assert record["duration_s"] == record["num_samples"] / rate
                for field in ("speaker", "gender", "age", "accent", "geo"):
                    assert record[field] != ""
    return stats


def test_commonvoice_round_trip(cv_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = build(cv_root, out)
    check_contract(out)
    assert stats["written"] == 11 and stats["rejected"] == 0
    assert sorted(os.listdir(out / "shards")) == ["deu", "eng", "pol"]
    assert stats["by_language"]["utterances"] == {"deu": 3, "eng": 5, "pol": 3}
    assert stats["speakers"]["total"] == 6

    urls = sorted(str(p) for p in (out / "shards").rglob("*.tar"))
    samples = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}
    assert len(samples) == 11
    record = json.loads(samples["commonvoice_en_1"]["json"])
    assert record == {
        "key": "commonvoice_en_1",
        "corpus": "commonvoice",
        "split": "train",
        "language": "eng",
        "source_language": "en",
        "speaker": "commonvoice_en1" + "0" * 125,
        "gender": "female",
        "age": "twenties",
        "accent": None,
        "geo": {"lat": 52.9992, "lon": -1.0049, "source": "language"},
        "transcript": {
            "raw": "en sentence 1",
            "normalized": "en sentence 1",
            "scripts": ["Latn", "Latn", "Zyyy"],
            "cmi": 0.0,
        },
        "duration_s": record["num_samples"] / 16000,
        "sample_rate": 16000,
        "num_samples": record["num_samples"],
        "source": {"path": "en/clips/common_voice_en_1.mp3", "start_s": None, "end_s": None},
        "license": "CC0-1.0",
    }
    # the audio is the source, resampled: compare with an independent resampler
    source, rate = sf.read(cv_root / "en/clips/common_voice_en_1.mp3", dtype="float32")
    assert rate == 48000
    reference = resample_poly(source, 1, 3)
    audio, _ = sf.read(io.BytesIO(samples["commonvoice_en_1"]["flac"]), dtype="float32")
    assert abs(len(audio) - len(reference)) <= 1
    n = min(len(audio), len(reference))
    assert np.max(np.abs(audio[:n] - reference[:n])) < 3e-3
    # de clips were 32 kHz MP3
    de, _ = sf.read(io.BytesIO(samples["commonvoice_de_1"]["flac"]), dtype="float32")
    de_source, de_rate = sf.read(cv_root / "de/clips/common_voice_de_1.mp3", dtype="float32")
    assert de_rate == 32000 and abs(len(de) - len(de_source) / 2) <= 1


def test_clip_in_train_and_validated_is_written_once(cv_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = build(cv_root, out, splits=("train", "validated"))
    check_contract(out)
    index = pq.read_table(out / "utterances.parquet").to_pylist()
    splits = {row["key"]: row["split"] for row in index}
    # train clips stay train (first in --splits); dev clips appear only in validated
    assert splits["commonvoice_en_1"] == "train"
    assert splits["commonvoice_en_4"] == "validated"
    assert len(index) == 3 + 1 + 2 + 1 + 2  # en train+dev, pl train+dev, de train
    assert stats["merged_duplicate_listings"] == 3 + 2 + 2
    assert stats["discovered"] == len(index)


@pytest.fixture
def bad_manifest(tmp_path: Path) -> Path:
    """A manifest with one good row and one row of every reject class."""
    folder = tmp_path / "m"
    write_audio(folder / "good.wav", tone(440, 1.0, 16000), 16000, "wav")
    write_audio(folder / "good2.flac", tone(660, 1.0, 22050), 22050, "flac")
    write_audio(folder / "short.wav", tone(440, 0.05, 16000), 16000, "wav")
    write_audio(folder / "long.wav", tone(440, 3.0, 8000), 8000, "wav")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.mp3").write_bytes(b"\xff\xfb" + bytes(range(256)) * 4)
    (tmp_path / "secret.wav").write_bytes(b"x")
    write_tsv(
        folder / "manifest.tsv",
        ["id", "path", "language", "speaker", "transcript"],
        [
            ["good", "good.wav", "en", "s1", "hello  world"],
            ["good2", "good2.flac", "pl-PL", "", ""],
            ["missing", "missing.wav", "en", "s1", ""],
            ["corrupt", "corrupt.mp3", "en", "s1", ""],
            ["empty", "empty.wav", "en", "s1", ""],
            ["unknown", "good.wav", "xx", "s1", ""],
            ["escape", "../secret.wav", "en", "s1", ""],
            ["short", "short.wav", "en", "s1", ""],
            ["long", "long.wav", "en", "s1", ""],
            ["good", "good2.flac", "en", "s1", ""],  # same id, other audio: duplicate key
            ["malformed", "good.wav"],
        ],
    )
    return folder / "manifest.tsv"


def test_every_reject_class_is_accounted(bad_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats = build(bad_manifest, out, source="manifest", max_duration_s=2.0, max_error_rate=1.0)
    check_contract(out)
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [(r["key"], r["stage"], r["reason"]) for r in rejects] == [
        ("manifest_corrupt", "decode", "unreadable audio"),
        ("manifest_empty", "decode", "empty audio file (0 bytes)"),
        ("manifest_long", "validate", "too long"),
        ("manifest_unknown", "language", "unknown language"),
        (None, "parse", "path escapes the manifest folder"),
        ("manifest_good", "dedup", "duplicate key"),
        (None, "parse", "wrong column count"),
        ("manifest_missing", "decode", "missing audio file"),
        ("manifest_short", "validate", "too short"),
    ]
    assert [r["source"] for r in rejects[3:7]] == [
        "manifest.tsv:7",
        "manifest.tsv:8",
        "manifest.tsv:11",
        "manifest.tsv:12",
    ]
    assert stats["discovered"] == 11 and stats["written"] == 2 and stats["rejected"] == 9
    assert stats["rejected_by_stage"] == {
        "decode": 3,
        "dedup": 1,
        "language": 1,
        "parse": 2,
        "validate": 2,
    }
    index = {row["key"]: row for row in pq.read_table(out / "utterances.parquet").to_pylist()}
    assert index["manifest_good"]["transcript"]["normalized"] == "hello world"
    assert index["manifest_good"]["speaker"] == "manifest_s1"
    assert index["manifest_good2"]["language"] == "pol"
    assert index["manifest_good2"]["source_language"] == "pl-PL"
    assert index["manifest_good2"]["speaker"] is None
    assert index["manifest_good2"]["num_samples"] == 16000  # 22.05 kHz FLAC resampled


def test_error_rate_above_limit_fails_without_completed(bad_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=r"9 of 11 items rejected \(81.8%\) exceeds"):
        build(bad_manifest, out, source="manifest", max_duration_s=2.0)
    assert not (out / "COMPLETED").exists()
    assert json.loads((out / "stats.json").read_text())["rejected"] == 9


def test_builds_are_byte_identical(cv_root: Path, tmp_path: Path) -> None:
    build(cv_root, tmp_path / "a", shard_size_mb=0.03)
    build(cv_root, tmp_path / "b", shard_size_mb=0.03)
    first = tree_digest(tmp_path / "a")
    assert first == tree_digest(tmp_path / "b")
    assert len([p for p in first if p.endswith(".tar")]) > 3


def test_shard_size_target_and_contiguous_numbers(cv_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bound_mb = 0.03
    build(cv_root, out, shard_size_mb=bound_mb)
    check_contract(out)
    shards = read_jsonl(out / "shards.jsonl")
    groups: dict[tuple[str, str], list[str]] = {}
    # --shard-size is a planning target: estimated FLAC bytes at FLAC_RATIO_ESTIMATE, so a
    # shard exceeds it by at most 1 / FLAC_RATIO_ESTIMATE (audio that does not compress), or
    # holds one file that is larger than the target on its own
    worst_case = bound_mb * 1e6 / FLAC_RATIO_ESTIMATE
    for shard in shards:
        assert shard["num_bytes"] <= worst_case or shard["num_samples"] == 1
        groups.setdefault((shard["lang"], shard["split"]), []).append(shard["path"])
    for paths in groups.values():
        numbers = sorted(int(p[-10:-4]) for p in paths)
        assert numbers == list(range(len(numbers)))
    assert len(shards) > len(groups)  # the bound split some groups


def test_two_workers_give_identical_output(cv_root: Path, tmp_path: Path) -> None:
    build(cv_root, tmp_path / "one", shard_size_mb=0.03)
    build(cv_root, tmp_path / "two", shard_size_mb=0.03, workers=2)
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")


def test_spawned_write_processes_give_identical_output(
    cv_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off Linux the write processes are spawned, not forked: same bytes."""
    from voxshard.pipelines import shard_pool

    monkeypatch.setattr(shard_pool, "START_METHOD", "spawn")
    build(cv_root, tmp_path / "one", shard_size_mb=0.03)
    build(cv_root, tmp_path / "spawned", shard_size_mb=0.03, workers=2)
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "spawned")


@pytest.mark.parametrize("source", ["voxpopuli", "mls", "babel"])
def test_two_workers_give_identical_output_in_every_layout(source: str, tmp_path: Path) -> None:
    """The demo's trees (Vorbis sessions cut by timestamps and spooled, MLS FLAC copied and
    Opus, BABEL SPHERE segments), small shards: the same bytes with one process and two."""
    from voxshard.pipelines import demo
    from voxshard.pipelines.verify import verify as run_verify

    generate = getattr(demo, f"generate_{source}_demo")
    generate(str(tmp_path / "corpus"))
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"workers-{workers}"
        build(
            tmp_path / "corpus", out, source, shard_size_mb=0.2, workers=workers, max_error_rate=0.2
        )
        problems, _summary = run_verify(str(out))
        assert problems == []
        digests.append(tree_digest(out))
    assert digests[0] == digests[1]
    assert sum(1 for name in digests[0] if name.endswith(".tar")) > 1  # several shards


@pytest.mark.parametrize("point", ["tar-partial:2", "shard-written:3", "index-written:1"])
def test_killed_build_leaves_no_partial_file_and_resumes(
    cv_root: Path, tmp_path: Path, point: str
) -> None:
    reference = tmp_path / "reference"
    build(cv_root, reference, shard_size_mb=0.03)
    reference_files = tree_digest(reference)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "voxshard",
        "build",
        "commonvoice",
        str(cv_root),
        "--out",
        str(out),
        "--shard-size",
        "0.03",
    ]
    env = {**os.environ, "VOXSHARD_CRASH_AT": point}
    killed = subprocess.run(command, env=env, capture_output=True, cwd=REPO, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (out / "COMPLETED").exists()
    for relative, digest in tree_digest(out).items():
        name = os.path.basename(relative)
        if relative.startswith("shards/") and not name.startswith("."):
            assert digest == reference_files[relative]  # final names hold complete files only
    if point.startswith("tar-partial"):
        assert any(".tmp-" in name for name in tree_digest(out))  # the partial one is a temp
    rerun = subprocess.run(command, capture_output=True, cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert tree_digest(out) == reference_files


def test_a_killed_write_process_fails_the_build_clearly_and_the_rerun_resumes(
    cv_root: Path, tmp_path: Path
) -> None:
    """--workers 2: a write process killed mid-shard (the OOM killer, say) stops the build
    with words saying so; the rerun keeps what was published and gives the same bytes."""
    reference = tmp_path / "reference"
    build(cv_root, reference, shard_size_mb=0.03)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "voxshard", "build", "commonvoice", str(cv_root)]
    command += ["--out", str(out), "--shard-size", "0.03", "--workers", "2"]
    env = {**os.environ, "VOXSHARD_CRASH_AT": "tar-partial:2"}  # counted per process
    killed = subprocess.run(command, env=env, capture_output=True, cwd=REPO, timeout=300)
    assert killed.returncode == 1, killed.stderr.decode()[-2000:]
    message = killed.stderr.decode().strip().splitlines()[-1]
    assert "a process writing shards died" in message and "rerun the same command" in message
    assert not (out / "COMPLETED").exists()
    rerun = subprocess.run(command, capture_output=True, cwd=REPO, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert tree_digest(out) == tree_digest(reference)


def test_output_folder_rules(cv_root: Path, tmp_path: Path) -> None:
    config = BuildConfig(source="commonvoice", root=str(cv_root), out=str(tmp_path / "o"))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no voxshard build"):
        prepare_output(config, overwrite=False)
    run_build(config, overwrite=True)
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"  # --overwrite only removes ours
    assert prepare_output(config, overwrite=False) is True  # the same build: nothing to do
    resampled = BuildConfig("commonvoice", str(cv_root), str(tmp_path / "o"), sample_rate=8000)
    with pytest.raises(ConfigError, match="completed build with other options; pass --overwrite"):
        prepare_output(resampled, overwrite=False)
    other = BuildConfig(source="commonvoice", root=str(cv_root), out=str(tmp_path / "p"))
    prepare_output(other, overwrite=False)  # claimed, nothing written yet
    changed = BuildConfig(
        source="commonvoice", root=str(cv_root), out=str(tmp_path / "p"), sample_rate=8000
    )
    assert prepare_output(changed, overwrite=False) is False  # a claim alone is replaced
    (tmp_path / "p" / ".work" / "done").mkdir(parents=True)
    (tmp_path / "p" / ".work" / "done" / "x.json").write_text("{}")  # now it wrote something
    with pytest.raises(ConfigError, match=r"rerun the command that started it .* --overwrite"):
        prepare_output(other, overwrite=False)


def test_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        BuildConfig(
            source="nope",
            root=str(tmp_path / "missing"),
            out=str(tmp_path / "o"),
            sample_rate=10,
            shard_size_mb=0,
            max_error_rate=2,
            workers=0,
            languages=("klingon",),
        )
    problems = info.value.problems
    assert len(problems) == 7
    expected = [
        "unknown SOURCE 'nope'; choose one of: babel, commonvoice, manifest, mls, voxpopuli",
        "ROOT ",
        "--sample-rate 10 is outside",
        "--shard-size 0 MB must be positive",
        "--max-error-rate 2 must be within 0..1",
        "--workers 0 must be at least 1",
        "--languages:",
    ]
    for fragment in expected:
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)


def test_build_pipeline_runs_under_test_pipeline(cv_root: Path, tmp_path: Path) -> None:
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.test_pipeline import TestPipeline

    config = BuildConfig(
        source="commonvoice", root=str(cv_root), out=str(tmp_path / "o"), languages=("pol",)
    )
    (tmp_path / "o").mkdir()
    with TestPipeline(runner=FnApiRunner()) as p:
        build_pipeline(p, config, ["pl/train.tsv"])
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["written"] == 2
    assert archive_bytes(0) == 10240


def _outline(config: BuildConfig, sources: list[str], **options: Any) -> dict[str, list[str]]:
    import apache_beam as beam

    from voxshard.pipelines.build import graph_outline

    pipeline = beam.Pipeline()
    build_pipeline(pipeline, config, sources, **options)
    return graph_outline(pipeline)


def test_the_graph_splits_each_step_and_lists_tables_without_reshuffle_in_process(
    tmp_path: Path,
) -> None:
    """Each step's stream is split into work (for the next step) and events (for Finalize)
    before any Flatten: only events may wait in one (the in-process runner holds a Flatten's
    input until its consumer runs). The table paths are reshuffled only where many workers
    parse them. (graph_outline is what ``build --dry-run`` prints.)"""
    (tmp_path / "m.tsv").write_text("path\tlanguage\na.wav\ten\n", encoding="utf-8")
    config = BuildConfig(source="manifest", root=str(tmp_path / "m.tsv"), out=str(tmp_path / "o"))
    two = [str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")]
    spread = _outline(config, two)
    local = _outline(config, two, spread_tables=False)
    assert spread.pop("ListSources") == ["Impulse", "FlatMap", "MaybeReshuffle*", "Map"]
    assert local.pop("ListSources") == ["Impulse", "FlatMap", "Map"]  # Create, no Reshuffle
    assert spread == local
    assert local == {
        "ParseSources": [
            "Parse",
            "ParsedWork",
            "ParsedEvents",
            "GroupByItemKey*",
            "Dedup",
            "DedupedWork",
            "DedupedEvents",
            "Events",
        ],
        "PlanShards": [
            "GroupByAudio*",
            "PlanFiles",
            "FilesWork",
            "FilesEvents",
            "GroupByGroup*",
            "PlanGroups",
            "PlannedWork",
            "PlannedEvents",
            "Events",
        ],
        "WriteShards": ["GroupByShard*", "Write"],
        "AllEvents": ["Flatten"],
        "Finalize": ["OneKey", "Gather*", "Finish"],
    }


def test_an_item_whose_record_cannot_be_made_is_rejected_and_the_build_goes_on(
    cv_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record (geo, transcript normalization, JSON) is made after the audio work, in
    bursts: an error there rejects that item alone, with the error named."""
    from voxshard.pipelines import records

    transcript = records._transcript

    def broken(item: Any, *args: Any, **kwargs: Any) -> Any:
        if item.key == "commonvoice_pl_1":
            raise ValueError("normalizer tables unreadable")
        return transcript(item, *args, **kwargs)

    monkeypatch.setattr(records, "_transcript", broken)
    out = tmp_path / "o"
    build(cv_root, out, splits=("train",), max_error_rate=0.5)
    stats = check_contract(out)
    assert stats["rejected_by_reason"] == {"unusable record": 1}
    [reject] = read_jsonl(out / "rejects.jsonl")
    assert (reject["key"], reject["stage"], reject["detail"]) == (
        "commonvoice_pl_1",
        "validate",
        "ValueError: normalizer tables unreadable",
    )


def test_more_bad_input_classes_are_rejected_with_a_reason(tmp_path: Path) -> None:
    """NaN samples, too many channels, a line over 1 MiB, an absurd transcript, non-UTF-8
    bytes, out-of-range lat/lon; control characters are dropped from the normalized text."""
    folder = tmp_path / "m"
    write_audio(folder / "good.wav", tone(440, 1.0, 16000), 16000, "wav")
    nan = tone(440, 1.0, 16000)
    nan[100] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(folder / "six.wav", np.tile(tone(440, 1.0, 16000)[:, None], (1, 6)), 16000)
    header = "id\tpath\tlanguage\ttranscript\tlat\tlon"
    lines = [
        header,
        "good\tgood.wav\ten\thello\x07 wor\x1bld\t\t",
        "nan\tnan.wav\ten\t\t\t",
        "six\tsix.wav\ten\t\t\t",
        "chatty\tgood.wav\ten\t" + "la " * 2000 + "\t\t",
        "huge\tgood.wav\ten\t" + "x" * (1 << 20) + "\t\t",
        "geo\tgood.wav\ten\t\t91.5\t10",
    ]
    payload = ("\n".join(lines) + "\n").encode()
    payload += b"latin1\tgood.wav\ten\tcaf\xe9\t\t\n"
    (folder / "manifest.tsv").write_bytes(payload)
    out = tmp_path / "out"
    stats = build(folder / "manifest.tsv", out, source="manifest", max_error_rate=1.0)
    check_contract(out)
    rejects = read_jsonl(out / "rejects.jsonl")
    assert {(r["key"], r["stage"], r["reason"]) for r in rejects} == set(
        [
            ("manifest_nan", "validate", "non-finite samples (NaN or inf)"),
            ("manifest_six", "decode", "too many channels"),
            ("manifest_chatty", "text", "transcript too long"),
            (None, "parse", "line too long"),
            (None, "parse", "invalid lat/lon"),
            (None, "parse", "not valid UTF-8"),
        ]
    )
    details = {r["reason"]: r["detail"] for r in rejects}
    assert details["transcript too long"] == "5999 characters; an utterance may have 4096"
    assert details["too many channels"].startswith("6 channels")
    assert stats["discovered"] == 7 and stats["written"] == 1 and stats["rejected"] == 6
    [row] = pq.read_table(out / "utterances.parquet").to_pylist()
    assert row["transcript"]["raw"] == "hello\x07 wor\x1bld"
    assert row["transcript"]["normalized"] == "hello world"


def test_out_inside_root_is_refused(cv_root: Path, bad_manifest: Path) -> None:
    for out in (cv_root, cv_root / "en" / "build"):  # a corpus folder is scanned
        with pytest.raises(ConfigError, match="is ROOT or inside it"):
            BuildConfig("commonvoice", str(cv_root), str(out))
    with pytest.raises(ConfigError, match="is ROOT or inside it"):  # a manifest's own folder
        BuildConfig("manifest", str(bad_manifest), str(bad_manifest.parent))
    BuildConfig("manifest", str(bad_manifest), str(bad_manifest.parent / "out"))  # beside it


def test_overwrite_removes_only_what_a_build_wrote(cv_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "keep_me.wav").write_bytes(b"mine")
    (out / "stats.json").write_text("my own stats")
    with pytest.raises(ConfigError, match=r"holds shards, stats.json that no voxshard build wrote"):
        run_build(BuildConfig("commonvoice", str(cv_root), str(out)), overwrite=True)
    assert (out / "stats.json").read_text() == "my own stats"
    assert (out / "shards" / "keep_me.wav").read_bytes() == b"mine"
    out = tmp_path / "built"  # files of the user's inside a voxshard build survive --overwrite
    run_build(BuildConfig("commonvoice", str(cv_root), str(out)))
    (out / "shards" / "keep_me.wav").write_bytes(b"mine")
    (out / "shards" / "eng" / "notes.txt").write_text("mine too")
    run_build(
        BuildConfig("commonvoice", str(cv_root), str(out), shard_size_mb=0.03), overwrite=True
    )
    assert (out / "shards" / "keep_me.wav").read_bytes() == b"mine"
    assert (out / "shards" / "eng" / "notes.txt").read_text() == "mine too"
    listed = {json.loads(line)["path"] for line in (out / "shards.jsonl").read_text().splitlines()}
    tars = {str(p.relative_to(out)) for p in out.rglob("*.tar")}
    assert tars == listed  # the first build's shards are gone, the second's all there


def test_a_rerun_of_a_finished_build_is_a_no_op_and_finishes_a_killed_cleanup(
    cv_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = BuildConfig("commonvoice", str(cv_root), str(out))
    first = run_build(config)
    reference = tree_digest(out)
    again = run_build(config)
    assert again["already_built"] and again["written"] == first["written"]
    assert tree_digest(out) == reference
    # killed right after COMPLETED: the marker and the scratch folder are still there
    (out / ".work" / "index").mkdir(parents=True)
    (out / ".voxshard-build.json").write_text(json.dumps({"config_hash": config.config_hash()}))
    assert run_build(config)["already_built"]
    assert tree_digest(out) == reference
    result = subprocess.run(
        [sys.executable, "-m", "voxshard", "build", "commonvoice", str(cv_root), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0
    assert "already holds this build (the same options): nothing to do" in result.stdout


def test_a_second_build_into_the_same_out_is_refused(cv_root: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".voxshard.lock", "w") as held:
        held.write("4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(
            BuildError, match=r"being built by another voxshard process \(pid 4242\)"
        ):
            build(cv_root, out)
    build(cv_root, out)  # released: the build runs, and leaves no lock behind
    assert not (out / ".voxshard.lock").exists()


def test_raising_max_error_rate_finishes_the_failed_build(
    bad_manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=r"rerun the same command with --max-error-rate 0.82"):
        build(bad_manifest, out, source="manifest", max_duration_s=2.0)
    stats = build(bad_manifest, out, source="manifest", max_duration_s=2.0, max_error_rate=0.82)
    assert stats["written"] == 2 and (out / "COMPLETED").exists()


def test_no_single_bad_item_fails_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder where audio should be, an unreadable file, MP3s with random bytes inside or
    garbage after their first quarter, a NUL byte in a path, a path with a leading space: each
    is written or rejected with a reason naming its file, and the build completes."""
    folder = tmp_path / "m"
    write_audio(folder / "good.wav", tone(440, 1.0, 16000), 16000, "wav")
    write_audio(folder / " lead.wav", tone(440, 1.0, 16000), 16000, "wav")
    (folder / "adir.wav").mkdir()
    write_audio(folder / "locked.wav", tone(440, 1.0, 16000), 16000, "wav")
    rng = np.random.default_rng(3)
    for name, damage in (("holes.mp3", "run"), ("tail.mp3", "tail")):
        write_audio(folder / name, tone(300, 4.0, 48000), 48000, "mp3")
        data = bytearray((folder / name).read_bytes())
        if damage == "run":
            data[len(data) // 2 : len(data) // 2 + 4096] = rng.bytes(4096)
        else:
            data[len(data) // 4 :] = rng.bytes(len(data) - len(data) // 4)
        (folder / name).write_bytes(bytes(data))
    rows = [
        ["good", "good.wav", "en"],
        ["lead", " lead.wav", "en"],
        ["adir", "adir.wav", "en"],
        ["locked", "locked.wav", "en"],
        ["holes", "holes.mp3", "en"],
        ["tail", "tail.mp3", "en"],
        ["nul", "a\x00b.wav", "en"],
    ]
    write_tsv(folder / "manifest.tsv", ["id", "path", "language"], rows)
    real_open = open

    def no_permission(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("locked.wav"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_permission)
    monkeypatch.setattr(
        "soundfile.SoundFile.__init__",
        _refusing(sf.SoundFile.__init__, "locked.wav"),
    )
    out = tmp_path / "out"
    stats = build(folder / "manifest.tsv", out, source="manifest", max_error_rate=1.0)
    check_contract(out)
    rejects = {r["key"]: r for r in read_jsonl(out / "rejects.jsonl")}
    written = {row["key"] for row in pq.read_table(out / "utterances.parquet").to_pylist()}
    assert {"manifest_good", "manifest_lead"} <= written
    assert rejects["manifest_adir"]["reason"] == "unreadable audio"
    assert rejects["manifest_adir"]["source"] == "adir.wav"
    assert rejects["manifest_locked"]["reason"] == "unreadable audio"
    assert "Permission denied" in rejects["manifest_locked"]["detail"]
    nul = [r for r in rejects.values() if r["reason"] == "invalid path"]
    assert len(nul) == 1 and nul[0]["detail"] == "contains a NUL byte"
    for key in ("manifest_holes", "manifest_tail"):  # written (libmpg123 resyncs) or rejected
        assert key in written or rejects[key]["source"] == key.split("_")[1] + ".mp3"
    assert stats["discovered"] == len(rows) == stats["written"] + stats["rejected"]


def _refusing(init, name: str):  # type: ignore[no-untyped-def]
    def refusing(self, file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file).endswith(name):
            raise PermissionError(13, "Permission denied", str(file))
        return init(self, file, *args, **kwargs)

    return refusing


def test_bad_json_lines_are_rejects(tmp_path: Path) -> None:
    folder = tmp_path / "j"
    write_audio(folder / "good.wav", tone(440, 1.0, 16000), 16000, "wav")
    deep = (
        '{"id": "deep", "path": "good.wav", "language": "en", "x": '
        + "[" * 100_000
        + "]" * 100_000
        + "}"
    )
    lines = [
        '{"id": "good", "path": "good.wav", "language": "en"}',
        '{"id": "lone", "path": "good.wav", "language": "en", "transcript": "a\\ud800b"}',
        deep,
    ]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    stats = build(folder / "manifest.jsonl", out, source="manifest", max_error_rate=1.0)
    check_contract(out)
    reasons = sorted((r["source"], r["reason"]) for r in read_jsonl(out / "rejects.jsonl"))
    assert reasons == [
        ("manifest.jsonl:2", "not valid UTF-8"),
        ("manifest.jsonl:3", "not a JSON line"),
    ]
    assert stats["written"] == 1


def test_a_non_ascii_file_name_under_a_c_locale(tmp_path: Path) -> None:
    """Without UTF-8 mode, Python cannot name 'é' on disk: a reject, not a crash."""
    folder = tmp_path / "m"
    write_audio(folder / "good.wav", tone(440, 1.0, 16000), 16000, "wav")
    write_audio(folder / "café.wav", tone(440, 1.0, 16000), 16000, "wav")
    write_tsv(
        folder / "manifest.tsv",
        ["id", "path", "language"],
        [["good", "good.wav", "en"], ["cafe", "café.wav", "en"]],
    )
    out = tmp_path / "out"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    command = [sys.executable, "-m", "voxshard", "build", "manifest", str(folder / "manifest.tsv")]
    result = subprocess.run(
        [*command, "--out", str(out), "--max-error-rate", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["written"] + stats["rejected"] == 2 and stats["written"] >= 1


TRUNCATED_REASONS = {"truncated audio", "unreadable audio"}


def test_truncated_files_are_never_written_as_shorter_audio(tmp_path: Path) -> None:
    """Every codec cut at several offsets: the container's own length (WAV data chunk, SPHERE
    sample_count, the Ogg end-of-stream page, MP3 Xing frames, FLAC STREAMINFO) or the decoder
    rejects each cut file; the whole files are written."""
    folder = tmp_path / "m"
    rows = []
    codecs = {"wav": 16000, "sph": 8000, "ogg": 16000, "opus": 16000, "mp3": 48000, "flac": 16000}
    for codec, rate in codecs.items():
        whole = write_audio(folder / f"whole.{codec}", tone(300, 3.0, rate), rate, codec)
        rows.append([f"whole_{codec}", whole.name, "en"])
        data = whole.read_bytes()
        for percent in (8, 35, 60, 85):
            cut = folder / f"cut{percent}.{codec}"
            cut.write_bytes(data[: len(data) * percent // 100])
            rows.append([f"cut{percent}_{codec}", cut.name, "en"])
    write_tsv(folder / "manifest.tsv", ["id", "path", "language"], rows)
    out = tmp_path / "out"
    build(folder / "manifest.tsv", out, source="manifest", max_error_rate=1.0)
    check_contract(out)
    written = {row["key"] for row in pq.read_table(out / "utterances.parquet").to_pylist()}
    assert written == {f"manifest_whole_{codec}" for codec in codecs}
    rejects = {r["key"]: r for r in read_jsonl(out / "rejects.jsonl")}
    for codec in codecs:
        for percent in (8, 35, 60, 85):
            reject = rejects[f"manifest_cut{percent}_{codec}"]
            assert reject["reason"] in TRUNCATED_REASONS, reject
            if codec == "wav":
                assert reject["reason"] == "truncated audio"
                assert reject["detail"].startswith("its data chunk says 96000 bytes")
            if codec == "sph":
                assert reject["reason"] == "truncated audio"
                assert reject["detail"].startswith("its header says 48000 bytes of samples")


def test_a_wav_of_unknown_length_is_not_called_truncated(tmp_path: Path) -> None:
    from voxshard.pipelines.audio import truncation

    path = write_audio(tmp_path / "s.wav", tone(300, 1.0, 16000), 16000, "wav")
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4 : at + 8] = (0xFFFFFFFF).to_bytes(4, "little")  # a streaming writer's size
    path.write_bytes(bytes(data))
    assert truncation(str(path), "WAV", len(data)) is None
    data[at + 4 : at + 8] = (40000).to_bytes(4, "little")
    path.write_bytes(bytes(data[:-2000]))
    assert truncation(str(path), "WAV", len(data) - 2000) == (
        f"its data chunk says 40000 bytes, the file holds {len(data) - 2000 - at - 8}"
    )


def test_segments_far_past_their_audio_are_rejected_and_a_small_overrun_is_trimmed(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "m"
    write_audio(folder / "s.flac", tone(300, 4.0, 16000), 16000, "flac")
    write_tsv(
        folder / "manifest.tsv",
        ["id", "path", "language", "start_s", "end_s"],
        [
            ["inside", "s.flac", "en", "0.5", "2.5"],
            ["overrun", "s.flac", "en", "3.0", "4.8"],  # 0.8 s past the end: trimmed
            ["far", "s.flac", "en", "1.0", "8.0"],  # 4 s of 7 missing
        ],
    )
    out = tmp_path / "out"
    build(folder / "manifest.tsv", out, source="manifest", max_error_rate=1.0)
    rows = {row["key"]: row for row in pq.read_table(out / "utterances.parquet").to_pylist()}
    assert rows["manifest_inside"]["num_samples"] == 32000
    assert rows["manifest_overrun"]["num_samples"] == 16000
    [far] = read_jsonl(out / "rejects.jsonl")
    assert (far["key"], far["reason"]) == ("manifest_far", "segment runs past the end of the audio")
    assert far["detail"] == "the segment is 7.000 s by its timestamps, 3.000 s decoded"


def test_clipping_is_counted_and_heavy_clipping_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    loud = tone(300, 1.0, 16000, amplitude=1.0) * 2.4  # a float WAV far beyond full scale
    sf.write(folder / "loud.wav", loud, 16000, subtype="FLOAT")
    touch = tone(300, 1.0, 16000) * 0.5
    touch[[100, 2000, 9000]] = 1.2  # three samples over
    sf.write(folder / "touch.wav", touch, 16000, subtype="FLOAT")
    write_tsv(
        folder / "manifest.tsv",
        ["id", "path", "language"],
        [["loud", "loud.wav", "en"], ["touch", "touch.wav", "en"]],
    )
    out = tmp_path / "out"
    stats = build(folder / "manifest.tsv", out, source="manifest", max_error_rate=1.0)
    check_contract(out)
    [loud_reject] = read_jsonl(out / "rejects.jsonl")
    assert (loud_reject["key"], loud_reject["reason"]) == ("manifest_loud", "clipped audio")
    assert loud_reject["detail"].endswith("(peak 2.40); at most 0.1% may be clipped")
    assert stats["clipped_samples"] == 3 and stats["written"] == 1


def test_implausible_speaking_rates_are_rejected_before_decoding(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_audio(folder / "two.wav", tone(300, 2.0, 16000), 16000, "wav")
    write_audio(folder / "twelve.wav", tone(300, 12.0, 16000), 16000, "wav")
    write_tsv(
        folder / "manifest.tsv",
        ["id", "path", "language", "transcript"],
        [
            ["fine", "two.wav", "en", "a sentence of ordinary length"],
            ["fast", "two.wav", "en", "x" * 100],
            ["sparse", "twelve.wav", "en", "a"],
            ["silent", "twelve.wav", "en", ""],
        ],
    )
    out = tmp_path / "out"
    build(folder / "manifest.tsv", out, source="manifest", max_error_rate=1.0)
    rejects = {r["key"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert sorted(rejects) == ["manifest_fast", "manifest_sparse"]
    assert rejects["manifest_fast"]["detail"] == (
        "100 characters in 2.00 s (50.00/s; speech is between 0.1 and 40.0)"
    )
    assert rejects["manifest_sparse"]["reason"] == "implausible speaking rate"


def test_the_first_in_process_build_freezes_the_imported_objects_once(
    cv_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc.freeze runs once per process, before the pipeline: later builds skip it, and the
    output is the same bytes as a build that found the objects already frozen."""
    import gc

    from voxshard.pipelines import runner

    freezes: list[bool] = []
    monkeypatch.setattr(runner, "_FROZEN", False)
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(True))
    build(cv_root, tmp_path / "a")
    build(cv_root, tmp_path / "b")
    assert len(freezes) == 1 and runner._FROZEN
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
