"""Dataflow readiness, offline: the job is built and validated with --dry_run=True (Beam builds
the Dataflow job and the sdist of this checkout for the workers, and submits nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import plan_run
from voxshard.schemas import ConfigError

DATAFLOW = [
    "--runner",
    "DataflowRunner",
    "--project",
    "voxshard-test",
    "--region",
    "us-central1",
    "--temp_location",
    "gs://voxshard-test-bucket/tmp",
]


def test_dataflow_dry_run_builds_the_job_offline(cv_root: Path) -> None:
    result = run_cli(
        "build",
        "commonvoice",
        str(cv_root),
        "--out",
        "gs://voxshard-test-bucket/builds/cv",
        "--",
        *DATAFLOW,
        "--dry_run=True",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dry run: job built from 9 source table(s)" in result.stdout
    assert "not submitted, OUT untouched" in result.stdout
    # the graph it would run: Create's Reshuffle spreads the tables over the workers
    graph = result.stdout.split("the build's Beam graph", 1)[1].splitlines()[1:]
    assert graph[0].split() == ["ListSources", "Impulse,", "FlatMap,", "MaybeReshuffle*,", "Map"]
    assert graph[3].split() == ["WriteShards", "GroupByShard*,", "Write"]
    # the checkout was packaged for the workers, and the local ROOT was flagged
    assert "--setup_file" in result.stderr and "pyproject.toml" in result.stderr
    assert "workers cannot read" in result.stderr


def test_dataflow_refuses_a_local_out_and_root(cv_root: Path, tmp_path: Path) -> None:
    result = run_cli("build", "commonvoice", str(cv_root), "--out", str(tmp_path), "--", *DATAFLOW)
    assert result.returncode == 2
    assert "workers cannot write" in result.stderr and "gs://BUCKET" in result.stderr
    assert "workers cannot read" in result.stderr and "gsutil -m rsync" in result.stderr


def test_local_runners_run_in_process(cv_root: Path, tmp_path: Path) -> None:
    config = BuildConfig("commonvoice", str(cv_root), str(tmp_path / "out"), workers=2)
    plan = plan_run(config, ["--runner", "DirectRunner"])
    assert plan.in_process and not plan.beam_dry_run and plan.runner is not None
    # Beam runs in the driver; --workers 2 is two local processes writing shards
    assert plan.options.get_all_options()["direct_num_workers"] == 1 and plan.processes == 2


def test_a_packaged_job_is_left_as_given(cv_root: Path) -> None:
    config = BuildConfig("commonvoice", str(cv_root), "gs://voxshard-test-bucket/out")
    image = "us-docker.pkg.dev/p/r/voxshard:1"
    plan = plan_run(config, [*DATAFLOW, "--sdk_container_image", image, "--dry_run=True"])
    assert not plan.in_process and plan.beam_dry_run
    assert plan.options.get_all_options()["setup_file"] is None
    with pytest.raises(ConfigError, match=r"--geo .* is local; workers read it"):
        plan_run(
            BuildConfig(
                "commonvoice",
                str(cv_root),
                "gs://voxshard-test-bucket/out",
                geo=str(write_geo(cv_root)),
            ),
            [*DATAFLOW, "--sdk_container_image", image],
        )


def write_geo(folder: Path) -> Path:
    path = folder / "geo.tsv"
    path.write_text("speaker\tlat\tlon\n", encoding="utf-8")
    return path
