"""Running a build: which runner and options (``plan_run``), and the driver (``run_build``).

Runners fall in three kinds:
- in-process (no --runner, DirectRunner, FnApiRunner, BundleBasedDirectRunner): this machine,
  ``--workers N`` processes;
- shared-filesystem clusters (DaskRunner): workers see the same paths as the driver (an HPC
  cluster's shared disk, or a local dask.distributed cluster), so ROOT and OUT may be folders;
- remote (Dataflow and any other): workers reach only URLs, and need voxshard packaged.
"""

from __future__ import annotations

import gc
import glob
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any

from voxshard.corpora import get_corpus
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.decoder_notes import quiet_decoder_notes
from voxshard.pipelines.decoder_notes import release as release_stderr
from voxshard.pipelines.outdir import WORK_DIR, build_lock, prepare_output, remove_work_dir
from voxshard.pipelines.progress import Progress
from voxshard.schemas import BuildError, ConfigError, storage

LOG = logging.getLogger("voxshard")
IN_PROCESS_RUNNERS = frozenset(
    {"DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner"}
)
SHARED_FILESYSTEM_RUNNERS = frozenset({"DaskRunner"})
PACKAGING_OPTIONS = ("setup_file", "extra_packages", "requirements_file", "sdk_container_image")
DRY_RUN_FILE = "voxshard-dry-run.json"


@dataclass(frozen=True)
class RunPlan:
    """How the pipeline runs: Beam's options plus what voxshard derives from them."""

    runner: Any  # an FnApiRunner instance for in-process builds; None lets Beam pick --runner
    options: Any
    kind: str  # "in-process", "shared-filesystem" or "remote"
    beam_dry_run: bool  # Beam's own --dry_run=True
    processes: int = 1  # local processes writing shards (the FnApiRunner's --workers)

    @property
    def in_process(self) -> bool:
        return self.kind == "in-process"


SHARED_FILESYSTEM_BUCKETS = 1024  # a Dask cluster of a few machines


def buckets(plan: RunPlan) -> int:
    """How many key / audio buckets the items travel in on this runner (never changes the
    output): enough for the workers, few enough that each holds a batch's worth. In-process
    builds parse and plan in the driver, whatever --workers says."""
    from voxshard.pipelines.build import LOCAL_BUCKETS, REMOTE_BUCKETS

    if plan.in_process:
        return LOCAL_BUCKETS
    return SHARED_FILESYSTEM_BUCKETS if plan.kind == "shared-filesystem" else REMOTE_BUCKETS


def runner_kind(runner_name: str | None) -> str:
    """The kind of a --runner value (a class name or a dotted path to one)."""
    if runner_name is None:
        return "in-process"
    name = runner_name.rsplit(".", 1)[-1]
    if name in IN_PROCESS_RUNNERS:
        return "in-process"
    return "shared-filesystem" if name in SHARED_FILESYSTEM_RUNNERS else "remote"


def source_checkout() -> str | None:
    """The pyproject.toml of the voxshard checkout this code runs from, if any."""
    candidate = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml"
    )
    if os.path.isfile(candidate):
        with open(candidate, encoding="utf-8") as handle:
            if 'name = "voxshard"' in handle.read():
                return candidate
    return None


