"""The build on Beam's DaskRunner over a local 2-process dask.distributed cluster: the same
bytes as the in-process build, and a clean verify. (Dask is what HPC clusters run.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tree_digest
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import plan_run, run_build
from voxshard.pipelines.verify import verify

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def test_dask_runner_is_a_shared_filesystem_runner(cv_root: Path, tmp_path: Path) -> None:
    config = BuildConfig("commonvoice", str(cv_root), str(tmp_path / "o"))
    plan = plan_run(config, ["--runner", DASK_RUNNER])
    assert plan.kind == "shared-filesystem" and plan.runner is None  # local paths are fine


def test_dask_build_is_byte_identical_to_the_in_process_build(
    cv_root: Path, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    reference = tmp_path / "in-process"
    run_build(BuildConfig("commonvoice", str(cv_root), str(reference), shard_size_mb=0.03))
    out = tmp_path / "dask"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        stats = run_build(
            BuildConfig("commonvoice", str(cv_root), str(out), shard_size_mb=0.03),
            ["--runner", DASK_RUNNER, "--dask_client_address", cluster.scheduler_address],
        )
        workers = len(cluster.scheduler_info["workers"])
    assert workers == 2 and stats["written"] == 11
    digest = tree_digest(out)
    assert len([p for p in digest if p.endswith(".tar")]) > 3
    assert digest == tree_digest(reference)
    problems, summary = verify(str(out))
    assert problems == [] and summary["samples"] == 11
