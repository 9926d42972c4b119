"""Builds under injected faults (pipelines/faults.py): retried bundles, a full disk, an
unwritable OUT. Each runs the CLI in its own process, as a user would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli, tree_digest
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build
from voxshard.pipelines.verify import verify


def voxshard_build(
    root: Path, out: Path, *beam_args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["build", "commonvoice", str(root), "--out", str(out), "--shard-size", "0.03"]
    return run_cli(*args, *(["--", *beam_args] if beam_args else []), env=env)


@pytest.fixture
def reference(cv_root: Path, tmp_path: Path) -> dict[str, str]:
    out = tmp_path / "reference"
    run_build(BuildConfig("commonvoice", str(cv_root), str(out), shard_size_mb=0.03))
    return tree_digest(out)


@pytest.mark.parametrize("point", ["make-samples:4", "shard-written:2"])
def test_a_retried_bundle_gives_exact_output_without_duplicates(
    cv_root: Path, tmp_path: Path, reference: dict[str, str], point: str
) -> None:
    """The BundleBasedDirectRunner retries a failed bundle, as Dataflow does: outputs of the
    failed attempt are dropped, and a shard written before the failure is written again with
    the same name and bytes."""
    out = tmp_path / "out"
    result = voxshard_build(
        cv_root, out, "--runner", "BundleBasedDirectRunner", env={"VOXSHARD_FAIL_AT": point}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "injected transient failure" in result.stderr  # it failed, and was retried
    assert tree_digest(out) == reference
    problems, summary = verify(str(out))
    assert problems == [] and summary["samples"] == 11


def test_a_full_disk_fails_loudly_and_the_rerun_completes(
    cv_root: Path, tmp_path: Path, reference: dict[str, str]
) -> None:
    out = tmp_path / "out"
    full = voxshard_build(cv_root, out, env={"VOXSHARD_FAIL_AT": "tar-partial:3:enospc"})
    assert full.returncode == 1
    message = full.stderr.strip().splitlines()[-1]
    assert message.startswith("voxshard: error: the pipeline failed: OSError: [Errno 28]")
    assert "no COMPLETED was written" in message and "free space where OUT lives" in message
    assert not (out / "COMPLETED").exists()
    for relative, digest in tree_digest(out).items():
        name = os.path.basename(relative)
        if relative.startswith("shards/") and not name.startswith("."):
            assert digest == reference[relative]  # final names hold complete files only
    rerun = voxshard_build(cv_root, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert tree_digest(out) == reference


def test_an_unwritable_out_is_refused_before_any_work(cv_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = voxshard_build(cv_root, blocker / "out")
    assert result.returncode == 1
    assert "cannot write to OUT" in result.stderr and "choose a writable location" in result.stderr
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_at_once_and_the_rerun_resumes(
    cv_root: Path, tmp_path: Path, reference: dict[str, str], workers: int
) -> None:
    """SIGINT mid-build (a shard step paused by VOXSHARD_PAUSE_AT): exit 130 within seconds,
    one line saying how to resume, no worker process left, and the rerun gives the bytes."""
    import signal
    import sys
    import time

    out = tmp_path / "out"
    command = [sys.executable, "-m", "voxshard", "build", "commonvoice", str(cv_root)]
    command += ["--out", str(out), "--shard-size", "0.03", "--workers", str(workers)]
    env = {**os.environ, "VOXSHARD_PAUSE_AT": "make-samples:2:60"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / ".work" / "plan").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the paused shard step
    from voxshard.pipelines.runner import _descendants

    workers_before = _descendants(process.pid)
    assert len(workers_before) >= (2 if workers == 2 else 0)  # sh -c + python per worker
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - started < 10
    assert "SIGINT: stopping the build" in stderr and "Rerun the same command to resume" in stderr
    assert "Traceback" not in stderr, stderr
    time.sleep(0.5)
    assert [pid for pid in workers_before if _running(pid)] == []  # no worker left behind
    assert not (out / "COMPLETED").exists()
    rerun = voxshard_build(cv_root, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert tree_digest(out) == reference


def test_write_processes_end_with_a_killed_driver(
    cv_root: Path, tmp_path: Path, reference: dict[str, str]
) -> None:
    """SIGKILL of the driver (no handler runs): its --workers processes end with it instead
    of finishing shards into OUT beside the rerun, which gives the same bytes."""
    import signal
    import sys
    import time

    out = tmp_path / "out"
    command = [sys.executable, "-m", "voxshard", "build", "commonvoice", str(cv_root)]
    command += ["--out", str(out), "--shard-size", "0.03", "--workers", "2"]
    env = {**os.environ, "VOXSHARD_PAUSE_AT": "make-samples:1:60"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / ".work" / "plan").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the write processes are paused inside a shard
    from voxshard.pipelines.runner import _descendants

    children = _descendants(process.pid)
    assert len(children) >= 2
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if _running(pid)] == []
    rerun = voxshard_build(cv_root, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert tree_digest(out) == reference


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
