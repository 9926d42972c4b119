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


def first_shard(out: Path) -> Path:
    return out / json.loads((out / "shards.jsonl").read_text().splitlines()[0])["path"]


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
    assert any("sha256 differs" in p for p in problems)
    assert any("samples, shards.jsonl says" in p or "unreadable tar" in p for p in problems)
    result = subprocess.run(
        [sys.executable, "-m", "voxshard", "verify", str(built)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1 and "sha256 differs" in result.stderr


def test_flipped_byte_in_audio(built: Path) -> None:
    shard = first_shard(built)
    data = bytearray(shard.read_bytes())
    data[512 + 100] ^= 0xFF  # inside the first FLAC member's payload
    shard.write_bytes(bytes(data))
    problems, _ = verify(str(built))
    assert any("sha256 differs" in p for p in problems)
    assert all(p.startswith(str(shard.relative_to(built))) for p in problems)  # only that shard


def test_stray_files_and_accounting(built: Path) -> None:
    stray = built / "shards" / "eng" / ".commonvoice-train-000009.tar.tmp-abc"
    stray.write_bytes(b"partial")
    shutil.copy(first_shard(built), built / "shards" / "eng" / "extra.tar")
    with open(built / "rejects.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"key":null}\n')
    problems, _ = verify(str(built), decode=False)
    assert any("a temporary file" in p for p in problems)
    assert any("extra.tar: a file no index lists" in p for p in problems)
    assert any(p.startswith("accounting: rejects.jsonl has 1 lines") for p in problems)
    (built / "COMPLETED").unlink()
    assert verify(str(built))[0] == ["COMPLETED is missing"]
