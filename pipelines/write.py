"""Write one planned shard: the plain function behind WriteShards.

Each of the shard's files is decoded once (or its FLAC bytes copied), its items resampled,
validated, their transcripts normalized and encoded; samples wait in a local spool (memory up
to SPOOL_MEMORY_BYTES, then a temp file), so a shard's audio is never held whole. The tar is
written in key order (temp name + rename), then its index fragment, then a receipt: a rerun of
the same plan (a resumed or retried build) finds the receipt and returns its result unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from voxshard.corpora import CorpusOptions, SourceUtterance
from voxshard.corpora.geo_table import GeoTable
from voxshard.pipelines import index
from voxshard.pipelines.audio import AudioConfig, EncodedAudio
from voxshard.pipelines.faults import crash_point
from voxshard.pipelines.outdir import WORK_DIR
from voxshard.pipelines.plan import FileWork, ShardKey
from voxshard.pipelines.records import Reject, TextOptions, encode_items, finish_sample
from voxshard.pipelines.shards import Sample, ShardInfo, shard_name, write_tar
from voxshard.schemas import AudioError, storage

SPOOL_MEMORY_BYTES = 8 << 20  # then the spool rolls over to a temp file
ShardResult = tuple[ShardInfo | None, list[Reject], int]  # row, rejects, clipped samples


@dataclass(frozen=True)
class ShardContext:
    """Everything a shard writer needs, built once per worker."""

    out: str
    options: CorpusOptions
    audio: AudioConfig
    text: TextOptions
    geo_table: GeoTable | None
    language_geo: bool
    verify_copies: bool


class SampleSpool:
    """Samples of one shard in a spooled temp file; handed back one at a time in key order."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
        self.entries: list[tuple[str, int, int, int, float]] = []  # key, at, flac, json, s
        self.records: dict[str, bytes] = {}
        self.clipped = 0

    def add(self, sample: Sample) -> None:
        self.clipped += sample.clipped
        at = self.file.tell()
        self.file.write(sample.flac)
        self.file.write(sample.json)
        self.entries.append((sample.key, at, len(sample.flac), len(sample.json), sample.duration_s))
        self.records[sample.key] = sample.json

    def __len__(self) -> int:
        return len(self.entries)

    def in_key_order(self, shard_key: ShardKey) -> Iterator[Sample]:
        lang, corpus, split, _number = shard_key
        for key, at, flac_bytes, json_bytes, duration_s in sorted(self.entries):
            self.file.seek(at)
            flac = self.file.read(flac_bytes)
            record = self.file.read(json_bytes)
            yield Sample(key, lang, corpus, split, flac, record, duration_s)

    def close(self) -> None:
        self.file.close()


# What a bad file can raise from a codec or the file system: it rejects that file's items.
# Anything else (a TypeError, a KeyError) is a bug and fails the build loudly.
BAD_INPUT_ERRORS = (OSError, ValueError, RuntimeError, EOFError, MemoryError)


Encoded = tuple[SourceUtterance, str, EncodedAudio | AudioError]  # item, language, result


def _file_results(ctx: ShardContext, work: FileWork) -> Iterator[Encoded]:
    """The audio work of one file, item by item as it comes; a file that fails unexpectedly
    rejects the items it had not yet given, with the error named, and the shard goes on."""
    items = [(planned.item, planned.language) for planned in work.items]
    done = 0
    try:
        results = encode_items(
            work.audio_path, items, ctx.options, ctx.audio, work.copy, ctx.verify_copies
        )
        for (item, language), result in zip(items, results, strict=True):  # short: ValueError
            yield item, language, result
            done += 1
    except BAD_INPUT_ERRORS as error:
        failure = AudioError(
            "decode", "unreadable audio", f"{type(error).__name__}: {str(error)[:300]}"
        )
        for item, language in items[done:]:
            yield item, language, failure


def shard_path(shard_key: ShardKey) -> str:
    """The shard's path relative to OUT."""
    lang, corpus, split, number = shard_key
    return f"shards/{lang}/{shard_name(corpus, split, number)}"


def plan_digest(files: Iterable[FileWork]) -> str:
    """A digest of what a shard was planned to hold (its files and their items), the same
    in any order: the sorted digests of its files, 32 bytes each held."""
    parts = sorted(
        hashlib.sha256(repr((work.audio_path, work.copy, work.items)).encode("utf-8")).digest()
        for work in files
    )
    return hashlib.sha256(b"".join(parts)).hexdigest()


def receipt_path(out: str, path: str) -> str:
    return storage.join(out, WORK_DIR, "done", path[: -len(".tar")] + ".json")


def _load_receipt(
    ctx: ShardContext, path: str, digest: str
) -> tuple[ShardInfo | None, list[Reject], int] | None:
    """The result of an earlier write of this very plan, when its files are all in place."""
    receipt = receipt_path(ctx.out, path)
    if not storage.exists(receipt):
        return None
    saved = json.loads(storage.read_bytes(receipt))
    if saved.get("plan") != digest:
        return None
    info = None if saved["shard"] is None else ShardInfo(**saved["shard"])
    if info is not None:
        tar = storage.join(ctx.out, info.path)
        if not storage.isfile(tar) or storage.getsize(tar) != info.num_bytes:
            return None
        if not storage.exists(index.fragment_path(ctx.out, info.path)):
            return None
    return info, [Reject(**r) for r in saved["rejects"]], int(saved.get("clipped_samples", 0))


def stream_order(files: Iterable[FileWork]) -> list[FileWork] | None:
    """The shard's files in an order whose samples come out in key order (each file's items
    in plan order), or None when there is none: then samples are spooled and sorted. Whole
    -file corpora (Common Voice, MLS, most manifests) have one; a session cut into segments
    whose keys do not sort like their start times has not."""
    ordered = sorted(files, key=lambda work: work.items[0].item.key)
    previous = ""
    for work in ordered:
        for planned in work.items:
            if planned.item.key <= previous:
                return None
            previous = planned.item.key
    return ordered


