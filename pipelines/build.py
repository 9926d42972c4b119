"""The build: source tables -> WebDataset shards + index, with Apache Beam.

``build_pipeline(p, config, sources)`` wires plain functions (records, audio, shards, index) so
tests can drive it with TestPipeline; ``run_build(config, beam_args)`` prepares OUT, runs it
and reports. Only names and frozen configs cross process boundaries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import apache_beam as beam

from voxshard.corpora import CorpusOptions, SourceUtterance, get_corpus
from voxshard.corpora.geo_table import read_geo_table
from voxshard.normalizers import EMPTY, check_policy, read_lexicon
from voxshard.pipelines import index
from voxshard.pipelines.audio import AudioConfig
from voxshard.pipelines.faults import crash_point
from voxshard.pipelines.records import Reject, TextOptions, make_samples, merge_duplicates
from voxshard.pipelines.shards import (
    Sample,
    ShardInfo,
    assign_bucket,
    bucket_count,
    cut_parts,
    shard_name,
    stable_hash,
    write_tar,
)
from voxshard.pipelines.spill import SampleRef, SpillReader, SpillWriter
from voxshard.schemas import (
    SCHEMA_VERSION,
    BuildError,
    ConfigError,
    CorpusFormatError,
    UnknownLanguageError,
    resolve_language,
    storage,
)

LOG = logging.getLogger("voxshard")
TOOL_VERSION = "0.1.0"
MB = 1_000_000
REJECTS = "rejects"
MERGED = "merged"
PARSED = "parsed"  # items parsed from one table (a count)
# Buckets for the pre-decode GroupByKeys: enough for local worker processes, and on Dataflow
# enough keys to spread MakeSamples over thousands of cores.
LOCAL_KEY_BUCKETS = 64
REMOTE_KEY_BUCKETS = 16384
BATCH_ITEMS = 256  # items per (bucket, batch) element before the pre-decode GroupByKeys
MAX_PENDING_ITEMS = 16384  # items a DoFn holds while it fills batches


@dataclass(frozen=True)
class BuildConfig:
    """Every option of one build. Validated at construction; all problems reported at once."""

    source: str
    root: str
    out: str
    languages: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    sample_rate: int = 16000
    shard_size_mb: float = 256.0
    min_duration_s: float = 0.2
    max_duration_s: float = 60.0
    max_error_rate: float = 0.05
    workers: int = 1
    settings: tuple[tuple[str, str], ...] = ()  # corpus-specific: (name, value) pairs
    geo: str | None = None  # --geo FILE
    language_geo: bool = True  # fall back to the language's location (geo.source "language")
    normalize: str = "canonical"  # transcript policy
    lexicon: str | None = None  # --lexicon FILE (latin<TAB>native)
    scheme: str | None = None  # to-native romanization scheme (default: per language)

    def __post_init__(self) -> None:
        problems = []
        try:
            problems.extend(get_corpus(self.source).check_settings(self.settings))
        except ConfigError as error:
            problems.extend(error.problems)
        if self.geo is not None:
            try:
                read_geo_table(self.geo)
            except ConfigError as error:
                problems.extend(error.problems)
        problems.extend(f"--normalize: {p}" for p in check_policy(self.normalize, self.scheme))
        if self.lexicon is not None:
            try:
                read_lexicon(self.lexicon)
            except ConfigError as error:
                problems.extend(error.problems)
        if not storage.exists(self.root):
            problems.append(f"ROOT {self.root!r} does not exist")
        if self.sample_rate < 1000 or self.sample_rate > 192000:
            problems.append(f"--sample-rate {self.sample_rate} is outside 1000..192000 Hz")
        if not self.shard_size_mb > 0:
            problems.append(f"--shard-size {self.shard_size_mb} MB must be positive")
        if self.min_duration_s < 0 or self.max_duration_s <= self.min_duration_s:
            problems.append(
                f"--min-duration {self.min_duration_s} s must be >= 0 and below "
                f"--max-duration {self.max_duration_s} s"
            )
        if not 0.0 <= self.max_error_rate <= 1.0:
            problems.append(f"--max-error-rate {self.max_error_rate} must be within 0..1")
        if self.workers < 1:
            problems.append(f"--workers {self.workers} must be at least 1")
        for tag in self.languages or ():
            try:
                resolve_language(tag)
            except UnknownLanguageError as error:
                problems.append(f"--languages: {error}")
        if self.splits is not None and not all(self.splits):
            problems.append("--splits has an empty name")
        if problems:
            raise ConfigError(problems)

    @property
    def shard_size_bytes(self) -> int:
        return int(self.shard_size_mb * MB)

    def text(self) -> TextOptions:
        lexicon = read_lexicon(self.lexicon) if self.lexicon is not None else EMPTY
        return TextOptions(self.normalize, lexicon, self.scheme)

    def audio(self) -> AudioConfig:
        return AudioConfig(self.sample_rate, self.min_duration_s, self.max_duration_s)

    def corpus_options(self) -> CorpusOptions:
        spec = get_corpus(self.source)
        return CorpusOptions(
            root=storage.absolute(self.root),
            splits=self.splits if self.splits is not None else spec.default_splits,
            languages=None
            if self.languages is None
            else frozenset(resolve_language(tag) for tag in self.languages),
            settings=self.settings,
        )

    def identity(self) -> dict[str, Any]:
        """What determines the output bytes (not OUT, not the worker count)."""
        fields = asdict(self)
        fields.pop("out")
        fields.pop("workers")
        fields["root"] = storage.absolute(self.root)
        fields["schema_version"] = SCHEMA_VERSION
        for name in ("geo", "lexicon"):  # a table's content decides the output, not its path
            path = fields[name]
            if path is not None:
                fields[name] = hashlib.sha256(storage.read_bytes(path)).hexdigest()
        return fields

    def config_hash(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()


class _Progress:
    """Logs a worker's progress at most every ``interval_s`` seconds."""

    def __init__(self, what: str, interval_s: float = 5.0) -> None:
        self.what = what
        self.interval_s = interval_s
        self.count = 0
        self.seconds = 0.0
        self.last = time.monotonic()

    def add(self, audio_s: float = 0.0) -> None:
        self.count += 1
        self.seconds += audio_s
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            LOG.info(
                "%s: %d done, %.2f h of audio (pid %d)",
                self.what,
                self.count,
                self.seconds / 3600,
                os.getpid(),
            )


