"""Stream a build's shards into language-balanced, duration-bucketed batches.

Each language has an endless stream over its shards (reshuffled every epoch from the seed),
read with webdataset straight from the tars. Under DDP a rank reads every world-th shard of a
language (or every world-th sample when a language has fewer shards than ranks), so ranks
see different data, and the streams never end, so every rank makes the same number of
steps. A batch draws P languages with replacement, p ~ hours ** alpha, and takes K
utterances from each, picked from a per-language buffer for durations close to a drawn
bucket length (limiting padding); K follows from ``batch_seconds``. Longer utterances are
randomly cropped to the bucket length. A sample that does not decode is skipped and counted.

The position is part of the checkpoint: the sampler's RNG state, each stream's cursor, and
the identity (shard, index) of every buffered utterance, so a resumed run draws exactly the
batches an uninterrupted run would have.
"""

from __future__ import annotations

import copy
import io
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from voxshard.schemas import ConfigError, storage
from voxshard.schemas.tario import ShardFormatError, iter_members
from voxshard.training.config import DataConfig

SAMPLE_RATE = 16000  # voxshard build's default; a build's own rate is in its index


@dataclass
class Utterance:
    key: str
    language: str
    audio: np.ndarray  # float32 mono at the builds' rate
    lat: float
    lon: float
    speaker: str | None
    ref: tuple[str, int]  # (shard path, sample index): how a checkpoint names it
    geo_from_language: bool = False  # the build placed it at its language (geo.source)


@dataclass
class ShardSet:
    """The shards of the chosen splits, by language, with their audio hours."""

    shards: dict[str, list[str]] = field(default_factory=dict)
    hours: dict[str, float] = field(default_factory=dict)
    sample_rate: int = SAMPLE_RATE  # Hz, the builds' one rate (``build --sample-rate``)


def build_sample_rate(build: str) -> int | None:
    """The audio rate of a completed build, from its index's ``sample_rate`` column (one
    value: a build resamples everything to one rate); None when it holds no utterance."""
    import pyarrow.parquet as pq

    # one small column: no Arrow thread pool, whose threads still running at exit beside
    # torch's aborted `voxshard train` ("terminate called without an active exception")
    # in about half of the runs that stopped on a settings error on a busy machine
    with storage.open_read(storage.join(build, "utterances.parquet")) as handle:
        column = pq.read_table(handle, columns=["sample_rate"], use_threads=False).column(
            "sample_rate"
        )
    rates = sorted({int(rate) for rate in column.to_pylist() if rate is not None})
    if len(rates) > 1:
        raise ConfigError(f"{build!r} mixes sample rates {rates}: verify or rebuild it")
    return rates[0] if rates else None


def discover(builds: list[str], splits: tuple[str, ...]) -> ShardSet:
    found = ShardSet()
    for build in builds:
        listing = storage.join(build, "shards.jsonl")
        if not storage.isfile(listing) or not storage.isfile(storage.join(build, "COMPLETED")):
            raise ConfigError(f"{build!r} is not a completed voxshard build (no COMPLETED)")
        for line in storage.read_bytes(listing).decode("utf-8").splitlines():
            if line.strip():
                shard = json.loads(line)
                if shard["split"] not in splits:
                    continue
                found.shards.setdefault(shard["lang"], []).append(
                    storage.join(build, shard["path"])
                )
                found.hours[shard["lang"]] = (
                    found.hours.get(shard["lang"], 0.0) + shard["duration_s"] / 3600
                )
    if not found.shards:
        raise ConfigError(f"no shards of splits {', '.join(splits)} in {', '.join(builds)}")
    rates = {build: rate for build in builds if (rate := build_sample_rate(build)) is not None}
    if len(set(rates.values())) > 1:
        listed = ", ".join(f"{build} {rate} Hz" for build, rate in rates.items())
        raise ConfigError(
            f"the builds have different sample rates ({listed}): train on builds of one "
            "rate, or rebuild with voxshard build --sample-rate"
        )
    found.sample_rate = next(iter(rates.values()), SAMPLE_RATE)
    for paths in found.shards.values():
        paths.sort()
    return found


