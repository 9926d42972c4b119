"""Summaries of a finished (or unfinished) build for ``voxshard inspect``. Reads files only."""

from __future__ import annotations

import json
import statistics
from typing import Any

from voxshard.schemas import storage


def summarize(out: str) -> dict[str, Any]:
    """Per language x split hours and utterances, rejects by reason, shard sizes."""
    stats_path = storage.join(out, "stats.json")
    if not storage.isfile(stats_path):
        from voxshard.schemas import ConfigError

        raise ConfigError(f"{out!r} holds no stats.json: is it a voxshard build folder?")
    stats = json.loads(storage.read_bytes(stats_path))
    sizes = []
    shards_path = storage.join(out, "shards.jsonl")
    if storage.isfile(shards_path):
        lines = storage.read_bytes(shards_path).decode("utf-8").splitlines()
        sizes = [json.loads(line)["num_bytes"] for line in lines if line.strip()]
    rows = []
    split_stats = stats["by_language_split"]
    for name in sorted(split_stats["utterances"]):
        lang, split = name.split("/", 1)
        rows.append(
            {
                "language": lang,
                "split": split,
                "utterances": split_stats["utterances"][name],
                "hours": split_stats["hours"][name],
            }
        )
    return {
        "completed": storage.isfile(storage.join(out, "COMPLETED")),
        "rows": rows,
        "discovered": stats["discovered"],
        "written": stats["written"],
        "rejected": stats["rejected"],
        "rejected_by_reason": stats["rejected_by_reason"],
        "speakers": stats["speakers"]["total"],
        # utterances per licence (builds before sample schema 2 have none: "unknown")
        "licenses": stats.get("by_license", {}).get("utterances", {"unknown": stats["written"]}),
        "hours": stats["hours"],
        "shards": {
            "count": len(sizes),
            "total_mb": sum(sizes) / 1e6,
            "min_mb": min(sizes) / 1e6 if sizes else 0.0,
            "median_mb": statistics.median(sizes) / 1e6 if sizes else 0.0,
            "max_mb": max(sizes) / 1e6 if sizes else 0.0,
        },
    }


def hours_picture(out: str, path: str) -> None:
    """The build's hours per language (stacked by split) and utterance durations per
    language, as a PNG at ``path`` (a path or URL)."""
    import pyarrow.parquet as pq

    from voxshard.pipelines.plots import hours_figure

    stats = json.loads(storage.read_bytes(storage.join(out, "stats.json")))
    with storage.open_read(storage.join(out, "utterances.parquet")) as handle:
        table = pq.read_table(handle, columns=["language", "duration_s"], use_threads=False)
    durations: dict[str, list[float]] = {}
    for lang, seconds in zip(
        table.column("language").to_pylist(), table.column("duration_s").to_pylist(), strict=True
    ):
        durations.setdefault(lang, []).append(seconds)
    hours_figure(stats, durations, path)
