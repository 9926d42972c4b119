"""The build graph: source tables -> planned shards -> WebDataset shards + index.

    tables | ParseSources | PlanShards | WriteShards | Finalize

Only metadata crosses a GroupByKey: source items (by a bucket of their key, then of their
audio file), the files of a group (to plan its shards) and the files of a shard, in
compressed batches (pipelines/batches.py: Beam's in-process runner holds every element
between stages). Audio is read, decoded, encoded and written in one step per shard. Each
step emits one stream of typed elements (keyed batches, plus Reject / Count / GroupPlan /
ShardInfo events) that is split by type; every event flows into the one Finalize. The graph
uses no tagged outputs or side inputs, so it runs the same on the in-process runner, the
DaskRunner and Dataflow; only an in-process build with ``--workers N`` emits from
finish_bundle (its local write processes, pipelines/shard_pool.py).

The logic lives in plain, tested functions (records, plan, write, index); the DoFns only wire.
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam

from voxshard.corpora import SourceUtterance, get_corpus
from voxshard.corpora.geo_table import read_geo_table
from voxshard.pipelines import index
from voxshard.pipelines.batches import Batcher, Unpacked, unpack
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.outdir import WORK_DIR
from voxshard.pipelines.plan import (
    Group,
    GroupPlan,
    ShardKey,
    dry_run_summary,
    plan_file,
    plan_group,
)
from voxshard.pipelines.progress import PLAN_DIR
from voxshard.pipelines.records import Count, Reject, merge_duplicates
from voxshard.pipelines.shards import stable_hash
from voxshard.pipelines.write import ShardContext, ShardResult, write_shard
from voxshard.schemas import SCHEMA_VERSION, CorpusFormatError, storage

TOOL_VERSION = "0.1.0"
SHUFFLE_BYTES = "shuffle_bytes"  # Beam counter namespace of measure_shuffle


# ---------------------------------------------------------------- DoFns (wiring only)


def _bucket(text: str, buckets: int) -> int:
    return stable_hash(text) % buckets


class ParseTable(beam.DoFn):  # type: ignore[misc]
    """A table path -> its SourceUtterances in batches by key bucket, a Reject per malformed
    row, Count("parsed")."""

    def __init__(self, config: BuildConfig, buckets: int) -> None:
        self.config = config
        self.buckets = buckets

    def process(self, table: str) -> Iterator[tuple[int, bytes] | Reject | Count]:
        options = self.config.corpus_options()
        batcher = Batcher(lambda item: _bucket(item.key, self.buckets))
        parsed = 0
        try:
            for item in get_corpus(self.config.source).parse_source(options, table):
                if isinstance(item, CorpusFormatError):
                    yield Reject(None, item.origin, "parse", item.reason, item.detail)
                else:
                    parsed += 1
                    yield from batcher.add(item)
        except CorpusFormatError as error:  # the whole table is unusable
            yield Reject(None, error.origin, "parse", error.reason, error.detail)
        except (OSError, ValueError, RecursionError) as error:  # unreadable, undecodable
            yield Reject(
                None, table, "parse", "unreadable table", f"{type(error).__name__}: {error}"
            )
        yield from batcher.flush()
        yield Count("parsed", parsed)


class MergeDuplicates(beam.DoFn):  # type: ignore[misc]
    """(key bucket, batches) -> per key the one item kept (in batches by audio bucket),
    Rejects for the others, Count("merged")."""

    def __init__(self, config: BuildConfig, buckets: int) -> None:
        self.config = config
        self.buckets = buckets

    def setup(self) -> None:
        self.options = self.config.corpus_options()

    def process(
        self, element: tuple[int, Iterable[bytes]]
    ) -> Iterator[tuple[int, bytes] | Reject | Count]:
        by_key: dict[str, list[SourceUtterance]] = defaultdict(list)
        for item in unpack(element[1]):
            by_key[item.key].append(item)
        batcher = Batcher(lambda item: _bucket(item.audio_path, self.buckets))
        merged = 0
        for key in sorted(by_key):
            kept, rejects, count = merge_duplicates(by_key[key], self.options)
            merged += count
            yield from batcher.add(kept)
            yield from rejects
        yield from batcher.flush()
        if merged:
            yield Count("merged", merged)


class PlanFile(beam.DoFn):  # type: ignore[misc]
    """(audio bucket, batches) -> per audio file a FileWork per group (in batches by group),
    Rejects known before decoding."""

    def __init__(self, config: BuildConfig) -> None:
        self.config = config

    def setup(self) -> None:
        self.base_dir = self.config.corpus_options().base_dir
        self.audio = self.config.audio()

    def process(
        self, element: tuple[int, Iterable[bytes]]
    ) -> Iterator[tuple[Group, bytes] | Reject]:
        by_file: dict[str, list[SourceUtterance]] = defaultdict(list)
        for item in unpack(element[1]):
            by_file[item.audio_path].append(item)
        batcher = Batcher(lambda work: work.group)
        for audio_path in sorted(by_file):
            for result in plan_file(audio_path, by_file[audio_path], self.base_dir, self.audio):
                if isinstance(result, Reject):
                    yield result
                else:
                    yield from batcher.add(result)
        yield from batcher.flush()


class PlanGroup(beam.DoFn):  # type: ignore[misc]
    """(group, batches of FileWork) -> (shard key, FileWork) pairs in batches by shard, and
    the group's GroupPlan (also published in OUT/.work/plan/ for the driver's progress,
    unless this is a dry run)."""

    def __init__(self, config: BuildConfig, publish: bool) -> None:
        self.config = config
        self.publish = publish

    def process(
        self, element: tuple[Group, Iterable[bytes]]
    ) -> Iterator[tuple[ShardKey, bytes] | GroupPlan]:
        group, batches = element
        summary, assigned = plan_group(group, Unpacked(batches), self.config.shard_size_bytes)
        if self.publish:
            language, corpus, split = group
            path = storage.join(
                self.config.out, WORK_DIR, PLAN_DIR, language, f"{corpus}-{split}.json"
            )
            storage.write_atomic(path, index.dumps_json(summary.to_dict()))
        yield summary
        batcher = Batcher(lambda _work: None)  # keyed by the shard each file was given
        for shard_key, work in assigned:
            yield from batcher.add(work, key=shard_key)
        yield from batcher.flush()


class WriteShard(beam.DoFn):  # type: ignore[misc]
    """(shard key, files) -> its ShardInfo (unless every item was rejected) and Rejects.

    With ``processes`` > 1 (an in-process build's ``--workers``) the shards are written by
    that many local processes (pipelines/shard_pool.py) and the results of a bundle's last
    shards are emitted when it finishes; elsewhere the runner's workers are the parallelism
    and each shard is written where it arrives."""

    def __init__(self, config: BuildConfig, processes: int = 1) -> None:
        self.config = config
        self.processes = processes
        self.pool: Any = None
        self.own_pool = False

    def setup(self) -> None:
        self.context = shard_context(self.config)
        if self.processes > 1:
            from voxshard.pipelines import shard_pool

            # the driver forked them before the run (runner.py); else fork them here
            self.pool = shard_pool.find(self.config.out)
            if self.pool is None:
                self.pool, self.own_pool = shard_pool.ShardPool(self.context, self.processes), True

    def process(self, element: tuple[ShardKey, Iterable[bytes]]) -> Iterator[Any]:
        if self.pool is None:
            yield from _shard_events(write_shard(self.context, element[0], Unpacked(element[1])))
            return
        for result in self.pool.submit(element[0], list(element[1])):
            yield from _shard_events(result)

    def finish_bundle(self) -> Iterator[Any]:
        if self.pool is None:
            return
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        window = GlobalWindow()
        for result in self.pool.drain():
            for event in _shard_events(result):
                yield WindowedValue(event, window.max_timestamp(), [window])

    def teardown(self) -> None:
        if self.own_pool:
            self.pool.close()


def shard_context(config: BuildConfig) -> ShardContext:
    """What writing a shard needs, from the build's options."""
    return ShardContext(
        out=config.out,
        options=config.corpus_options(),
        audio=config.audio(),
        text=config.text(),
        geo_table=None if config.geo is None else read_geo_table(config.geo),
        language_geo=config.language_geo,
        verify_copies=config.verify_copies,
    )


def _shard_events(result: ShardResult) -> Iterator[Any]:
    info, rejects, clipped = result
    if info is not None:
        yield info
    yield from rejects
    if clipped:
        yield Count("clipped_samples", clipped)


class FinalizeBuild(beam.DoFn):  # type: ignore[misc]
    """(None, every event) -> rejects.jsonl, index, stats.json, COMPLETED (index.finalize)."""

    def __init__(self, config: BuildConfig) -> None:
        self.config = config

    def process(self, element: tuple[None, Iterable[object]]) -> Iterator[bool]:
        completed = {
            "schema_version": SCHEMA_VERSION,
            "tool_version": TOOL_VERSION,
            "config_hash": self.config.config_hash(),
        }
        result = index.finalize_events(
            self.config.out,
            element[1],
            self.config.max_error_rate,
            completed,
            options=self.config.identity(),
        )
        yield bool(result["ok"])


class SummarizePlan(beam.DoFn):  # type: ignore[misc]
    """(None, parse and plan events) -> the dry run's summary, written to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, element: tuple[None, Iterable[object]]) -> Iterator[bool]:
        summary = dry_run_summary(element[1])
        storage.write_atomic(self.path, json.dumps(summary, sort_keys=True).encode())
        yield True


# ---------------------------------------------------------------- composite transforms


def _is(element: object, kind: type | tuple[type, ...]) -> bool:
    return isinstance(element, kind)


def _is_not(element: object, kind: type | tuple[type, ...]) -> bool:
    return not isinstance(element, kind)


def split_by_type(pcoll: Any, kind: type | tuple[type, ...], label: str) -> tuple[Any, Any]:
    """(elements of ``kind``, all others): a step's one output stream, divided. Each step's
    events are split off before they meet the others': the in-process runner materializes a
    Flatten of streams from different stages until its consumer runs, so a Flatten fed whole
    streams held every work batch of the build (100k items: +37 MiB of peak RSS)."""
    return (
        pcoll | f"{label}Work" >> beam.Filter(_is, kind),
        pcoll | f"{label}Events" >> beam.Filter(_is_not, kind),
    )


def _measured(element: Any, label: str) -> Any:
    """Count the pickled bytes of an element on its way into a GroupByKey."""
    size = len(pickle.dumps(element, protocol=pickle.HIGHEST_PROTOCOL))
    beam.metrics.Metrics.counter(SHUFFLE_BYTES, label).inc(size)
    beam.metrics.Metrics.counter(SHUFFLE_BYTES, f"{label}.elements").inc()
    return element


def group_by_key(pcoll: Any, label: str, measure: bool) -> Any:
    """GroupByKey; with ``measure`` the bytes that enter it are counted (benchmarks)."""
    if measure:
        pcoll = pcoll | f"Measure{label}" >> beam.Map(_measured, label)
    return pcoll | label >> beam.GroupByKey()


def _to_one_key(event: object) -> tuple[None, object]:
    return None, event


class ParseSources(beam.PTransform):  # type: ignore[misc]
    """Table paths -> (one SourceUtterance per key, in batches by audio bucket; events:
    parse/dedup Rejects, Counts)."""

    def __init__(self, config: BuildConfig, buckets: int, measure: bool = False) -> None:
        super().__init__()
        self.config = config
        self.buckets = buckets
        self.measure = measure

    def expand(self, tables: Any) -> tuple[Any, Any]:
        parsed = tables | "Parse" >> beam.ParDo(ParseTable(self.config, self.buckets))
        items, parse_events = split_by_type(parsed, tuple, "Parsed")
        deduped = group_by_key(items, "GroupByItemKey", self.measure) | "Dedup" >> beam.ParDo(
            MergeDuplicates(self.config, self.buckets)
        )
        unique, dedup_events = split_by_type(deduped, tuple, "Deduped")
        return unique, (parse_events, dedup_events) | "Events" >> beam.Flatten()


class PlanShards(beam.PTransform):  # type: ignore[misc]
    """Unique items -> ((shard key, FileWork) pairs, events: plan Rejects and GroupPlans)."""

    def __init__(self, config: BuildConfig, publish: bool, measure: bool = False) -> None:
        super().__init__()
        self.config = config
        self.publish = publish
        self.measure = measure

    def expand(self, items: Any) -> tuple[Any, Any]:
        by_audio = group_by_key(items, "GroupByAudio", self.measure)
        files, file_events = split_by_type(
            by_audio | "PlanFiles" >> beam.ParDo(PlanFile(self.config)), tuple, "Files"
        )
        planned, group_events = split_by_type(
            group_by_key(files, "GroupByGroup", self.measure)
            | "PlanGroups" >> beam.ParDo(PlanGroup(self.config, self.publish)),
            tuple,
            "Planned",
        )
        return planned, (file_events, group_events) | "Events" >> beam.Flatten()


class WriteShards(beam.PTransform):  # type: ignore[misc]
    """(shard key, FileWork) pairs -> events: a ShardInfo per written shard, Rejects."""

    def __init__(self, config: BuildConfig, measure: bool = False, processes: int = 1) -> None:
        super().__init__()
        self.config = config
        self.measure = measure
        self.processes = processes

    def expand(self, planned: Any) -> Any:
        shards = group_by_key(planned, "GroupByShard", self.measure)
        return shards | "Write" >> beam.ParDo(WriteShard(self.config, self.processes))


class Finalize(beam.PTransform):  # type: ignore[misc]
    """Every event -> one worker that writes the index, rejects, stats and COMPLETED (or,
    given ``dry_run_path``, the dry run's summary there)."""

    def __init__(
        self, config: BuildConfig, dry_run_path: str | None = None, measure: bool = False
    ) -> None:
        super().__init__()
        self.config = config
        self.dry_run_path = dry_run_path
        self.measure = measure

    def expand(self, events: Any) -> Any:
        gathered = group_by_key(events | "OneKey" >> beam.Map(_to_one_key), "Gather", self.measure)
        if self.dry_run_path is not None:
            return gathered | "Summarize" >> beam.ParDo(SummarizePlan(self.dry_run_path))
        return gathered | "Finish" >> beam.ParDo(FinalizeBuild(self.config))


LOCAL_BUCKETS = 64  # key / audio buckets per in-process worker
REMOTE_BUCKETS = 16_384  # enough keys to spread planning over thousands of cores


def build_pipeline(
    p: Any,
    config: BuildConfig,
    sources: Sequence[str],
    dry_run_path: str | None = None,
    measure_shuffle: bool = False,
    buckets: int = LOCAL_BUCKETS,
    processes: int = 1,
    spread_tables: bool = True,
) -> None:
    """Wire the build onto pipeline ``p``: ``sources`` are the corpus's table paths. With
    ``dry_run_path`` only parse and plan run, and their summary is written there (nothing
    in OUT). ``measure_shuffle`` counts the bytes entering every GroupByKey; ``buckets``
    is how many key and audio buckets items travel in and ``processes`` how many local
    processes write shards (in-process builds); ``spread_tables`` reshuffles the table paths
    so that many workers parse them (Beam's Create does; an in-process build, whose one
    worker parses them all, saves the Reshuffle's five steps). The output depends on none."""
    tables = p | "ListSources" >> beam.Create(list(sources), reshuffle=spread_tables)
    items, parse_events = tables | "ParseSources" >> ParseSources(config, buckets, measure_shuffle)
    planned, plan_events = items | "PlanShards" >> PlanShards(
        config, publish=dry_run_path is None, measure=measure_shuffle
    )
    streams = [parse_events, plan_events]
    if dry_run_path is None:
        streams.append(planned | "WriteShards" >> WriteShards(config, measure_shuffle, processes))
    _ = (
        tuple(streams)
        | "AllEvents" >> beam.Flatten()
        | "Finalize" >> Finalize(config, dry_run_path, measure_shuffle)
    )


def graph_outline(p: Any) -> dict[str, list[str]]:
    """The steps of pipeline ``p`` under each top-level step, in the order applied: a leaf's
    label, or the first part of a deeper one (Beam's own composites, such as Create's
    Reshuffle, stay one entry), without arguments in parentheses. A step holding a
    GroupByKey ends in ``*``: what crosses it is metadata. Shown by ``voxshard build
    --dry-run``, so that the graph a build would run can be read before it runs."""
    outline: dict[str, list[str]] = {}
    composite: dict[str, str] = {}  # top-level step -> the composite its last entry is

    class Leaves(beam.pipeline.PipelineVisitor):  # type: ignore[misc]
        def visit_transform(self, node: Any) -> None:
            top, _, rest = node.full_label.partition("/")
            part = rest.split("/")[0]
            name = part.split("(")[0] or type(node.transform).__name__
            grouped = isinstance(node.transform, beam.GroupByKey)
            steps = outline.setdefault(top, [])
            if "/" in rest and composite.get(top) == part:
                grouped = steps.pop().endswith("*") or grouped
            composite[top] = part if "/" in rest else ""
            steps.append(name + ("*" if grouped else ""))

    p.visit(Leaves())
    return outline