# ---------------------------------------------------------------- Beam DoFns (wiring only)


def pack(items: list[Any], compress: bool = True) -> bytes:
    """A batch as (compressed) pickle bytes: the local runner keeps several copies of every
    element's bytes between stages, and a batch of one corpus's records compresses ~5x.
    Batches that carry FLAC bytes (remote runners) are not compressed again."""
    payload = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    return b"z" + zlib.compress(payload, 1) if compress else b"p" + payload


def unpack_all(batches: Iterable[bytes]) -> Iterator[Any]:
    for batch in batches:
        payload = zlib.decompress(batch[1:]) if batch[:1] == b"z" else batch[1:]
        yield from pickle.loads(payload)


class Batcher:
    """Collects items into (bucket, batch) elements of at most BATCH_ITEMS.

    A GroupByKey costs Beam's local runner far more per element than per byte, so items
    travel in batches of one bucket; ``flush`` hands out what is left."""

    def __init__(self, buckets: int, field: str) -> None:
        self.buckets = buckets
        self.field = field
        self.pending: dict[int, list[SourceUtterance]] = defaultdict(list)
        self.count = 0

    def add(self, item: SourceUtterance) -> Iterator[tuple[int, bytes]]:
        bucket = stable_hash(getattr(item, self.field)) % self.buckets
        batch = self.pending[bucket]
        batch.append(item)
        self.count += 1
        if len(batch) >= BATCH_ITEMS:
            yield bucket, pack(batch)
            self.count -= len(batch)
            self.pending[bucket] = []
        elif self.count >= MAX_PENDING_ITEMS:  # many buckets, few items each: bound memory
            yield from self.flush()

    def flush(self) -> Iterator[tuple[int, bytes]]:
        for bucket in sorted(self.pending):
            if self.pending[bucket]:
                yield bucket, pack(self.pending[bucket])
        self.pending.clear()
        self.count = 0


