"""Summaries of a finished (or unfinished) build for ``voxshard inspect``. Reads files only."""

from __future__ import annotations

import json
import os
import statistics
from typing import Any


def summarize(out: str) -> dict[str, Any]:
    """Per language x split hours and utterances, rejects by reason, shard sizes."""
    stats_path = os.path.join(out, "stats.json")
    if not os.path.isfile(stats_path):
        from schemas import ConfigError

        raise ConfigError(f"{out!r} holds no stats.json: is it a voxshard build folder?")
    with open(stats_path, encoding="utf-8") as handle:
        stats = json.load(handle)
    sizes = []
    shards_path = os.path.join(out, "shards.jsonl")
    if os.path.isfile(shards_path):
        with open(shards_path, encoding="utf-8") as handle:
            sizes = [json.loads(line)["num_bytes"] for line in handle if line.strip()]
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
        "completed": os.path.isfile(os.path.join(out, "COMPLETED")),
        "rows": rows,
        "discovered": stats["discovered"],
        "written": stats["written"],
        "rejected": stats["rejected"],
        "rejected_by_reason": stats["rejected_by_reason"],
        "speakers": stats["speakers"]["total"],
        "hours": stats["hours"],
        "shards": {
            "count": len(sizes),
            "total_mb": sum(sizes) / 1e6,
            "min_mb": min(sizes) / 1e6 if sizes else 0.0,
            "median_mb": statistics.median(sizes) / 1e6 if sizes else 0.0,
            "max_mb": max(sizes) / 1e6 if sizes else 0.0,
        },
    }