def language_probabilities(hours: dict[str, float], alpha: float) -> dict[str, float]:
    """p_lang ~ hours ** alpha (alpha 0: uniform; 1: proportional to data)."""
    weights = {lang: max(h, 1e-9) ** alpha for lang, h in sorted(hours.items())}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


class CorruptCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, error: Exception) -> bool:  # a webdataset handler: skip and go on
        self.count += 1
        return True


# What a corrupt sample raises: bad JSON or fields (ValueError, KeyError, TypeError from a
# record of the wrong shape), undecodable FLAC (soundfile's LibsndfileError is a RuntimeError).
CORRUPT_SAMPLE_ERRORS = (ValueError, KeyError, TypeError, RuntimeError)


def decode_sample(
    sample: dict[str, Any], ref: tuple[str, int], sample_rate: int = SAMPLE_RATE
) -> Utterance:
    import soundfile as sf

    record = json.loads(sample["json"])
    audio, rate = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
    if rate != sample_rate or audio.ndim != 1 or len(audio) == 0:  # 16-bit FLAC is finite
        raise ValueError(f"{sample.get('__key__')}: not {sample_rate} Hz mono audio")
    geo = record.get("geo") or {}
    return Utterance(
        key=record["key"],
        language=record["language"],
        audio=audio,
        lat=float(geo.get("lat", float("nan"))),
        lon=float(geo.get("lon", float("nan"))),
        speaker=record.get("speaker"),
        ref=ref,
        geo_from_language=geo.get("source") == "language",
    )