class ParseSource(beam.DoFn):  # type: ignore[misc]
    """A table path -> (key bucket, batch of SourceUtterances); malformed rows go to the
    rejects output."""

    def __init__(self, config: BuildConfig, key_buckets: int) -> None:
        self.config = config
        self.key_buckets = key_buckets

    def process(self, source: str) -> Iterator[Any]:
        options = self.config.corpus_options()
        spec = get_corpus(self.config.source)
        batcher = Batcher(self.key_buckets, "key")
        parsed = 0
        try:
            for item in spec.parse_source(options, source):
                if isinstance(item, CorpusFormatError):
                    yield beam.pvalue.TaggedOutput(
                        REJECTS, Reject(None, item.origin, "parse", item.reason, item.detail)
                    )
                else:
                    parsed += 1
                    yield from batcher.add(item)
        except CorpusFormatError as error:  # the whole table is unusable
            yield beam.pvalue.TaggedOutput(
                REJECTS, Reject(None, error.origin, "parse", error.reason, error.detail)
            )
        yield from batcher.flush()
        yield beam.pvalue.TaggedOutput(PARSED, parsed)


def group_by(items: Iterable[SourceUtterance], field: str) -> list[list[SourceUtterance]]:
    """A key bucket's items grouped by ``field`` (key or audio_path), in field order."""
    groups: dict[str, list[SourceUtterance]] = defaultdict(list)
    for item in items:
        groups[getattr(item, field)].append(item)
    return [groups[name] for name in sorted(groups)]


class MergeDuplicates(beam.DoFn):  # type: ignore[misc]
    """(key bucket, batches) -> (audio bucket, batch) of one item per key; other listings
    merged or rejected."""

    def __init__(self, config: BuildConfig, key_buckets: int) -> None:
        self.config = config
        self.key_buckets = key_buckets

    def setup(self) -> None:
        self.options = self.config.corpus_options()

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[Any]:
        merged = 0
        batcher = Batcher(self.key_buckets, "audio_path")
        for same_key in group_by(unpack_all(element[1]), "key"):
            kept, rejects, count = merge_duplicates(same_key, self.options)
            merged += count
            yield from batcher.add(kept)
            for reject in rejects:
                yield beam.pvalue.TaggedOutput(REJECTS, reject)
        yield from batcher.flush()
        if merged:
            yield beam.pvalue.TaggedOutput(MERGED, merged)


