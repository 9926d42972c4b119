"""``make bench``: run every benchmark group three times, report medians.

Writes ``benchmarks/results/latest.json`` and prints a markdown table. Results are ratios and
rates measured side by side in one run on this machine; nothing here is a test assertion.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

import bench_ingest
import bench_normalizers
import bench_similarity

# name -> (run, repeats): medians need 3 runs (the per-format rates too: one run of a
# difference of two builds moved by a third between runs); the 50k-speaker memory run
# writes 9.3 GiB once
GROUPS: dict[str, tuple[Callable[[], list[dict[str, Any]]], int]] = {
    "ingest": (bench_ingest.run, 3),
    "formats": (bench_ingest.run_formats, 3),
    "fixed": (bench_ingest.run_fixed_cost, 3),
    "memory": (bench_ingest.run_memory, 1),
    "normalizers": (bench_normalizers.run, 3),
    "similarity": (bench_similarity.run, 3),
    "similarity-memory": (bench_similarity.run_memory, 1),
}
# run only when named (`make bench-scale`): a 100k-utterance build alone takes minutes
EXTRA_GROUPS: dict[str, tuple[Callable[[], list[dict[str, Any]]], int]] = {
    "memory-scale": (bench_ingest.run_memory_scale, 1),
}


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": None if load is None else round(load[0], 2),
    }


def summarize(rows: dict[tuple[str, str], list[dict[str, Any]]], started: float) -> dict[str, Any]:
    results = []
    for runs in rows.values():
        finite = [r["value"] for r in runs if r["value"] == r["value"]]
        value = statistics.median(finite) if finite else float("nan")
        first = runs[0]
        met = None
        if first["goal"] is not None:
            met = statistics.median(1.0 if r["met"] else 0.0 for r in runs) >= 0.5
        results.append({**first, "value": value, "runs": [r["value"] for r in runs], "met": met})
    return {"machine": machine(), "wall_s": round(time.time() - started, 1), "results": results}


def save(report: dict[str, Any], name: str) -> None:
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", name), "w") as handle:
        json.dump(report, handle, indent=2)


def main() -> None:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    started = time.time()
    import logging

    logging.basicConfig(level=logging.ERROR)
    only = set(sys.argv[1:])  # e.g. `python benchmarks/run.py normalizers similarity`
    unknown = only - set(GROUPS) - set(EXTRA_GROUPS)
    if unknown:
        raise SystemExit(
            f"unknown group(s) {sorted(unknown)}: choose from {sorted(GROUPS)} "
            f"and {sorted(EXTRA_GROUPS)}"
        )
    name = "latest.json" if not only else "-".join(sorted(only)) + ".json"
    for group, (run, repeats) in {**GROUPS, **EXTRA_GROUPS}.items():
        if (only and group not in only) or (not only and group in EXTRA_GROUPS):
            continue
        print(f"running {group} ({repeats}x) ...", file=sys.stderr, flush=True)
        for _ in range(repeats):
            for row in run():
                rows.setdefault((group, row["name"]), []).append(row)
        report = summarize(rows, started)
        save(report, name)  # after every group: a later failure keeps what was measured
    report = summarize(rows, started)
    print(f"machine: {report['machine']}\n")
    print("| group | measurement | median | unit | goal | met |")
    print("|---|---|---|---|---|---|")
    for r in report["results"]:
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        goal = r["goal"] or ""
        print(f"| {r['group']} | {r['name']} | {r['value']:,} | {r['unit']} | {goal} | {met} |")


if __name__ == "__main__":
    main()
