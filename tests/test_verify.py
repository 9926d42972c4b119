from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build
from voxshard.pipelines.verify import verify

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def built(cv_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    run_build(BuildConfig("commonvoice", str(cv_root), str(out), shard_size_mb=0.05))
    return out


@pytest.fixture
def rejecting_build(tmp_path: Path) -> Path:
    """A build with written samples and rejects of two reasons."""
    import numpy as np
    import soundfile as sf

    folder = tmp_path / "m"
    folder.mkdir()
    rate = 16000
    t = np.arange(rate) / rate
    for name, hz in (("a", 300), ("b", 500), ("c", 700)):
        sf.write(folder / f"{name}.wav", 0.3 * np.sin(2 * np.pi * hz * t), rate)
    rows = ["id\tpath\tlanguage\tspeaker", "a\ta.wav\ten\ts1", "b\tb.wav\ten\ts2"]
    rows += ["c\tc.wav\tpl\ts3", "d\tmissing.wav\ten\ts1", "e\ta.wav\txx\ts1"]
    (folder / "manifest.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "rejecting"
    config = BuildConfig("manifest", str(folder / "manifest.tsv"), str(out), max_error_rate=1.0)
    run_build(config)
    return out


def first_shard(out: Path) -> Path:
    path: str = json.loads((out / "shards.jsonl").read_text().splitlines()[0])["path"]
    return out / path


def test_a_good_build_verifies(built: Path) -> None:
    problems, summary = verify(str(built))
    assert problems == [] and summary["samples"] == 11
    result = subprocess.run(
        [sys.executable, "-m", "voxshard", "verify", str(built)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0 and result.stdout.startswith("ok: ")


def test_truncated_shard(built: Path) -> None:
    shard = first_shard(built)
    shard.write_bytes(shard.read_bytes()[:1500])
    problems, _ = verify(str(built))
    relative = str(shard.relative_to(built))
    assert any(p.startswith(f"{relative}: 1500 bytes, shards.jsonl says") for p in problems)
    assert f"{relative}: sha256 differs from shards.jsonl" in problems
    assert any(p.startswith(f"{relative}: unreadable tar (") for p in problems)
    result = subprocess.run(
        [sys.executable, "-m", "voxshard", "verify", str(built)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1 and "sha256 differs" in result.stderr


def test_flipped_byte_in_audio(built: Path) -> None:
    """A byte flipped inside a FLAC frame: the sha256 and the decode check both see it."""
    from voxshard.pipelines.audio import flac_metadata

    shard = first_shard(built)
    data = bytearray(shard.read_bytes())
    flac_start = 512  # after the first member's header
    flac_size = int(data[124:135].rstrip(b"\0 ").decode(), 8)
    _, _, frames_at = flac_metadata(bytes(data[flac_start : flac_start + flac_size]))
    data[flac_start + frames_at + (flac_size - frames_at) // 2] ^= 0xFF  # mid-frame audio
    shard.write_bytes(bytes(data))
    problems, _ = verify(str(built))
    relative = str(shard.relative_to(built))
    assert f"{relative}: sha256 differs from shards.jsonl" in problems
    audio = [p for p in problems if ".flac " in p]
    assert len(audio) == 1, problems
    assert audio[0].endswith(".flac does not decode (Error : flac decoder lost sync.)")
    assert all(p.startswith(relative) for p in problems)  # only that shard


def test_flac_md5_check_follows_streaminfo() -> None:
    """STREAMINFO's MD5 (libFLAC computes it when encoding) covers the samples as
    little-endian 16-bit integers: the decoded audio matches it, altered audio does not."""
    import io

    import numpy as np
    import soundfile as sf

    from voxshard.pipelines.verify import _flac_md5_problem

    pcm = (np.sin(np.arange(8000) / 7) * 9000).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, 16000, format="FLAC", subtype="PCM_16")
    flac = buffer.getvalue()
    decoded, _ = sf.read(io.BytesIO(flac), dtype="int16")
    assert _flac_md5_problem(flac, decoded) is None
    decoded[4000] += 1  # what a concealed frame error looks like after decoding
    assert _flac_md5_problem(flac, decoded) == "samples differ from STREAMINFO's MD5"
    unrecorded = flac[: 8 + 18] + bytes(16) + flac[8 + 34 :]
    assert _flac_md5_problem(unrecorded, decoded) is None  # zero: not recorded


def test_stray_files_and_accounting(built: Path) -> None:
    stray = built / "shards" / "eng" / ".commonvoice-train-000009.tar.tmp-abc"
    stray.write_bytes(b"partial")
    shutil.copy(first_shard(built), built / "shards" / "eng" / "extra.tar")
    with open(built / "rejects.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"key":null}\n')
    problems, _ = verify(str(built), decode=False)
    assert "shards/eng/.commonvoice-train-000009.tar.tmp-abc: a temporary file" in problems
    assert "shards/eng/extra.tar: a file no index lists" in problems
    assert (
        "rejects.jsonl:1: a reject row has the fields ['key', 'source', 'stage', 'reason', 'detail']"
        in problems
    )
    (built / "COMPLETED").unlink()
    assert verify(str(built))[0] == ["COMPLETED is missing"]


def edit_json(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def edit_first_line(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    change(row)
    lines[0] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


def duplicate_a_parquet_row(out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = out / "utterances.parquet"
    parquet = pq.ParquetFile(path)
    groups = [parquet.read_row_group(i) for i in range(parquet.num_row_groups)]
    groups[0] = pa.concat_tables([groups[0], groups[0].slice(0, 1)])
    with pq.ParquetWriter(path, groups[0].schema) as writer:
        for group in groups:
            writer.write_table(group)


def swap_a_member_name(out: Path) -> None:
    """Rename the first sample's .json member to another key (a pair whose keys differ)."""
    shard = first_shard(out)
    data = bytearray(shard.read_bytes())
    flac_size = int(data[124:135].rstrip(b"\0 ").decode(), 8)
    header = 512 + flac_size + (-flac_size % 512)
    name = bytes(data[header : header + 100]).rstrip(b"\0")
    data[header : header + len(name)] = name.replace(b"_", b"X", 1)
    checksum = sum(data[header : header + 148]) + 8 * 32 + sum(data[header + 156 : header + 512])
    data[header + 148 : header + 156] = f"{checksum:06o}\0 ".encode()
    shard.write_bytes(bytes(data))


TAMPERINGS = {
    "duplicated parquet row": (duplicate_a_parquet_row, "utterances.parquet has a key in two rows"),
    "shards.jsonl lang": (
        lambda out: edit_first_line(out / "shards.jsonl", lambda r: r.update(lang="fra")),
        "does not match lang/corpus/split",
    ),
    "shards.jsonl split": (
        lambda out: edit_first_line(out / "shards.jsonl", lambda r: r.update(split="test")),
        "does not match lang/corpus/split",
    ),
    "shards.jsonl duration": (
        lambda out: edit_first_line(
            out / "shards.jsonl", lambda r: r.update(duration_s=r["duration_s"] + 1)
        ),
        "shards.jsonl says",
    ),
    "shards.jsonl path escape": (
        lambda out: edit_first_line(
            out / "shards.jsonl", lambda r: r.update(path="shards/eng/../../../VICTIM-000000.tar")
        ),
        "is not a shard path under OUT/shards",
    ),
    "stats hours": (
        lambda out: edit_json(out / "stats.json", lambda s: s.update(hours=s["hours"] * 2)),
        "stats.json: hours is",
    ),
    "stats per language": (
        lambda out: edit_json(
            out / "stats.json", lambda s: s["by_language"]["utterances"].update(eng=99)
        ),
        "stats.json: by_language is",
    ),
    "stats reject counts": (
        lambda out: edit_json(out / "stats.json", lambda s: s.update(rejected_by_reason={"x": 1})),
        "stats.json: rejected_by_reason is",
    ),
    "stats speakers": (
        lambda out: edit_json(out / "stats.json", lambda s: s["speakers"].update(total=1)),
        "stats.json: speakers is",
    ),
    "stats shard count": (
        lambda out: edit_json(out / "stats.json", lambda s: s["shards"].update(count=1)),
        "stats.json: shards is",
    ),
    "stats without written": (
        lambda out: edit_json(out / "stats.json", lambda s: s.pop("written")),
        "stats.json: 'written' is missing",
    ),
    "stats not JSON": (
        lambda out: (out / "stats.json").write_text("{not json"),
        "stats.json is not valid JSON",
    ),
    "truncated shards.jsonl": (
        lambda out: (out / "shards.jsonl").write_bytes((out / "shards.jsonl").read_bytes()[:30]),
        "shards.jsonl is truncated",
    ),
    "truncated parquet": (
        lambda out: (out / "utterances.parquet").write_bytes(
            (out / "utterances.parquet").read_bytes()[:200]
        ),
        "utterances.parquet cannot be read",
    ),
    "rejects garbage line": (
        lambda out: (out / "rejects.jsonl").write_text("garbage\n"),
        "rejects.jsonl:1: not JSON",
    ),
    "COMPLETED emptied": (
        lambda out: (out / "COMPLETED").write_text(""),
        "COMPLETED is not valid JSON",
    ),
    "COMPLETED forged": (
        lambda out: (out / "COMPLETED").write_text('{"schema_version": 1}'),
        "COMPLETED does not seal the index files",
    ),
    "stray top-level file": (
        lambda out: (out / "notes.txt").write_text("x"),
        "notes.txt: not part of the build",
    ),
    "temporary top-level file": (
        lambda out: (out / ".stats.json.tmp-1").write_text("x"),
        ".stats.json.tmp-1: a temporary file",
    ),
    "flac/json keys differ": (swap_a_member_name, "a sample's members must share one key"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_every_tampering_is_named(rejecting_build: Path, tampering: str) -> None:
    change, expected = TAMPERINGS[tampering]
    assert verify(str(rejecting_build))[0] == []
    change(rejecting_build)
    problems, _ = verify(str(rejecting_build))
    assert any(expected in p for p in problems), problems


def test_edited_rejects_break_the_seal_and_the_counts(rejecting_build: Path) -> None:
    edit_first_line(rejecting_build / "rejects.jsonl", lambda r: r.update(reason="made up"))
    problems, _ = verify(str(rejecting_build))
    assert "rejects.jsonl: sha256 differs from COMPLETED (edited after the build)" in problems
    assert any(p.startswith("stats.json: rejected_by_reason is") for p in problems)


def test_verify_exit_status_is_stable(built: Path) -> None:
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, "-m", "voxshard", "verify", str(built), "--no-decode"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
    (built / "stats.json").write_text("{")
    result = subprocess.run(
        [sys.executable, "-m", "voxshard", "verify", str(built)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1 and "stats.json is not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