class MakeSamples(beam.DoFn):  # type: ignore[misc]
    """(audio bucket, items) -> samples: each file is decoded once for all its segments.

    With a spill folder the samples' bytes go to a file per bundle and SampleRefs go on."""

    def __init__(self, config: BuildConfig, spill_dir: str | None = None) -> None:
        self.config = config
        self.spill_dir = spill_dir

    def setup(self) -> None:
        self.options = self.config.corpus_options()
        self.audio = self.config.audio()
        self.geo_table = None if self.config.geo is None else read_geo_table(self.config.geo)
        self.text = self.config.text()
        self.progress = _Progress("audio")
        self.rejected = beam.metrics.Metrics.counter("voxshard", "rejected")
        self.encoded = beam.metrics.Metrics.counter("voxshard", "encoded")
        self.spill: SpillWriter | None = None

    def start_bundle(self) -> None:
        self.spill = None if self.spill_dir is None else SpillWriter(self.spill_dir)

    def finish_bundle(self) -> None:
        if self.spill is not None:
            self.spill.close()

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[Any]:
        batches: dict[tuple[str, str, str], list[Sample | SampleRef]] = defaultdict(list)
        for same_audio in group_by(unpack_all(element[1]), "audio_path"):
            results = make_samples(
                same_audio[0].audio_path,
                same_audio,
                self.options,
                self.audio,
                self.geo_table,
                self.text,
                self.config.language_geo,
            )
            for result in results:
                if isinstance(result, Reject):
                    self.rejected.inc()
                    yield beam.pvalue.TaggedOutput(REJECTS, result)
                else:
                    self.encoded.inc()
                    self.progress.add(result.duration_s)
                    batch = batches[result.group]
                    batch.append(result if self.spill is None else self.spill.add(result))
                    if len(batch) >= BATCH_ITEMS:
                        yield result.group, pack(batch, compress=self.spill is not None)
                        batches[result.group] = []
            crash_point("make-samples")
        for group in sorted(batches):
            if batches[group]:
                yield group, pack(batches[group], compress=self.spill is not None)


class WriteShards(beam.DoFn):  # type: ignore[misc]
    """((group, bucket), samples) -> sorted samples cut into size-bounded tars + index rows.

    Payloads of SampleRefs are read back from the spill one sample at a time."""

    def __init__(self, config: BuildConfig, spill_dir: str | None = None) -> None:
        self.config = config
        self.spill_dir = spill_dir

    def setup(self) -> None:
        self.spill = SpillReader(self.spill_dir or "")

    def teardown(self) -> None:
        self.spill.close()

    def process(
        self,
        element: tuple[tuple[tuple[str, str, str], int], Iterable[bytes]],
        offsets: dict[tuple[tuple[str, str, str], int], int],
    ) -> Iterator[ShardInfo]:
        (group, bucket), values = element
        lang, corpus, split = group
        samples = sorted(unpack_all(values), key=lambda s: s.key)
        start = 0
        number = offsets[(group, bucket)]
        for count in cut_parts([s.tar_bytes for s in samples], self.config.shard_size_bytes):
            part = samples[start : start + count]
            start += count
            relative = f"shards/{lang}/{shard_name(corpus, split, number)}"
            number += 1
            records: list[bytes] = []
            loaded = _keeping_json(self.spill.load_all(part), records)
            num_bytes, sha256 = write_tar(storage.join(self.config.out, relative), loaded)
            index.write_fragment(self.config.out, relative, records)
            LOG.debug("wrote %s (%d samples, %.1f MB)", relative, len(part), num_bytes / MB)
            yield ShardInfo(
                path=relative,
                lang=lang,
                corpus=corpus,
                split=split,
                num_samples=len(part),
                num_bytes=num_bytes,
                duration_s=round(sum(s.duration_s for s in part), 6),
                sha256=sha256,
            )


def _keeping_json(samples: Iterable[Sample], records: list[bytes]) -> Iterator[Sample]:
    """Pass samples through, appending each one's JSON record to ``records``."""
    for sample in samples:
        records.append(sample.json)
        yield sample


def _split_by_bucket(
    group: tuple[str, str, str], batch: bytes, buckets: dict[Any, int]
) -> Iterator[tuple[tuple[tuple[str, str, str], int], bytes]]:
    """A group's packed batch of samples -> one packed batch per shard bucket."""
    parts: dict[int, list[Any]] = defaultdict(list)
    for sample in unpack_all([batch]):
        parts[assign_bucket(sample.key, buckets[group])].append(sample)
    for bucket in sorted(parts):
        yield (group, bucket), pack(parts[bucket], compress=batch[:1] == b"z")


def _sizes(batch: bytes) -> bytes:
    return pack([(sample.key, sample.tar_bytes) for sample in unpack_all([batch])])


def _group_bytes(batch: bytes) -> int:
    return sum(sample.tar_bytes for sample in unpack_all([batch]))