def plan_run(config: BuildConfig, beam_args: Sequence[str]) -> RunPlan:
    """Beam options for this build. In-process FnApiRunner unless ``--runner`` names another;
    a remote runner needs ROOT and OUT as URLs its workers reach, and the project packaged."""
    from apache_beam.options.pipeline_options import (
        DirectOptions,
        PipelineOptions,
        SetupOptions,
        StandardOptions,
        TestOptions,
        TypeOptions,
        WorkerOptions,
    )

    options = PipelineOptions(list(beam_args))
    runner_name = options.view_as(StandardOptions).runner
    beam_dry_run = bool(options.view_as(TestOptions).dry_run)
    kind = runner_kind(runner_name)
    if kind == "shared-filesystem":
        return RunPlan(None, options, kind, beam_dry_run)
    if kind == "in-process":
        if runner_name is not None and runner_name.endswith("BundleBasedDirectRunner"):
            return RunPlan(None, options, kind, beam_dry_run)  # the runner that retries bundles
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        # the construction-time type check costs ~50 ms of every build's fixed cost and checks
        # nothing here (elements are dataclasses and bytes); coders are inferred as before
        options.view_as(TypeOptions).pipeline_type_check = False
        # Beam runs in the driver; --workers N processes write the shards (shard_pool.py):
        # Beam's multi-process mode costs ~2 s of worker start-up and teardown per build,
        # and multi_threading lost large elements before a GroupByKey in Beam 2.77.
        direct = options.view_as(DirectOptions)
        direct.direct_num_workers = 1
        direct.direct_running_mode = "in_memory"
        return RunPlan(FnApiRunner(), options, kind, beam_dry_run, processes=config.workers)

    problems = []
    if not storage.is_remote(config.out):
        problems.append(
            f"OUT {config.out!r} is a local path, which {runner_name} workers cannot write: "
            "pass a bucket URL such as gs://BUCKET/builds/NAME"
        )
    if not storage.is_remote(config.root):
        message = (
            f"ROOT {config.root!r} is a local path, which {runner_name} workers cannot read: "
            "copy the corpus to a bucket (gsutil -m rsync -r FOLDER gs://BUCKET/corpus; a "
            "manifest's folder with its audio) and pass that URL"
        )
        if beam_dry_run:
            LOG.warning("%s (ignored for --dry_run)", message)
        else:
            problems.append(message)
    for name in ("geo", "lexicon"):
        path = getattr(config, name)
        if path is not None and not storage.is_remote(path) and not beam_dry_run:
            problems.append(f"--{name} {path!r} is local; workers read it: pass a gs:// URL")
    setup = options.view_as(SetupOptions)
    packaged = any(
        getattr(view, name, None)
        for view in (setup, options.view_as(WorkerOptions))
        for name in PACKAGING_OPTIONS
    )
    if not packaged:
        checkout = source_checkout()
        if checkout is None:
            problems.append(
                f"{runner_name} workers need voxshard installed: pass --setup_file "
                "PATH/TO/voxshard/pyproject.toml, --extra_package voxshard-X.whl, or "
                "--sdk_container_image IMAGE with voxshard inside"
            )
        else:
            LOG.info("packaging this checkout for the workers: --setup_file %s", checkout)
            setup.setup_file = checkout
    if problems:
        raise ConfigError(problems)
    return RunPlan(None, options, kind, beam_dry_run)


def _use_system_allocator_for_arrow() -> None:
    """Arrow's default allocator (mimalloc) keeps freed memory for reuse, so the index tables
    of one shard after another raised a local build's peak RSS by tens of MiB; the system
    allocator returns it. Set for this process and the worker processes it starts."""
    import pyarrow as pa

    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    pa.set_memory_pool(pa.system_memory_pool())


def _freeze_imported_objects() -> None:
    """Once per process, before its first in-process build: take every object alive now (the
    modules of Beam, pyarrow, numpy and voxshard: ~300k objects) out of the cyclic garbage
    collector's walks (gc.freeze). Each full collection walked them all, ~0.2 s, and a short
    build met one or more; forked write processes also keep sharing those pages (Python's
    documented use of gc.freeze before fork). They are still freed by reference counting;
    only a reference cycle among them would outlive its use."""
    global _FROZEN
    if not _FROZEN:
        gc.freeze()
        _FROZEN = True


_FROZEN = False


