"""The build's index files: per-shard Parquet fragments, then utterances.parquet, shards.jsonl,
rejects.jsonl, stats.json and COMPLETED, with the accounting checked on the written files."""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxshard.pipelines.card import CARD_NAME, dataset_card
from voxshard.pipelines.faults import crash_point
from voxshard.pipelines.outdir import WORK_DIR, is_shard_path
from voxshard.pipelines.records import Count, Reject
from voxshard.pipelines.shards import ShardInfo
from voxshard.schemas import SCHEMA_VERSION, arrow_schema, storage

PARQUET_COMPRESSION = "zstd"
# a shard's fragment is read once, by Finalize: snappy writes 267 rows in 0.7 ms where zstd
# takes 2.1 (the files are ~25 % larger; they are removed with .work/)
FRAGMENT_COMPRESSION = "snappy"


def dumps_json(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def jsonl_bytes(rows: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(
        (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode() for row in rows
    )


def fragment_path(out: str, shard_path: str) -> str:
    """The Parquet fragment that holds the index rows of one shard."""
    return storage.join(out, WORK_DIR, "index", shard_path[: -len(".tar")] + ".parquet")


def records_table(records: Sequence[bytes], shard_path: str) -> Any:
    """The index rows of one shard, from its samples' JSON records, in shard order.

    Arrow's JSON reader parses the records straight into columns of the index schema (a
    shard of tiny utterances holds tens of thousands; Python dicts for them cost ~100x).
    """
    import pyarrow as pa
    import pyarrow.json as pj

    schema = arrow_schema()
    record_schema = arrow_schema(with_shard=False)  # what each sample's JSON record holds
    payload = b"\n".join(record.rstrip(b"\n") for record in records)
    table = pj.read_json(
        io.BytesIO(payload),
        read_options=pj.ReadOptions(
            use_threads=False, block_size=max(1 << 20, max(map(len, records), default=0) + 1)
        ),
        parse_options=pj.ParseOptions(
            explicit_schema=record_schema, unexpected_field_behavior="error"
        ),
    )
    shard = pa.array([shard_path] * table.num_rows, pa.string())
    return table.append_column(schema.field("shard"), shard).select(schema.names).cast(schema)


def write_fragment(out: str, shard_path: str, records: Sequence[bytes]) -> None:
    import pyarrow.parquet as pq

    table = records_table(records, shard_path)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=FRAGMENT_COMPRESSION)
    storage.write_atomic(fragment_path(out, shard_path), buffer.getvalue())


def rejects_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts of rejects.jsonl rows by reason and by stage (stats.json's figures)."""
    reasons: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    for row in rows:
        reasons[row["reason"]] += 1
        stages[row["stage"]] += 1
    return {
        "total": sum(reasons.values()),
        "by_reason": dict(sorted(reasons.items())),
        "by_stage": dict(sorted(stages.items())),
    }


def write_rejects(out: str, rejects: Iterable[Reject]) -> tuple[dict[str, Any], str]:
    """Write rejects.jsonl sorted; return its counts by reason and stage, and its sha256."""
    rows = [r.to_dict() for r in sorted(rejects, key=Reject.sort_key)]
    payload = jsonl_bytes(rows)
    storage.write_atomic(storage.join(out, "rejects.jsonl"), payload)
    return rejects_summary(rows), hashlib.sha256(payload).hexdigest()


@dataclass
class _Tally:
    hours: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    utterances: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, name: str, seconds: float) -> None:
        self.hours[name] += seconds / 3600.0
        self.utterances[name] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "hours": {k: round(v, 6) for k, v in sorted(self.hours.items())},
            "utterances": dict(sorted(self.utterances.items())),
        }


class StatsBuilder:
    """stats.json from the index rows, shard by shard: the one computation that Finalize
    writes and `voxshard verify` recomputes from the shards."""

    def __init__(self) -> None:
        self.by = {
            name: _Tally() for name in ("language", "corpus", "split", "language_split", "license")
        }
        self.speakers: dict[str, set[str]] = defaultdict(set)
        self.transcribed: Counter[str] = Counter()
        self.code_switched: Counter[str] = Counter()
        self.written = 0
        self.total_s = 0.0

    def add(self, table: Any) -> None:
        """One shard's index rows (an Arrow table of the index schema)."""
        import pyarrow.compute as pc

        names = ["language", "corpus", "split", "duration_s", "speaker", "license"]
        columns = table.select(names)
        cmis = pc.struct_field(table.column("transcript"), "cmi").to_pylist()
        for lang, corpus, split, seconds, speaker, license_, cmi in zip(
            *(columns.column(i).to_pylist() for i in range(len(names))), cmis, strict=True
        ):
            if cmi is not None:
                self.transcribed[lang] += 1
                self.code_switched[lang] += cmi > 0
            self.by["language"].add(lang, seconds)
            self.by["corpus"].add(corpus, seconds)
            self.by["split"].add(split, seconds)
            self.by["language_split"].add(f"{lang}/{split}", seconds)
            self.by["license"].add(license_, seconds)
            if speaker is not None:
                self.speakers[lang].add(speaker)
            self.total_s += seconds
        self.written += table.num_rows

    def stats(
        self,
        shards: Sequence[ShardInfo],
        rejects: dict[str, Any],
        discovered: int,
        merged: int,
        clipped_samples: int = 0,
    ) -> dict[str, Any]:
        """stats.json. ``discovered``, ``merged`` and ``clipped_samples`` are counted by the
        pipeline (no index file holds them); the rest comes from the rows and rejects."""
        rejected = int(rejects["total"])
        return {
            "schema_version": SCHEMA_VERSION,
            "discovered": discovered,
            "written": self.written,
            "rejected": rejected,
            "merged_duplicate_listings": merged,
            "clipped_samples": clipped_samples,
            "error_rate": round(rejected / discovered if discovered else 0.0, 6),
            "rejected_by_reason": rejects["by_reason"],
            "rejected_by_stage": rejects["by_stage"],
            "hours": round(self.total_s / 3600.0, 6),
            "by_language": self.by["language"].to_dict(),
            "by_corpus": self.by["corpus"].to_dict(),
            "by_split": self.by["split"].to_dict(),
            "by_language_split": self.by["language_split"].to_dict(),
            "by_license": self.by["license"].to_dict(),
            "speakers": {
                "total": len(set().union(*self.speakers.values())) if self.speakers else 0,
                "by_language": {lang: len(s) for lang, s in sorted(self.speakers.items())},
            },
            "shards": {"count": len(shards), "num_bytes": sum(s.num_bytes for s in shards)},
            "code_switching": {
                lang: {
                    "transcribed": self.transcribed[lang],
                    "code_switched": self.code_switched[lang],
                    "share": round(self.code_switched[lang] / self.transcribed[lang], 6),
                }
                for lang in sorted(self.transcribed)
            },
        }


class _HashingWriter:
    """Passes writes on and hashes them (utterances.parquet's digest without a re-read)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return int(self.handle.write(data))

    def flush(self) -> None:
        self.handle.flush()

    def tell(self) -> int:
        return int(self.handle.tell())

    def close(self) -> None:  # the atomic writer owns the handle and publishes it
        self.closed = True


SEALED_FILES = ("utterances.parquet", "shards.jsonl", "rejects.jsonl", "stats.json", CARD_NAME)


def finalize(
    out: str,
    shards: Sequence[ShardInfo],
    rejects_summary_: dict[str, Any],
    rejects_sha256: str,
    num_items: int,
    num_merged: int,
    max_error_rate: float,
    completed: dict[str, Any],
    clipped_samples: int = 0,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write shards.jsonl, utterances.parquet, stats.json, and when all checks pass the
    dataset card (README.md, from ``options``: the build's identity) and COMPLETED last.

    The counts come from the files just written, not from pipeline counters. COMPLETED seals
    the build: it holds the sha256 of each index file (SEALED_FILES). Returns ``{"ok": bool,
    "problems": [...], "stats": {...}}``, also saved as .work/result.json.
    """
    import pyarrow.parquet as pq

    shards = sorted(shards, key=lambda s: s.path)
    problems: list[str] = []
    digests = {"rejects.jsonl": rejects_sha256}
    shards_payload = jsonl_bytes(s.to_dict() for s in shards)
    storage.write_atomic(storage.join(out, "shards.jsonl"), shards_payload)
    digests["shards.jsonl"] = hashlib.sha256(shards_payload).hexdigest()
    _remove_stale_shards(out, {s.path for s in shards})

    schema = arrow_schema()
    builder = StatsBuilder()
    with storage.atomic_writer(storage.join(out, "utterances.parquet")) as handle:
        hashing = _HashingWriter(handle)
        with pq.ParquetWriter(hashing, schema, compression=PARQUET_COMPRESSION) as writer:
            for shard in shards:
                shard_file = storage.join(out, shard.path)
                if not storage.isfile(shard_file):
                    problems.append(f"{shard.path} is listed but missing")
                elif (size := storage.getsize(shard_file)) != shard.num_bytes:
                    problems.append(
                        f"{shard.path} has {size} bytes, shards.jsonl says {shard.num_bytes}"
                    )
                fragment = io.BytesIO(storage.read_bytes(fragment_path(out, shard.path)))
                table = pq.read_table(fragment, schema=schema)
                if table.num_rows != shard.num_samples:
                    problems.append(
                        f"{shard.path}: index has {table.num_rows} rows, "
                        f"shard has {shard.num_samples} samples"
                    )
                writer.write_table(table)
                builder.add(table)
    digests["utterances.parquet"] = hashing.digest.hexdigest()
    crash_point("index-written")

    rejected = storage.read_bytes(storage.join(out, "rejects.jsonl")).count(b"\n")
    discovered = num_items - num_merged + int(rejects_summary_["by_stage"].get("parse", 0))
    if rejected != rejects_summary_["total"]:
        problems.append(
            f"rejects.jsonl has {rejected} lines, the pipeline rejected {rejects_summary_['total']}"
        )
    if builder.written + rejected != discovered:
        problems.append(
            f"accounting: {discovered} discovered != {builder.written} written "
            f"+ {rejected} rejected"
        )
    error_rate = rejected / discovered if discovered else 0.0
    if discovered == 0:
        problems.append("no utterances discovered: check ROOT, --languages and --splits")
    elif error_rate > max_error_rate:
        top = ", ".join(
            f"{reason} ({count})"
            for reason, count in sorted(
                rejects_summary_["by_reason"].items(), key=lambda kv: -kv[1]
            )[:3]
        )
        needed = math.ceil(error_rate * 100) / 100
        problems.append(
            f"{rejected} of {discovered} items rejected ({error_rate:.1%}) exceeds "
            f"--max-error-rate {max_error_rate:.1%}; top reasons: {top}; see rejects.jsonl. "
            f"To keep them out and finish, rerun the same command with --max-error-rate "
            f"{needed:.2f} (the shards written are kept)"
        )
    stats = builder.stats(shards, rejects_summary_, discovered, num_merged, clipped_samples)
    stats_payload = dumps_json(stats)
    storage.write_atomic(storage.join(out, "stats.json"), stats_payload)
    digests["stats.json"] = hashlib.sha256(stats_payload).hexdigest()
    result = {"ok": not problems, "problems": problems, "stats": stats}
    storage.write_atomic(storage.join(out, WORK_DIR, "result.json"), dumps_json(result))
    if not problems:
        card = dataset_card(stats, options or {}, str(completed.get("tool_version", "")))
        card_payload = card.encode("utf-8")
        storage.write_atomic(storage.join(out, CARD_NAME), card_payload)
        digests[CARD_NAME] = hashlib.sha256(card_payload).hexdigest()
        seal = {**completed, "files": {name: digests[name] for name in SEALED_FILES}}
        storage.write_atomic(storage.join(out, "COMPLETED"), dumps_json(seal))
    return result


def finalize_events(
    out: str,
    events: Iterable[object],
    max_error_rate: float,
    completed: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Finalize from everything the steps reported: shard rows, rejects and counts (plan
    summaries are for progress and the dry run, not the index)."""
    shards: list[ShardInfo] = []
    rejects: list[Reject] = []
    counts: Counter[str] = Counter()
    for event in events:
        if isinstance(event, ShardInfo):
            shards.append(event)
        elif isinstance(event, Reject):
            rejects.append(event)
        elif isinstance(event, Count):
            counts[event.name] += event.value
    summary, rejects_sha256 = write_rejects(out, rejects)
    return finalize(
        out,
        shards,
        summary,
        rejects_sha256,
        counts["parsed"],
        counts["merged"],
        max_error_rate,
        completed,
        clipped_samples=counts["clipped_samples"],
        options=options,
    )


def _remove_stale_shards(out: str, keep: set[str]) -> None:
    """Delete shards of this build's naming that it did not write (left by an earlier,
    different attempt); files voxshard did not name are left alone."""
    root = storage.join(out, "shards")
    if not storage.isdir(root):
        return
    for relative in storage.walk_files(root):
        path = f"shards/{relative}"
        if path not in keep and is_shard_path(path):
            storage.remove(storage.join(root, relative))