def _part_counts(
    element: tuple[tuple[tuple[str, str, str], int], Iterable[bytes]], bound: int
) -> tuple[tuple[str, str, str], tuple[int, int]]:
    (group, bucket), batches = element
    ordered = [size for _key, size in sorted(unpack_all(batches))]
    return group, (bucket, len(cut_parts(ordered, bound)))


def _offsets(
    element: tuple[tuple[str, str, str], Iterable[tuple[int, int]]],
) -> Iterator[tuple[tuple[tuple[str, str, str], int], int]]:
    group, counts = element
    offset = 0
    for bucket, parts in sorted(counts):
        yield (group, bucket), offset
        offset += parts


def build_pipeline(
    p: Any,
    config: BuildConfig,
    sources: Sequence[str],
    spill_dir: str | None = None,
    key_buckets: int = REMOTE_KEY_BUCKETS,
) -> None:
    """Wire the build onto pipeline ``p``. ``sources`` are the corpus's table paths;
    ``spill_dir`` a local folder all workers share (local runners), or None.

    Items travel in batches grouped by a stable hash of their key (then of their audio path)
    into ``key_buckets`` buckets, not one element per item and group per key: the in-process
    runner holds every element between stages, and its cost is per element more than per
    byte. The output does not depend on the bucket count or the batching.
    """
    bound = config.shard_size_bytes

    parsed = (
        p
        | "ListSources" >> beam.Create(list(sources))
        | "ParseSources"
        >> beam.ParDo(ParseSource(config, key_buckets)).with_outputs(REJECTS, PARSED, main="items")
    )
    deduped = (
        parsed.items
        | "GroupByKey" >> beam.GroupByKey()
        | "MergeDuplicates"
        >> beam.ParDo(MergeDuplicates(config, key_buckets)).with_outputs(
            REJECTS, MERGED, main="items"
        )
    )
    made = (
        deduped.items
        | "GroupByAudio" >> beam.GroupByKey()
        | "MakeSamples"
        >> beam.ParDo(MakeSamples(config, spill_dir)).with_outputs(REJECTS, main="samples")
    )
    samples = made.samples

    buckets = (
        samples
        | "GroupBytes" >> beam.MapTuple(lambda group, batch: (group, _group_bytes(batch)))
        | "SumGroupBytes" >> beam.CombinePerKey(sum)
        | "CountBuckets" >> beam.MapTuple(lambda group, size: (group, bucket_count(size, bound)))
    )
    keyed = samples | "AssignBuckets" >> beam.FlatMap(
        lambda element, n: _split_by_bucket(element[0], element[1], n),
        n=beam.pvalue.AsDict(buckets),
    )
    offsets = (
        keyed
        | "SampleSizes" >> beam.MapTuple(lambda gb, batch: (gb, _sizes(batch)))
        | "GroupSizes" >> beam.GroupByKey()
        | "CountParts" >> beam.Map(_part_counts, bound=bound)
        | "GroupParts" >> beam.GroupByKey()
        | "NumberShards" >> beam.FlatMap(_offsets)
    )
    shards = (
        keyed
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShards(config, spill_dir), beam.pvalue.AsDict(offsets))
    )

    rejects_summary = (
        (parsed[REJECTS], deduped[REJECTS], made[REJECTS])
        | "AllRejects" >> beam.Flatten()
        | "KeyRejects" >> beam.Map(lambda r: (None, r))
        | "GroupRejects" >> beam.GroupByKey()
        | "WriteRejects" >> beam.MapTuple(lambda _k, rs: index.write_rejects(config.out, rs))
    )
    num_items = parsed[PARSED] | "CountItems" >> beam.CombineGlobally(sum)
    num_merged = deduped[MERGED] | "CountMerged" >> beam.CombineGlobally(sum)
    completed = {
        "schema_version": SCHEMA_VERSION,
        "tool_version": TOOL_VERSION,
        "config_hash": config.config_hash(),
    }
    _ = (
        p
        | "Start" >> beam.Create([None])
        | "Finalize"
        >> beam.Map(
            lambda _, shards, rejects, items, merged: index.finalize(
                config.out, shards, rejects, items, merged, config.max_error_rate, completed
            ),
            beam.pvalue.AsList(shards),
            beam.pvalue.AsSingleton(rejects_summary, default_value=None),
            beam.pvalue.AsSingleton(num_items),
            beam.pvalue.AsSingleton(num_merged),
        )
    )


