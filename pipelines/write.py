"""Write one planned shard: the plain function behind WriteShards.

Each of the shard's files is decoded once (or its FLAC bytes copied), its items resampled,
validated, their transcripts normalized and encoded; samples wait in a local spool (memory up
to SPOOL_MEMORY_BYTES, then a temp file), so a shard's audio is never held whole. The tar is
written in key order (temp name + rename), then its index fragment, then a receipt: a rerun of
the same plan (a resumed or retried build) finds the receipt and returns its result unchanged.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from voxshard.corpora import CorpusOptions
from voxshard.corpora.geo_table import GeoTable
from voxshard.pipelines import index
from voxshard.pipelines.audio import AudioConfig
from voxshard.pipelines.faults import crash_point
from voxshard.pipelines.outdir import WORK_DIR
from voxshard.pipelines.plan import FileWork, ShardKey
from voxshard.pipelines.records import Reject, TextOptions, make_samples
from voxshard.pipelines.shards import Sample, ShardInfo, shard_name, write_tar
from voxshard.schemas import storage

SPOOL_MEMORY_BYTES = 8 << 20  # then the spool rolls over to a temp file


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


def _file_samples(ctx: ShardContext, work: FileWork) -> Iterator[Sample | Reject]:
    """The samples and rejects of one file, as they come; a file that fails unexpectedly
    rejects the items it had not yet given, with the error named, and the shard goes on."""
    done: set[str] = set()
    try:
        for result in make_samples(
            work.audio_path,
            [(planned.item, planned.language) for planned in work.items],
            ctx.options,
            ctx.audio,
            ctx.geo_table,
            ctx.text,
            ctx.language_geo,
            copy=work.copy,
            verify_copies=ctx.verify_copies,
        ):
            done.add(str(result.key))
            yield result
    except BAD_INPUT_ERRORS as error:
        detail = f"{type(error).__name__}: {str(error)[:300]}"
        for planned in work.items:
            if planned.item.key not in done:
                item = planned.item
                yield Reject(item.key, item.audio_path, "decode", "unreadable audio", detail)


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


def write_shard(
    ctx: ShardContext, shard_key: ShardKey, files: Iterable[FileWork]
) -> tuple[ShardInfo | None, list[Reject], int]:
    """Decode, encode and write one planned shard. Returns its row (None when every item was
    rejected: no file is written, its number stays unused), its rejects and the number of
    samples clipped to full scale in what it wrote. ``files`` is read twice (digest, then
    decode) and never held whole; the bytes written do not depend on its order."""
    path = shard_path(shard_key)
    digest = plan_digest(files)
    done = _load_receipt(ctx, path, digest)
    if done is not None:
        return done
    spool = SampleSpool()
    rejects: list[Reject] = []
    try:
        for work in files:
            for result in _file_samples(ctx, work):
                if isinstance(result, Reject):
                    rejects.append(result)
                else:
                    spool.add(result)
            crash_point("make-samples")
        info = None
        if len(spool):
            num_bytes, sha256 = write_tar(
                storage.join(ctx.out, path), spool.in_key_order(shard_key)
            )
            records = [spool.records[key] for key in sorted(spool.records)]
            index.write_fragment(ctx.out, path, records)
            lang, corpus, split, _number = shard_key
            info = ShardInfo(
                path=path,
                lang=lang,
                corpus=corpus,
                split=split,
                num_samples=len(spool),
                num_bytes=num_bytes,
                duration_s=round(sum(entry[4] for entry in sorted(spool.entries)), 6),
                sha256=sha256,
            )
    finally:
        spool.close()
    receipt = {
        "plan": digest,
        "shard": None if info is None else info.to_dict(),
        "rejects": [r.to_dict() for r in rejects],
        "clipped_samples": spool.clipped,
    }
    storage.write_atomic(receipt_path(ctx.out, path), index.dumps_json(receipt))
    return info, rejects, spool.clipped
