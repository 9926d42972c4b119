"""The build's index files: per-shard Parquet fragments, then utterances.parquet, shards.jsonl,
rejects.jsonl, stats.json and COMPLETED, with the accounting checked on the written files."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxshard.pipelines.faults import crash_point
from voxshard.pipelines.outdir import WORK_DIR
from voxshard.pipelines.records import Count, Reject
from voxshard.pipelines.shards import ShardInfo
from voxshard.schemas import SCHEMA_VERSION, arrow_schema, storage

PARQUET_COMPRESSION = "zstd"


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
    record_schema = pa.schema([f for f in schema if f.name != "shard"])
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
    pq.write_table(table, buffer, compression=PARQUET_COMPRESSION)
    storage.write_atomic(fragment_path(out, shard_path), buffer.getvalue())


def write_rejects(out: str, rejects: Iterable[Reject]) -> dict[str, Any]:
    """Write rejects.jsonl sorted; return the counts by reason and by stage."""
    ordered = sorted(rejects, key=Reject.sort_key)
    storage.write_atomic(
        storage.join(out, "rejects.jsonl"), jsonl_bytes(r.to_dict() for r in ordered)
    )
    return {
        "total": len(ordered),
        "by_reason": dict(sorted(Counter(r.reason for r in ordered).items())),
        "by_stage": dict(sorted(Counter(r.stage for r in ordered).items())),
    }


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


def finalize(
    out: str,
    shards: Sequence[ShardInfo],
    rejects_summary: dict[str, Any] | None,
    num_items: int,
    num_merged: int,
    max_error_rate: float,
    completed: dict[str, Any],
) -> dict[str, Any]:
    """Write shards.jsonl, utterances.parquet, stats.json; COMPLETED last if all checks pass.

    The counts come from the files just written, not from pipeline counters. Returns
    ``{"ok": bool, "problems": [...], "stats": {...}}``, also saved as .work/result.json.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shards = sorted(shards, key=lambda s: s.path)
    problems: list[str] = []
    if rejects_summary is None:
        rejects_summary = write_rejects(out, [])
    storage.write_atomic(
        storage.join(out, "shards.jsonl"), jsonl_bytes(s.to_dict() for s in shards)
    )
    _remove_stale_shards(out, {s.path for s in shards})

    schema = arrow_schema()
    by = {name: _Tally() for name in ("language", "corpus", "split", "language_split")}
    speakers: dict[str, set[str]] = defaultdict(set)
    transcribed: Counter[str] = Counter()
    code_switched: Counter[str] = Counter()
    written = 0
    total_s = 0.0
    with (
        storage.atomic_writer(storage.join(out, "utterances.parquet")) as handle,
        pq.ParquetWriter(handle, schema, compression=PARQUET_COMPRESSION) as writer,
    ):
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
            columns = table.select(["language", "corpus", "split", "duration_s", "speaker"])
            cmis = pc.struct_field(table.column("transcript"), "cmi").to_pylist()
            for lang, corpus, split, seconds, speaker, cmi in zip(
                *(columns.column(i).to_pylist() for i in range(5)), cmis, strict=True
            ):
                if cmi is not None:
                    transcribed[lang] += 1
                    code_switched[lang] += cmi > 0
                by["language"].add(lang, seconds)
                by["corpus"].add(corpus, seconds)
                by["split"].add(split, seconds)
                by["language_split"].add(f"{lang}/{split}", seconds)
                if speaker is not None:
                    speakers[lang].add(speaker)
                total_s += seconds
            written += table.num_rows
    crash_point("index-written")

    rejected = storage.read_bytes(storage.join(out, "rejects.jsonl")).count(b"\n")
    discovered = num_items - num_merged + int(rejects_summary["by_stage"].get("parse", 0))
    if rejected != rejects_summary["total"]:
        problems.append(
            f"rejects.jsonl has {rejected} lines, the pipeline rejected {rejects_summary['total']}"
        )
    if written + rejected != discovered:
        problems.append(
            f"accounting: {discovered} discovered != {written} written + {rejected} rejected"
        )
    error_rate = rejected / discovered if discovered else 0.0
    if discovered == 0:
        problems.append("no utterances discovered: check ROOT, --languages and --splits")
    elif error_rate > max_error_rate:
        top = ", ".join(
            f"{reason} ({count})"
            for reason, count in sorted(
                rejects_summary["by_reason"].items(), key=lambda kv: -kv[1]
            )[:3]
        )
        problems.append(
            f"{rejected} of {discovered} items rejected ({error_rate:.1%}) exceeds "
            f"--max-error-rate {max_error_rate:.1%}; top reasons: {top}; see rejects.jsonl"
        )
    stats = {
        "schema_version": SCHEMA_VERSION,
        "discovered": discovered,
        "written": written,
        "rejected": rejected,
        "merged_duplicate_listings": num_merged,
        "error_rate": round(error_rate, 6),
        "rejected_by_reason": rejects_summary["by_reason"],
        "rejected_by_stage": rejects_summary["by_stage"],
        "hours": round(total_s / 3600.0, 6),
        "by_language": by["language"].to_dict(),
        "by_corpus": by["corpus"].to_dict(),
        "by_split": by["split"].to_dict(),
        "by_language_split": by["language_split"].to_dict(),
        "speakers": {
            "total": len(set().union(*speakers.values())) if speakers else 0,
            "by_language": {lang: len(s) for lang, s in sorted(speakers.items())},
        },
        "shards": {"count": len(shards), "num_bytes": sum(s.num_bytes for s in shards)},
        "code_switching": {
            lang: {
                "transcribed": transcribed[lang],
                "code_switched": code_switched[lang],
                "share": round(code_switched[lang] / transcribed[lang], 6),
            }
            for lang in sorted(transcribed)
        },
    }
    storage.write_atomic(storage.join(out, "stats.json"), dumps_json(stats))
    result = {"ok": not problems, "problems": problems, "stats": stats}
    storage.write_atomic(storage.join(out, WORK_DIR, "result.json"), dumps_json(result))
    if not problems:
        storage.write_atomic(storage.join(out, "COMPLETED"), dumps_json(completed))
    return result


def finalize_events(
    out: str, events: Iterable[object], max_error_rate: float, completed: dict[str, Any]
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
    summary = write_rejects(out, rejects)
    return finalize(
        out, shards, summary, counts["parsed"], counts["merged"], max_error_rate, completed
    )


def _remove_stale_shards(out: str, keep: set[str]) -> None:
    """Delete shard files this build did not write (left by an earlier, different attempt)."""
    root = storage.join(out, "shards")
    if not storage.isdir(root):
        return
    for relative in storage.walk_files(root):
        if f"shards/{relative}" not in keep:
            storage.remove(storage.join(root, relative))