# ---------------------------------------------------------------- driver


def prepare_output(config: BuildConfig, overwrite: bool) -> None:
    """Check OUT and claim it; an interrupted build of the same config resumes in place."""
    out = config.out
    marker_path = storage.join(out, index.MARKER)
    if storage.isdir(out) and storage.listdir(out):
        if overwrite:
            index.clear_outputs(out)
        elif storage.exists(storage.join(out, "COMPLETED")):
            raise ConfigError(
                f"OUT {out!r} already holds a completed build; pass --overwrite to replace it"
            )
        elif not storage.exists(marker_path):
            raise ConfigError(
                f"OUT {out!r} is not empty and holds no voxshard build; "
                "choose an empty folder or pass --overwrite"
            )
        else:
            previous = json.loads(storage.read_bytes(marker_path)).get("config_hash")
            if previous != config.config_hash():
                raise ConfigError(
                    f"OUT {out!r} holds an unfinished build with other options; "
                    "rerun with the same options or pass --overwrite"
                )
            LOG.info("resuming the unfinished build in %s", out)
            index.remove_temporaries(out)
    elif storage.exists(out) and not storage.isdir(out):
        raise ConfigError(f"OUT {out!r} exists and is not a folder")
    marker = {"config_hash": config.config_hash(), "config": config.identity()}
    try:
        storage.makedirs(out)
        storage.write_atomic(marker_path, index.dumps_json(marker))
    except OSError as error:
        raise BuildError(
            f"cannot write to OUT {out!r}: {error}; choose a writable location"
        ) from error


LOCAL_RUNNERS = frozenset(
    {"DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner"}
)
PACKAGING_OPTIONS = ("setup_file", "extra_packages", "requirements_file", "sdk_container_image")


@dataclass(frozen=True)
class RunPlan:
    """How the pipeline runs: Beam's options plus what voxshard derives from them."""

    runner: Any  # an FnApiRunner instance for local builds; None lets Beam pick --runner
    options: Any
    local: bool
    dry_run: bool


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
        WorkerOptions,
    )

    options = PipelineOptions(list(beam_args))
    runner_name = options.view_as(StandardOptions).runner
    dry_run = bool(options.view_as(TestOptions).dry_run)
    if runner_name == "BundleBasedDirectRunner":  # the local runner that retries bundles
        return RunPlan(None, options, local=True, dry_run=dry_run)
    if runner_name is None or runner_name in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        direct = options.view_as(DirectOptions)
        direct.direct_num_workers = config.workers
        # multi_threading lost large elements before a GroupByKey in Beam 2.77: never used.
        direct.direct_running_mode = "multi_processing" if config.workers > 1 else "in_memory"
        return RunPlan(FnApiRunner(), options, local=True, dry_run=dry_run)

    problems = []
    if not storage.is_remote(config.out):
        problems.append(
            f"OUT {config.out!r} is a local folder, which {runner_name} workers cannot write: "
            "pass a bucket URL such as gs://BUCKET/builds/NAME"
        )
    if not storage.is_remote(config.root):
        message = (
            f"ROOT {config.root!r} is a local folder, which {runner_name} workers cannot read: "
            "copy the corpus to a bucket (gsutil -m rsync -r ROOT gs://BUCKET/corpus) "
            "and pass that URL"
        )
        if dry_run:
            LOG.warning("%s (ignored for --dry_run)", message)
        else:
            problems.append(message)
    for name in ("geo", "lexicon"):
        path = getattr(config, name)
        if path is not None and not storage.is_remote(path) and not dry_run:
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
    return RunPlan(None, options, local=False, dry_run=dry_run)