def write_shard(ctx: ShardContext, shard_key: ShardKey, files: Iterable[FileWork]) -> ShardResult:
    """Decode, encode and write one planned shard. Returns its row (None when every item was
    rejected: no file is written, its number stays unused), its rejects and the number of
    samples clipped to full scale in what it wrote. The shard's file list (metadata, bounded
    by --shard-size) is held; the bytes written do not depend on its order. Samples go
    straight into the tar when the files have a key order (``stream_order``), else through
    a spool that hands them back sorted."""
    works = list(files)
    path = shard_path(shard_key)
    digest = plan_digest(works)
    done = _load_receipt(ctx, path, digest)
    if done is not None:
        return done
    ordered = stream_order(works)
    if ordered is not None:
        info, rejects, clipped = _write_streaming(ctx, shard_key, path, ordered)
    else:
        info, rejects, clipped = _write_spooled(ctx, shard_key, path, works)
    receipt = {
        "plan": digest,
        "shard": None if info is None else info.to_dict(),
        "rejects": [r.to_dict() for r in rejects],
        "clipped_samples": clipped,
    }
    storage.write_atomic(receipt_path(ctx.out, path), index.dumps_json(receipt))
    return info, rejects, clipped


def _shard_info(
    path: str, shard_key: ShardKey, written: tuple[int, str], durations_s: list[float]
) -> ShardInfo:
    lang, corpus, split, _number = shard_key
    return ShardInfo(
        path=path,
        lang=lang,
        corpus=corpus,
        split=split,
        num_samples=len(durations_s),
        num_bytes=written[0],
        duration_s=round(sum(durations_s), 6),  # summed in key order, as every path does
        sha256=written[1],
    )


# The audio work of an item streams megabytes through the CPU's caches and TLB, so the
# Python work that followed it (record, transcript normalization, tar header, sha256) ran
# cold, item after item: transcript normalization took 80 us an item interleaved with
# decoding and 37 us in runs of 16 (measured on the bench's MP3 clips). The writer gathers
# the audio results of up to BURST_ITEMS items (or BURST_BYTES of FLAC) and then finishes
# and writes them together; a burst holds no more encoded audio than that (a single item
# larger than BURST_BYTES is held alone, as it was before).
BURST_ITEMS = 16
BURST_BYTES = 16 << 20


def _made(ctx: ShardContext, works: list[FileWork], rejects: list[Reject]) -> Iterator[Sample]:
    """The samples of ``works`` in order, made in bursts; their rejects go to ``rejects``."""
    burst: list[Encoded] = []
    held = 0
    for work in works:
        for entry in _file_results(ctx, work):
            burst.append(entry)
            held += len(entry[2].flac) if isinstance(entry[2], EncodedAudio) else 0
            if len(burst) >= BURST_ITEMS or held >= BURST_BYTES:
                yield from _finished(ctx, burst, rejects)
                burst, held = [], 0
        crash_point("make-samples")
    yield from _finished(ctx, burst, rejects)


def _finished(ctx: ShardContext, burst: list[Encoded], rejects: list[Reject]) -> list[Sample]:
    """The burst's samples, all finished before any is written (a tar write streams the
    sample's FLAC through the caches again). An item whose record cannot be made (geo,
    transcript normalization, JSON) is rejected alone, with the error named."""
    samples = []
    for item, language, result in burst:
        try:
            made = finish_sample(item, language, result, ctx.geo_table, ctx.text, ctx.language_geo)
        except BAD_INPUT_ERRORS as error:
            detail = f"{type(error).__name__}: {str(error)[:300]}"
            made = Reject(item.key, item.audio_path, "validate", "unusable record", detail)
        if isinstance(made, Reject):
            rejects.append(made)
        else:
            samples.append(made)
    return samples


def _write_streaming(
    ctx: ShardContext, shard_key: ShardKey, path: str, ordered: list[FileWork]
) -> ShardResult:
    """Samples written to the tar as they are made (``ordered`` is in key order)."""
    rejects: list[Reject] = []
    records: list[bytes] = []
    durations_s: list[float] = []
    clipped = 0

    def noted(samples: Iterator[Sample]) -> Iterator[Sample]:
        nonlocal clipped
        for sample in samples:
            clipped += sample.clipped
            records.append(sample.json)
            durations_s.append(sample.duration_s)
            yield sample

    stream = noted(_made(ctx, ordered, rejects))
    first = next(stream, None)
    if first is None:  # every item rejected: no tar
        return None, rejects, clipped
    result = write_tar(storage.join(ctx.out, path), itertools.chain([first], stream))
    index.write_fragment(ctx.out, path, records)
    return _shard_info(path, shard_key, result, durations_s), rejects, clipped


def _write_spooled(
    ctx: ShardContext, shard_key: ShardKey, path: str, works: list[FileWork]
) -> ShardResult:
    """Samples spooled as they are made, then written to the tar in key order."""
    spool = SampleSpool()
    rejects: list[Reject] = []
    try:
        for sample in _made(ctx, works, rejects):
            spool.add(sample)
        if not len(spool):
            return None, rejects, spool.clipped
        written = write_tar(storage.join(ctx.out, path), spool.in_key_order(shard_key))
        index.write_fragment(ctx.out, path, [spool.records[key] for key in sorted(spool.records)])
        durations_s = [entry[4] for entry in sorted(spool.entries)]
        return _shard_info(path, shard_key, written, durations_s), rejects, spool.clipped
    finally:
        spool.close()
