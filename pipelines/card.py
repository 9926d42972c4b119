"""The dataset card: README.md in a build's OUT, written by Finalize from stats.json.

What a person receiving the folder needs before using it: where the data comes from and under
which licence (per sample in the metadata, summed here), hours per language and split,
speakers, what was rejected and why, and the options that produced it. Deterministic: the
same build writes the same card (no dates, no worker counts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from voxshard.corpora import REGISTRY
from voxshard.schemas import SCHEMA_VERSION, language_name

CARD_NAME = "README.md"
UNKNOWN_LICENSE = "unknown"


def dataset_card(stats: Mapping[str, Any], options: Mapping[str, Any], tool_version: str) -> str:
    """The Markdown card of a build from its stats.json and its options (BuildConfig's
    identity: what decides the bytes; ROOT is left out)."""
    corpus = str(options.get("source", ""))
    # where ROOT was is the builder's business (and differs between a copy on disk and one in
    # a bucket): the card describes the data, so the same data gives the same card
    shown = {name: value for name, value in options.items() if name != "root"}
    spec = REGISTRY.get(corpus)
    lines = [
        f"# voxshard build: {corpus}",
        "",
        f"{stats['written']:,} utterances, {stats['hours']:.2f} hours, "
        f"{len(stats['by_language']['hours'])} languages, "
        f"{stats['speakers']['total']:,} speakers, {stats['shards']['count']:,} shards "
        f"({_size(stats['shards']['num_bytes'])}). Built by voxshard {tool_version}, "
        f"sample schema version {SCHEMA_VERSION}.",
        "",
        "## Source",
        "",
        f"- corpus: `{corpus}`" + (f": {spec.summary}" if spec else ""),
        "",
        "## Licence",
        "",
        "Every sample's metadata carries its licence (`license` in `<key>.json` and in "
        "`utterances.parquet`); this build holds:",
        "",
        "| licence | utterances | hours |",
        "|---|---:|---:|",
    ]
    by_license = stats.get("by_license", {"hours": {}, "utterances": {}})
    for name, count in by_license["utterances"].items():
        lines.append(f"| {name} | {count:,} | {by_license['hours'][name]:.3f} |")
    lines.append("")
    if spec is not None and spec.license_note:
        lines += [f"Terms: {spec.license_note}.", ""]
    if UNKNOWN_LICENSE in by_license["utterances"]:
        lines += [
            f"{by_license['utterances'][UNKNOWN_LICENSE]:,} utterances have no stated licence: "
            "give the manifest a `license` column before sharing this build.",
            "",
        ]
    lines += [
        "## Hours per language and split",
        "",
        *_language_split_table(stats),
        "",
        "## Rejected",
        "",
        f"{stats['discovered']:,} discovered = {stats['written']:,} written + "
        f"{stats['rejected']:,} rejected ({stats['error_rate']:.2%}); "
        f"{stats['merged_duplicate_listings']:,} duplicate listings merged, "
        f"{stats['clipped_samples']:,} samples clipped by resampling (kept). "
        "Each reject is a line of `rejects.jsonl` (key, source, stage, reason, detail).",
        "",
    ]
    if stats["rejected_by_reason"]:
        lines += ["| reason | items |", "|---|---:|"]
        for reason, count in sorted(stats["rejected_by_reason"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {reason} | {count:,} |")
        lines.append("")
    lines += [
        "## Build options",
        "",
        "```json",
        json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False),
        "```",
        "",
        "## Files",
        "",
        "- `shards/<language>/<corpus>-<split>-NNNNNN.tar`: WebDataset shards; each sample is "
        "`<key>.flac` (mono 16-bit FLAC at the build rate) and `<key>.json` (its metadata)",
        "- `utterances.parquet`: one row per sample (the JSON fields and its shard)",
        "- `shards.jsonl`: every shard with its language, split, samples, bytes, hours, sha256",
        "- `rejects.jsonl`, `stats.json`; `COMPLETED` seals the index files with their sha256",
        "",
        "Check the folder with `voxshard verify OUT`; export it with `voxshard export "
        "lhotse|hf|nemo OUT EXPORT`.",
        "",
    ]
    return "\n".join(lines)


def _language_split_table(stats: Mapping[str, Any]) -> list[str]:
    by_split = stats["by_language_split"]
    splits = sorted({name.split("/", 1)[1] for name in by_split["hours"]})
    speakers = stats["speakers"]["by_language"]
    rows = [
        "| language | " + " | ".join(f"{s} h" for s in splits) + " | utterances | speakers |",
        "|---|" + "---:|" * (len(splits) + 2),
    ]
    for lang in sorted(stats["by_language"]["hours"]):
        cells = [f"{by_split['hours'].get(f'{lang}/{s}', 0.0):.3f}" for s in splits]
        rows.append(
            f"| {lang} ({language_name(lang)}) | "
            + " | ".join(cells)
            + f" | {stats['by_language']['utterances'][lang]:,} | {speakers.get(lang, 0):,} |"
        )
    return rows


def _size(num_bytes: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes / 1e3:.1f} kB"