def _use_system_allocator_for_arrow() -> None:
    """Arrow's default allocator (mimalloc) keeps freed memory for reuse, so the index tables
    of one shard after another raised a local build's peak RSS by tens of MiB; the system
    allocator returns it. Set for this process and the worker processes it starts."""
    import pyarrow as pa

    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    pa.set_memory_pool(pa.system_memory_pool())


def _spill_dir(config: BuildConfig) -> str:
    """A fresh local folder for spilled samples: OUT/.work/spill, or a temp folder when OUT
    is a URL (spill files are read back at random offsets, which local disks do best)."""
    if storage.is_remote(config.out):
        return tempfile.mkdtemp(prefix="voxshard-spill-")
    folder = storage.join(config.out, index.WORK_DIR, "spill")
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted run's spill is never reused
    return folder


def _failure_message(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
    hint = ""
    if "Errno 28" in cause or "No space left" in cause:
        hint = "free space where OUT lives (and its temp folder), "
    elif "Errno 13" in cause or "Errno 30" in cause or "Permission denied" in cause:
        hint = "make OUT writable, "
    return (
        f"the pipeline failed: {cause[:500]}; no COMPLETED was written. To finish: {hint}then "
        "rerun the same command (shards already published are kept and rewritten identically)"
    )


def run_build(
    config: BuildConfig, beam_args: Sequence[str] = (), overwrite: bool = False
) -> dict[str, Any]:
    """Run a whole build. Returns stats.json's content; raises BuildError when incomplete.

    With ``--dry_run=True`` on a remote runner, the job is built and validated but neither
    submitted nor is OUT touched; the returned dict then says so (``{"dry_run": True, ...}``).
    """
    spec = get_corpus(config.source)
    plan = plan_run(config, beam_args)
    if not plan.dry_run:
        prepare_output(config, overwrite)
    sources = spec.list_sources(config.corpus_options())
    LOG.info("%s: %d source table(s) under %s", config.source, len(sources), config.root)
    started = time.monotonic()
    if plan.local:
        _use_system_allocator_for_arrow()
    spill_dir = _spill_dir(config) if plan.local else None
    pipeline = beam.Pipeline(runner=plan.runner, options=plan.options)
    buckets = LOCAL_KEY_BUCKETS * config.workers if plan.local else REMOTE_KEY_BUCKETS
    build_pipeline(pipeline, config, sources, spill_dir, buckets)
    try:
        result = pipeline.run()
    except Exception as error:  # Beam wraps worker errors; keep the cause's own words
        raise BuildError(_failure_message(error)) from error
    finally:
        if spill_dir is not None:
            shutil.rmtree(spill_dir, ignore_errors=True)
    if plan.dry_run:
        job = getattr(result, "job", None)
        transforms = getattr(job, "proto_pipeline", None)
        steps = (
            None
            if transforms is None
            else sum(1 for t in transforms.components.transforms.values() if not t.subtransforms)
        )
        LOG.info("dry run: the job was built and validated, not submitted")
        return {"dry_run": True, "sources": len(sources), "steps": steps}
    state = result.wait_until_finish()
    if str(state) not in ("DONE", "PipelineState.DONE"):
        raise BuildError(f"the pipeline ended in state {state}; see the runner's logs, then rerun")
    result_path = storage.join(config.out, index.WORK_DIR, "result.json")
    if not storage.exists(result_path):
        raise BuildError(f"the pipeline finished without finalizing {config.out!r}; rerun it")
    outcome = json.loads(storage.read_bytes(result_path))
    if not outcome["ok"]:
        raise BuildError("build incomplete: " + "; ".join(outcome["problems"]))
    index.remove_work_dir(config.out)
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
