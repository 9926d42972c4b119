"""The README's scale table: what a MASR-sized build (~429k hours) costs, from the last
`make bench` (benchmarks/results/latest.json), this design vs the previous one.

    python benchmarks/scale_table.py [results.json]

vCPU-hours = marginal CPU-s per audio hour of each source codec (the "formats" group) times
its hours. Shuffle bytes: this design moves metadata only (the "ingest" group's measured bytes
into all GroupByKeys per audio hour, on short Common Voice clips, the most items per hour);
the previous design's remote graph grouped every encoded sample, about the shards' own bytes
per audio hour ("formats" group), plus that metadata.
"""

from __future__ import annotations

import json
import os
import sys

# The MASR pretraining mix. VoxPopuli and MLS as the issue states them; the remaining ~6.5k h
# are assumed to be Common Voice MP3 (5k) and BABEL SPHERE (1.5k).
MIX_HOURS = {
    "Vorbis 16k (VoxPopuli)": 372_000,
    "Opus 16k (MLS)": 50_500,
    "MP3 48k (Common Voice)": 5_000,
    "SPHERE 8k u-law (BABEL)": 1_500,
}
SHUFFLE_ROW = "bytes into all GroupByKeys per audio hour (metadata, batched)"


def table(results: list[dict[str, object]]) -> str:
    value = {str(r["name"]): float(r["value"]) for r in results}  # type: ignore[arg-type]
    metadata_per_h = value.get(SHUFFLE_ROW, float("nan"))
    lines = [
        "| source (codec) | hours | CPU-s per audio hour, before -> after | vCPU-hours, "
        "before -> after | shuffle, before -> after |",
        "|---|---|---|---|---|",
    ]
    totals = [0.0, 0.0, 0.0, 0.0]
    for name, hours in MIX_HOURS.items():
        before = value.get(f"{name}: previous design, CPU-s per audio hour", float("nan"))
        after = value.get(f"{name}: this design, CPU-s per audio hour", float("nan"))
        shard_per_h = value.get(f"{name}: shard bytes per audio hour", float("nan"))
        row = [
            before * hours / 3600,
            after * hours / 3600,
            (shard_per_h + metadata_per_h) * hours,
            metadata_per_h * hours,
        ]
        totals = [t + r for t, r in zip(totals, row, strict=True)]
        lines.append(
            f"| {name} | {hours:,} | {before:.2f} -> {after:.2f} | {row[0]:,.0f} -> "
            f"{row[1]:,.0f} | {row[2] / 1e12:.1f} TB -> {row[3] / 1e9:.2f} GB |"
        )
    lines.append(
        f"| all | {sum(MIX_HOURS.values()):,} | | {totals[0]:,.0f} -> {totals[1]:,.0f} | "
        f"{totals[2] / 1e12:.1f} TB -> {totals[3] / 1e9:.2f} GB |"
    )
    opus48 = ("Opus 48k", "Opus 48k")
    before = value.get(f"{opus48[0]}: previous design, CPU-s per audio hour", float("nan"))
    after = value.get(f"{opus48[1]}: this design, CPU-s per audio hour", float("nan"))
    lines.append("")
    lines.append(
        f"Were MLS's Opus at 48 kHz: {before:.2f} -> {after:.2f} CPU-s per audio hour "
        f"({50_500 * after / 3600:,.0f} vCPU-hours for its 50.5k h after)."
    )
    return "\n".join(lines)


def main() -> None:
    path = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.path.join(os.path.dirname(__file__), "results", "latest.json")
    )
    with open(path, encoding="utf-8") as handle:
        print(table(json.load(handle)["results"]))


if __name__ == "__main__":
    main()