def _failure_message(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
    hint = ""
    if "Errno 28" in cause or "No space left" in cause:
        hint = "free space where OUT lives (and its temp folder), then "
    elif "Errno 13" in cause or "Errno 30" in cause or "Permission denied" in cause:
        hint = "make OUT writable, then "
    return (
        f"the pipeline failed: {cause[:500]}; no COMPLETED was written. To finish: {hint}"
        "rerun the same command (shards already published are kept and rewritten identically)"
    )


def _run_and_wait(pipeline: Any) -> None:
    result = None
    try:
        result = pipeline.run()
        state = result.wait_until_finish()
    except Exception as error:  # Beam wraps worker errors; keep the cause's own words
        raise BuildError(_failure_message(error)) from error
    finally:
        client = getattr(result, "client", None)  # the DaskRunner's dask.distributed Client
        if client is not None:
            client.close()
    if state is not None and str(state) not in ("DONE", "PipelineState.DONE"):
        raise BuildError(f"the pipeline ended in state {state}; see the runner's logs, then rerun")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc. Beam starts its workers through ``/bin/sh
    -c``, so the workers are grandchildren: killing only the children would orphan them."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in glob.glob(f"/proc/{parent}/task/*/children"):
            with suppress(OSError), open(task) as handle:
                children = [int(child) for child in handle.read().split()]
            found.extend(children)
            pending.extend(children)
    return found


@contextmanager
def _stop_on_interrupt(out: str) -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM stops a build at once: Beam's runners otherwise finish the
    job first. Nothing is lost: every file is published whole (temp + rename) and each shard's
    receipt lets the rerun skip it, so the worker processes are ended and the driver exits
    with 130 after saying how to resume."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (an embedding app)
        return

    def stop(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        release_stderr()  # the decoder-note filter must not swallow these last words
        sys.stderr.write(
            f"\nvoxshard: {name}: stopping the build; OUT {out!r} keeps every finished shard. "
            "Rerun the same command to resume.\n"
        )
        sys.stderr.flush()
        for pid in _descendants(os.getpid()):
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # mid-write files are temp names: safe
        os._exit(130)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _scratch_for_dry_run(plan: RunPlan) -> tuple[str, bool]:
    """Where the dry run's summary is written: a local temp folder, or on a remote runner
    --temp_location (its workers cannot reach this machine). Returns (folder, is_local)."""
    if plan.kind != "remote":
        return tempfile.mkdtemp(prefix="voxshard-dry-run-"), True
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    temp = plan.options.view_as(GoogleCloudOptions).temp_location
    if not temp:
        raise ConfigError(
            "--dry-run on a remote runner writes its summary to --temp_location: pass one"
        )
    return storage.join(temp, f"voxshard-dry-run-{time.time_ns()}"), False


def wired(
    config: BuildConfig, plan: RunPlan, sources: Sequence[str], dry_run_path: str | None = None
) -> Any:
    """A Beam pipeline with the build wired onto it for ``plan``'s runner (not run)."""
    import apache_beam as beam

    from voxshard.pipelines.build import build_pipeline

    pipeline = beam.Pipeline(runner=plan.runner, options=plan.options)
    build_pipeline(
        pipeline,
        config,
        sources,
        dry_run_path=dry_run_path,
        buckets=buckets(plan),
        processes=plan.processes,
        spread_tables=not plan.in_process,
    )
    return pipeline


def dry_run(config: BuildConfig, plan: RunPlan) -> dict[str, Any]:
    """Parse and plan only: returns what the build would write; writes nothing in OUT."""
    from voxshard.pipelines.build import graph_outline

    sources = get_corpus(config.source).list_sources(config.corpus_options())
    graph = graph_outline(wired(config, plan, sources))  # the build's graph, shown
    folder, local = _scratch_for_dry_run(plan)
    path = storage.join(folder, DRY_RUN_FILE)
    try:
        _run_and_wait(wired(config, plan, sources, dry_run_path=path))
        summary: dict[str, Any] = json.loads(storage.read_bytes(path))
    finally:
        if local:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            storage.remove_tree(folder)
    summary["sources"] = len(sources)
    summary["graph"] = graph
    return summary


def run_build(
    config: BuildConfig,
    beam_args: Sequence[str] = (),
    overwrite: bool = False,
    dry_run_only: bool = False,
    progress_interval_s: float | None = 10.0,
) -> dict[str, Any]:
    """Run a whole build. Returns stats.json's content; raises BuildError when incomplete.

    ``dry_run_only`` (``voxshard build --dry-run``, or Beam's ``--dry_run=True`` on a local
    runner) parses and plans, writes nothing, and returns the plan's summary. Beam's
    ``--dry_run=True`` on a remote runner builds and validates the job without submitting it;
    OUT is not touched and the returned dict says so.
    """
    plan = plan_run(config, beam_args)
    problems = check_languages(config)
    if problems:
        raise ConfigError(problems)
    if dry_run_only or (plan.beam_dry_run and plan.kind != "remote"):
        return dry_run(config, plan)
    if plan.beam_dry_run:
        return _validate_remote_job(config, plan)
    with build_lock(config.out):
        if prepare_output(config, overwrite):
            stats = json.loads(storage.read_bytes(storage.join(config.out, "stats.json")))
            LOG.info("%s already holds this build (same options): nothing to do", config.out)
            return {**stats, "already_built": True}
        return _build(config, plan, progress_interval_s)


def _validate_remote_job(config: BuildConfig, plan: RunPlan) -> dict[str, Any]:
    """Beam's --dry_run=True on a remote runner: build and validate the job, submit nothing."""
    from voxshard.pipelines.build import graph_outline

    sources = get_corpus(config.source).list_sources(config.corpus_options())
    pipeline = wired(config, plan, sources)
    graph = graph_outline(pipeline)
    result = pipeline.run()
    transforms = getattr(getattr(result, "job", None), "proto_pipeline", None)
    steps = (
        None
        if transforms is None
        else sum(1 for t in transforms.components.transforms.values() if not t.subtransforms)
    )
    LOG.info("dry run: the job was built and validated, not submitted")
    return {
        "dry_run": True,
        "validated_only": True,
        "sources": len(sources),
        "steps": steps,
        "graph": graph,
    }


def _shard_pool(config: BuildConfig, plan: RunPlan) -> Any:
    """The local write processes of an in-process build with --workers > 1 (else nothing)."""
    if plan.processes <= 1:
        return nullcontext()
    from voxshard.pipelines import shard_pool
    from voxshard.pipelines.build import shard_context

    return shard_pool.opened(config.out, shard_context(config), plan.processes)


def _build(config: BuildConfig, plan: RunPlan, progress_interval_s: float | None) -> dict[str, Any]:
    sources = get_corpus(config.source).list_sources(config.corpus_options())
    LOG.info("%s: %d source table(s) under %s", config.source, len(sources), config.root)
    started = time.monotonic()
    if plan.in_process:
        _use_system_allocator_for_arrow()
        _freeze_imported_objects()
    pipeline = wired(config, plan, sources)
    reporter = Progress(config.out, progress_interval_s) if progress_interval_s else nullcontext()
    # the progress reporter has looked at the terminal; now libmpg123's notes may be filtered
    quiet = quiet_decoder_notes(enabled=not LOG.isEnabledFor(logging.DEBUG))
    # the write processes are forked after fd 2 is filtered, before any other thread starts
    with _stop_on_interrupt(config.out), quiet, _shard_pool(config, plan), reporter:
        _run_and_wait(pipeline)
    result_path = storage.join(config.out, WORK_DIR, "result.json")
    if not storage.exists(result_path):
        raise BuildError(f"the pipeline finished without finalizing {config.out!r}; rerun it")
    outcome = json.loads(storage.read_bytes(result_path))
    if not outcome["ok"]:
        raise BuildError("build incomplete: " + "; ".join(outcome["problems"]))
    remove_work_dir(config.out)
    stats: dict[str, Any] = outcome["stats"]
    LOG.info(
        "built %s in %.1f s: %d written, %d rejected, %.3f h",
        config.out,
        time.monotonic() - started,
        stats["written"],
        stats["rejected"],
        stats["hours"],
    )
    return stats


def check_languages(config: BuildConfig) -> list[str]:
    """A problem for each --languages tag the corpus under ROOT does not have, saying what it
    has instead: the members of a macrolanguage asked for by its code (zh is zho; Common
    Voice's zh-CN is cmn), else the nearest tags."""
    from voxshard.encoders.lang2vec import macrolanguage_of
    from voxshard.schemas import UnknownLanguageError, resolve_language

    spec = get_corpus(config.source)
    if config.languages is None or spec.list_languages is None:
        return []
    present: dict[str, list[str]] = {}
    for tag in spec.list_languages(config.corpus_options()):
        try:
            present.setdefault(resolve_language(tag), []).append(tag)
        except UnknownLanguageError:
            continue
    problems = []
    for tag in config.languages:
        code = resolve_language(tag)
        if code in present:
            continue
        members = sorted(c for c in present if macrolanguage_of().get(c) == code)
        has = ", ".join(f"{t} ({c})" for c in sorted(present) for t in present[c]) or "nothing"
        if members:
            found = ", ".join(f"{t} ({c})" for c in members for t in present[c])
            problems.append(
                f"--languages {tag}: {tag} is {code}, a macrolanguage; {config.source} under "
                f"ROOT has it as {found}: pass those tags or codes"
            )
        else:
            problems.append(
                f"--languages {tag}: {config.source} under ROOT has no {tag} ({code}); it has {has}"
            )
    return problems
