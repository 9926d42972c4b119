"""``voxshard verify OUT``: re-read a build and check it against its own index files.

Every shard: present, the size and sha256 in shards.jsonl, a readable tar whose members pair
up as ``<key>.flac`` + ``<key>.json`` in key order, the sample count; every sample: the FLAC
decodes (mono, 16-bit, the JSON's rate and length), the JSON equals its utterances.parquet row;
keys unique across the build; no stray files under shards/; and the accounting in stats.json
matches the files. utterances.parquet is read row group by row group (one group per shard, in
shards.jsonl order), so memory stays small.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from typing import IO, Any

from voxshard.pipelines.outdir import WORK_DIR
from voxshard.schemas import storage
from voxshard.schemas.storage import TEMP_MARKER

CHUNK_BYTES = 1 << 20


class _HashingReader:
    """A read-only stream that hashes what passes through, so a shard is read once."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        """The sha256 of the whole stream (what the tar reader left is read first)."""
        while self.read(CHUNK_BYTES):
            pass
        return self.digest.hexdigest()


def _index_rows(out: str) -> Iterator[list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(storage.open_read(storage.join(out, "utterances.parquet")))
    for group in range(parquet.num_row_groups):
        yield parquet.read_row_group(group).to_pylist()


def _check_members(
    shard: dict[str, Any], stream: _HashingReader, rows: dict[str, dict[str, Any]], decode: bool
) -> tuple[list[str], list[str]]:
    """(problems, keys) of one shard's tar."""
    import soundfile as sf

    problems: list[str] = []
    keys: list[str] = []
    name = shard["path"]
    try:
        # stream mode ("r|") only calls read(); typeshed asks for a full file object
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            pending: dict[str, bytes] = {}
            for member in tar:
                key, _, suffix = member.name.partition(".")
                handle = tar.extractfile(member)
                payload = handle.read() if handle is not None else b""
                if suffix not in ("flac", "json"):
                    problems.append(f"{name}: unexpected member {member.name!r}")
                    continue
                pending[suffix] = payload
                if suffix == "flac":
                    continue
                if "flac" not in pending:
                    problems.append(f"{name}: {key}.json has no {key}.flac before it")
                    continue
                keys.append(key)
                record = json.loads(pending.pop("json"))
                flac = pending.pop("flac")
                row = rows.get(key)
                if row is None:
                    problems.append(f"{name}: {key} is not in utterances.parquet")
                elif record != {k: v for k, v in row.items() if k != "shard"}:
                    problems.append(f"{name}: {key}.json differs from its utterances.parquet row")
                if decode:
                    try:
                        info = sf.info(io.BytesIO(flac))
                        audio, rate = sf.read(io.BytesIO(flac), dtype="int16")
                    except (RuntimeError, sf.LibsndfileError) as error:
                        problems.append(f"{name}: {key}.flac does not decode ({error})")
                        continue
                    if info.channels != 1 or info.subtype != "PCM_16":
                        problems.append(f"{name}: {key}.flac is not mono 16-bit")
                    if rate != record["sample_rate"] or len(audio) != record["num_samples"]:
                        problems.append(
                            f"{name}: {key}.flac has {len(audio)} samples at {rate} Hz, the JSON "
                            f"says {record['num_samples']} at {record['sample_rate']}"
                        )
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        problems.append(f"{name}: unreadable tar ({error})")
    if keys != sorted(keys):
        problems.append(f"{name}: members are not sorted by key")
    return problems, keys


def verify(out: str, decode: bool = True) -> tuple[list[str], dict[str, Any]]:
    """(problems, summary). No problems means the build is complete and consistent."""
    problems: list[str] = []
    for name in ("COMPLETED", "stats.json", "shards.jsonl", "utterances.parquet", "rejects.jsonl"):
        if not storage.isfile(storage.join(out, name)):
            problems.append(f"{name} is missing")
    if problems:
        return problems, {}
    lines = storage.read_bytes(storage.join(out, "shards.jsonl")).decode("utf-8").splitlines()
    shards = [json.loads(line) for line in lines if line.strip()]
    stats = json.loads(storage.read_bytes(storage.join(out, "stats.json")))
    rejected = len(storage.read_bytes(storage.join(out, "rejects.jsonl")).splitlines())
    seen: set[str] = set()
    written = 0
    row_groups = _index_rows(out)
    for shard in shards:
        path = storage.join(out, shard["path"])
        rows = {row["key"]: row for row in next(row_groups, [])}
        if any(row["shard"] != shard["path"] for row in rows.values()):
            problems.append(
                f"{shard['path']}: utterances.parquet rows out of step with shards.jsonl"
            )
        if not storage.isfile(path):
            problems.append(f"{shard['path']}: missing")
            continue
        size = storage.getsize(path)
        if size != shard["num_bytes"]:
            problems.append(
                f"{shard['path']}: {size} bytes, shards.jsonl says {shard['num_bytes']}"
            )
        with storage.open_read(path) as stream:
            reader = _HashingReader(stream)
            member_problems, keys = _check_members(shard, reader, rows, decode)
            if reader.hexdigest() != shard["sha256"]:
                problems.append(f"{shard['path']}: sha256 differs from shards.jsonl")
        problems.extend(member_problems)
        if len(keys) != shard["num_samples"]:
            problems.append(
                f"{shard['path']}: {len(keys)} samples, shards.jsonl says {shard['num_samples']}"
            )
        duplicated = seen.intersection(keys)
        if duplicated:
            problems.append(
                f"{shard['path']}: keys also in another shard: {sorted(duplicated)[:5]}"
            )
        seen.update(keys)
        written += len(rows)
    if next(row_groups, None) is not None:
        problems.append("utterances.parquet has rows for shards that shards.jsonl does not list")
    listed = {shard["path"] for shard in shards}
    for below in storage.walk_files(storage.join(out, "shards")):
        relative = f"shards/{below}"
        if relative not in listed:
            temporary = TEMP_MARKER in storage.basename(relative)
            kind = "a temporary file" if temporary else "a file no index lists"
            problems.append(f"{relative}: {kind}")
    if storage.isdir(storage.join(out, WORK_DIR)):
        problems.append(f"{WORK_DIR}/ is still there: the build did not finish cleanly")
    if written != stats["written"] or written != sum(s["num_samples"] for s in shards):
        problems.append(
            f"accounting: {written} index rows, stats.json says {stats['written']} written"
        )
    if rejected != stats["rejected"]:
        problems.append(
            f"accounting: rejects.jsonl has {rejected} lines, stats.json says {stats['rejected']}"
        )
    if stats["discovered"] != stats["written"] + stats["rejected"]:
        problems.append(f"accounting: discovered {stats['discovered']} != written + rejected")
    summary = {"shards": len(shards), "samples": len(seen), "rejected": rejected, "decoded": decode}
    return problems, summary
