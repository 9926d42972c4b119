"""Similarity: lang2vec all-pairs cosine, Haversine 10k x 10k vs sklearn, 50k-speaker memory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from voxshard.encoders import (
    EARTH_RADIUS_KM,
    load_feature_set,
    masked_cosine,
    pairwise_haversine_km,
)

# VmHWM is this process's own peak; ru_maxrss would carry the parent's peak over fork + exec
CHILD = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from voxshard.pipelines.similarity import write_npy_blocks
rng = np.random.default_rng(0)
n = {n}
points = np.column_stack([rng.uniform(-90, 90, n), rng.uniform(-180, 180, n)])
write_npy_blocks({path!r}, points, None)
status = open("/proc/self/status").read()
print([line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")][0])
"""


def _cpu(function: Any) -> tuple[float, Any]:
    started = time.process_time()
    result = function()
    return time.process_time() - started, result


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    features = load_feature_set("syntax_knn")
    usable = [code for code in features.codes if features.usable(code)]
    vectors = features.vectors(list(usable))
    seconds, _ = _cpu(lambda: masked_cosine(vectors))
    rows.append(
        {
            "group": "similarity",
            "name": f"syntax_knn cosine, all {len(usable)} languages",
            "value": round(seconds, 3),
            "unit": "CPU-s",
            "goal": "< 2 s",
            "met": seconds < 2,
        }
    )
    wals = load_feature_set("syntax_wals")
    known = [c for c in wals.codes if wals.usable(c)]
    seconds, _ = _cpu(lambda: masked_cosine(wals.vectors(list(known)), min_shared=20))
    rows.append(
        {
            "group": "similarity",
            "name": f"syntax_wals masked cosine, {len(known)} languages",
            "value": round(seconds, 3),
            "unit": "CPU-s",
            "goal": None,
            "met": None,
        }
    )

    from sklearn.metrics.pairwise import haversine_distances

    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-90, 90, 10_000), rng.uniform(-180, 180, 10_000)])
    ours_s, ours = _cpu(lambda: pairwise_haversine_km(points))
    theirs_s, theirs = _cpu(lambda: haversine_distances(np.radians(points)) * EARTH_RADIUS_KM)
    error = float(np.max(np.abs(ours - theirs)))
    rows.append(
        {
            "group": "similarity",
            "name": "Haversine 10k x 10k: voxshard (float32 out)",
            "value": round(ours_s, 3),
            "unit": "CPU-s",
            "goal": None,
            "met": None,
        }
    )
    rows.append(
        {
            "group": "similarity",
            "name": "Haversine 10k x 10k: sklearn haversine_distances",
            "value": round(theirs_s, 3),
            "unit": "CPU-s",
            "goal": None,
            "met": None,
        }
    )
    rows.append(
        {
            "group": "similarity",
            "name": "Haversine speed-up vs sklearn (same run)",
            "value": round(theirs_s / ours_s, 2),
            "unit": "x",
            "goal": ">= 1.0x",
            "met": theirs_s / ours_s >= 1.0,
        }
    )
    rows.append(
        {
            "group": "similarity",
            "name": "Haversine max |voxshard - sklearn| (km)",
            "value": round(error, 6),
            "unit": "km",
            "goal": None,
            "met": None,
        }
    )
    return rows


def run_memory() -> list[dict[str, Any]]:
    """Peak memory of the 50k-speaker distance matrix (one run: it writes 9.3 GiB)."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="voxshard-bench-") as folder:
        path = os.path.join(folder, "d.npy")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        started = time.time()
        output = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=root, n=50_000, path=path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        wall = time.time() - started
        peak_mib = int(output.split()[-1]) / 1024
        size_gib = os.path.getsize(path) / 2**30
    rows.append(
        {
            "group": "similarity",
            "name": f"50k speakers: peak RSS writing {size_gib:.1f} GiB distances ({wall:.0f} s)",
            "value": round(peak_mib),
            "unit": "MiB",
            "goal": "< 2048 MiB",
            "met": peak_mib < 2048,
        }
    )
    return rows


if __name__ == "__main__":
    for row in run() + run_memory():
        print(row)