def iterate_shard(path: str, corrupt: CorruptCounter) -> Iterator[tuple[int, dict[str, Any]]]:
    """(sample index, raw sample) of one tar (a local path or a URL).

    Members come from schemas.tario (tarfile's header parsing cost a fifth of the FLAC
    decode time) and are grouped into samples by webdataset's own ``group_by_keys``, so a
    sample is exactly what ``wds.WebDataset`` yields. A broken shard is counted and left.
    """
    from webdataset.tariterators import group_by_keys

    def members(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
        try:
            for name, payload in iter_members(stream):
                yield {"fname": name, "data": payload, "__url__": path}
        except (ShardFormatError, OSError) as error:
            corrupt(error)

    try:
        stream = storage.open_read(path)
    except OSError as error:  # listed but missing, a folder, unreadable: counted, skipped
        corrupt(error)
        return
    with stream:
        yield from enumerate(group_by_keys(members(stream), handler=corrupt))


class LanguageStream:
    """An endless, resumable stream of one language's utterances for one rank."""

    def __init__(
        self,
        language: str,
        shards: list[str],
        rank: int,
        world: int,
        seed: int,
        corrupt: CorruptCounter,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        self.language = language
        self.corrupt = corrupt
        self.sample_rate = sample_rate
        self.seed = seed
        if len(shards) >= world:
            self.shards, self.stride, self.offset = shards[rank::world], 1, 0
        else:
            self.shards, self.stride, self.offset = shards, world, rank
        self.epoch = 0
        self.position = 0  # index into this epoch's shard order
        self.sample = 0  # next sample index within the current shard
        self._iterator: Iterator[tuple[int, dict[str, Any]]] | None = None

    def _order(self) -> list[str]:
        rng = np.random.default_rng([self.seed, self.epoch, sum(map(ord, self.language))])
        return [self.shards[i] for i in rng.permutation(len(self.shards))]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "sample": self.sample}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self.sample = state["epoch"], state["position"], state["sample"]
        self._iterator = None

    def next(self) -> Utterance:
        empty_epochs = 0
        while True:
            if self._iterator is None:
                path = self._order()[self.position]
                self._iterator = iterate_shard(path, self.corrupt)
                self._path = path
                for _ in range(self.sample):  # resume inside a shard: skip raw samples
                    next(self._iterator, None)
            item = next(self._iterator, None)
            if item is None:  # end of shard -> next shard, next epoch
                self._iterator = None
                self.sample = 0
                self.position += 1
                if self.position >= len(self.shards):
                    self.position, self.epoch = 0, self.epoch + 1
                    empty_epochs += 1
                    if empty_epochs > 2:
                        raise ConfigError(f"language {self.language}: no readable samples")
                continue
            index, sample = item
            self.sample = index + 1
            if index % self.stride != self.offset:
                continue
            try:
                return decode_sample(sample, (self._path, index), self.sample_rate)
            except CORRUPT_SAMPLE_ERRORS as error:  # skipped and counted; bugs surface
                self.corrupt(error)


def fetch(
    refs: list[tuple[str, int]], corrupt: CorruptCounter, sample_rate: int = SAMPLE_RATE
) -> list[Utterance]:
    """Re-read specific samples (a checkpoint's buffers), in the given order."""
    wanted: dict[str, set[int]] = {}
    for path, index in refs:
        wanted.setdefault(path, set()).add(index)
    found: dict[tuple[str, int], Utterance] = {}
    for path, indices in wanted.items():
        for index, sample in iterate_shard(path, corrupt):
            if index in indices:
                found[(path, index)] = decode_sample(sample, (path, index), sample_rate)
    return [found[tuple(ref)] for ref in refs if tuple(ref) in found]  # type: ignore[index]


@dataclass
class Batch:
    audio: Any  # torch.FloatTensor (B, S)
    lengths: Any  # torch.LongTensor (B,)
    languages: list[str]
    keys: list[str]
    lat_lon: np.ndarray  # (B, 2), NaN where unknown
    geo_from_language: list[bool]  # the location is the language's, not the speaker's
    seconds: float
    state: dict[str, Any]  # the loader position right after this batch


class BatchSampler:
    """Builds batches (see the module docstring). Deterministic given seed and rank."""

    def __init__(
        self, shard_set: ShardSet, config: DataConfig, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.config = config
        self.sample_rate = shard_set.sample_rate
        self.corrupt = CorruptCounter()
        self.probabilities = language_probabilities(shard_set.hours, config.alpha)
        self.languages = list(self.probabilities)
        self.streams = {
            lang: LanguageStream(
                lang, shard_set.shards[lang], rank, world, seed, self.corrupt, self.sample_rate
            )
            for lang in self.languages
        }
        self.buffers: dict[str, list[Utterance]] = {lang: [] for lang in self.languages}
        self.rng = np.random.default_rng([seed, rank])

    def state(self) -> dict[str, Any]:
        return {
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "streams": {lang: s.state() for lang, s in self.streams.items()},
            "buffers": {lang: [list(u.ref) for u in b] for lang, b in self.buffers.items()},
            "corrupt": self.corrupt.count,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        for lang, stream_state in state["streams"].items():
            self.streams[lang].restore(stream_state)
        for lang, refs in state["buffers"].items():
            self.buffers[lang] = fetch(
                [(path, int(index)) for path, index in refs], self.corrupt, self.sample_rate
            )
        self.corrupt.count = int(state["corrupt"])

    def _fill(self, language: str) -> None:
        buffer = self.buffers[language]
        while len(buffer) < self.config.buffer_per_language:
            utterance = self.streams[language].next()
            if len(utterance.audio) >= self.config.min_duration_s * self.sample_rate:
                buffer.append(utterance)

    def next_batch(self) -> Batch:
        config = self.config
        bucket_s = min(float(self.rng.choice(config.buckets_s)), config.max_duration_s)
        per_language = max(
            config.min_per_language,
            int(config.batch_seconds // (config.languages_per_batch * bucket_s)),
        )
        drawn = self.rng.choice(
            len(self.languages),
            size=config.languages_per_batch,
            p=[self.probabilities[lang] for lang in self.languages],
        )
        chosen: list[Utterance] = []
        for index in drawn:
            language = self.languages[int(index)]
            self._fill(language)
            buffer = self.buffers[language]
            closest = sorted(
                range(len(buffer)),
                key=lambda i: (abs(len(buffer[i].audio) / self.sample_rate - bucket_s), i),
            )
            picks = sorted(closest[:per_language], reverse=True)
            chosen.extend(buffer.pop(i) for i in picks)
        crop = int(bucket_s * self.sample_rate)
        clips = []
        for utterance in chosen:
            audio = utterance.audio
            if len(audio) > crop:
                start = int(self.rng.integers(0, len(audio) - crop + 1))
                audio = audio[start : start + crop]
            clips.append(audio)
        length = crop if config.pad_to_bucket else None
        return collate(clips, chosen, self.sample_rate, self.state(), length)


def collate(
    clips: list[np.ndarray],
    chosen: list[Utterance],
    sample_rate: int,
    state: dict[str, Any],
    length: int | None = None,
) -> Batch:
    """Zero-padded (B, S) audio with lengths and the utterances' metadata; S is ``length``
    (the bucket's, so shapes repeat) or the longest clip."""
    length = max(max(len(c) for c in clips), length or 0)
    padded = np.zeros((len(clips), length), dtype=np.float32)
    for row, clip in enumerate(clips):
        padded[row, : len(clip)] = clip
    lengths = [len(c) for c in clips]
    return Batch(
        audio=torch.from_numpy(padded),
        lengths=torch.tensor(lengths, dtype=torch.long),
        languages=[u.language for u in chosen],
        keys=[u.key for u in chosen],
        lat_lon=np.array([[u.lat, u.lon] for u in chosen], dtype=np.float64),
        geo_from_language=[u.geo_from_language for u in chosen],
        seconds=sum(lengths) / sample_rate,
        state=state,
    )


def validation_batches(
    builds: list[str], split: str, total: int, max_seconds: float, batch_size: int = 8
) -> list[Batch]:
    """A fixed held-out set: up to ``total`` utterances of ``split``, spread evenly over
    its languages (each language's shards in name order, first samples first), each cut
    to its first ``max_seconds``, in batches of similar lengths. Empty when no build has
    that split. Corrupt samples are skipped, as in training."""
    try:
        found = discover(builds, (split,))
    except ConfigError:
        return []
    per_language = max(1, total // len(found.shards))
    corrupt = CorruptCounter()
    chosen: list[Utterance] = []
    for language in sorted(found.shards):
        taken = 0
        for path in found.shards[language]:
            for index, sample in iterate_shard(path, corrupt):
                if taken >= per_language:
                    break
                try:
                    chosen.append(decode_sample(sample, (path, index), found.sample_rate))
                except CORRUPT_SAMPLE_ERRORS as error:
                    corrupt(error)
                    continue
                taken += 1
            if taken >= per_language:
                break
    crop = int(max_seconds * found.sample_rate)
    chosen.sort(key=lambda u: (len(u.audio), u.key))
    return [
        collate(
            [u.audio[:crop] for u in chosen[i : i + batch_size]],
            chosen[i : i + batch_size],
            found.sample_rate,
            {},
        )
        for i in range(0, len(chosen), batch_size)
    ]


class Prefetcher:
    """Builds batches in a background thread (I/O and decoding overlap the step); the order is
    the sampler's, so prefetching never changes what a run sees. With ``pin`` (CUDA), audio
    is page-locked so the copy to the device can run asynchronously."""

    def __init__(self, sampler: BatchSampler, depth: int, pin: bool = False) -> None:
        self.sampler = sampler
        self.pin = pin
        self.queue: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                item: Batch | BaseException = self.sampler.next_batch()
                if self.pin and isinstance(item, Batch):
                    item.audio = item.audio.pin_memory()
            except BaseException as error:  # surfaced in the training thread
                item = error
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> Batch:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


class WorkerBatches:
    """The loader in ``workers`` processes (torch DataLoader), for when one thread cannot
    feed the device. Worker w of rank r is the virtual rank r * W + w of world * W: it reads
    its own shards (or samples) of each language with its own sampler, so the workers never
    duplicate data. The DataLoader returns their batches in turn (worker 0, 1, ..., W-1,
    0, ...), so the order is deterministic; each batch carries its worker's position, and
    the checkpoint holds every worker's position and whose turn is next. A resumed run starts
    each worker from its position and the turn where it stopped: it continues exactly."""

    def __init__(
        self,
        shard_set: ShardSet,
        config: DataConfig,
        seed: int,
        rank: int,
        world: int,
        state: dict[str, Any] | None = None,
        pin: bool = False,
    ) -> None:
        from torch.utils.data import DataLoader

        self.workers = config.workers
        if state is not None and state.get("workers") != self.workers:
            raise ConfigError(
                f"the checkpoint's loader had {state.get('workers')} worker processes and "
                f"data.workers is {self.workers}: resume with the same data.workers"
            )
        self.positions: dict[int, dict[str, Any]] = {
            int(k): v for k, v in (state or {}).get("positions", {}).items()
        }
        self.turn = int((state or {}).get("turn", 0))
        dataset = _WorkerStream(
            shard_set, config, seed, rank, world, self.positions, self.turn, self.workers
        )
        self.loader: Iterator[Batch] | None = iter(
            DataLoader(
                dataset,
                batch_size=None,
                num_workers=self.workers,
                pin_memory=pin,
                prefetch_factor=max(1, config.prefetch_batches),
                persistent_workers=True,
                multiprocessing_context="spawn",  # no fork of a process holding CUDA / threads
                # its own generator: starting workers must not draw from the global torch RNG,
                # whose state the checkpoint restores (dropout would shift after a resume)
                generator=torch.Generator().manual_seed(seed),
                worker_init_fn=_exit_without_teardown,
            )
        )

    def next(self) -> Batch:
        if self.loader is None:
            raise RuntimeError("the loader is closed")
        batch: Batch = next(self.loader)
        worker = int(batch.state["worker"])
        self.positions[worker] = batch.state["sampler"]
        self.turn = (worker + 1) % self.workers
        batch.state = self.state()
        return batch

    def state(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "turn": self.turn,
            "positions": {str(k): v for k, v in sorted(self.positions.items())},
            "corrupt": sum(int(p.get("corrupt", 0)) for p in self.positions.values()),
        }

    def close(self) -> None:
        self.loader = None  # the DataLoader's workers stop with their iterator


def _exit_without_teardown(_worker: int) -> None:
    """A worker leaves with os._exit once its loop is over (only at shutdown: the stream is
    endless): a native library's thread destroyed in the interpreter's teardown aborted it
    now and then ("terminate called without an active exception"), which the DataLoader
    reports as a crashed worker. Nothing is left to flush by then: the DataLoader has
    cancelled the worker's result queue."""
    import atexit
    import os

    atexit.register(os._exit, 0)


class _WorkerStream(IterableDataset):  # type: ignore[type-arg]
    """The IterableDataset each DataLoader worker runs (see WorkerBatches)."""

    def __init__(
        self,
        shard_set: ShardSet,
        config: DataConfig,
        seed: int,
        rank: int,
        world: int,
        positions: dict[int, dict[str, Any]],
        turn: int,
        workers: int,
    ) -> None:
        super().__init__()
        self.args = (shard_set, config, seed, rank, world)
        self.positions = dict(positions)
        self.turn = turn
        self.workers = workers

    def __iter__(self) -> Iterator[Batch]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        slot = 0 if info is None else info.id
        worker = (slot + self.turn) % self.workers  # the DataLoader starts at slot 0
        shard_set, config, seed, rank, world = self.args
        sampler = BatchSampler(
            shard_set, config, seed, rank * self.workers + worker, world * self.workers
        )
        if worker in self.positions:
            sampler.restore(self.positions[worker])
        while True:
            batch = sampler.next_batch()
            batch.state = {"worker": worker, "sampler": batch.state}
            yield batch
