"""Fault injection for crash tests: ``VOXSHARD_CRASH_AT=<point>:<n>`` kills the process with
SIGKILL the n-th time it reaches ``point`` (per process). Points: ``tar-partial`` (a shard's
temp file half written), ``shard-written`` (after a shard's rename), ``index-written``
(utterances.parquet renamed, before stats.json and COMPLETED). Unset, it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "VOXSHARD_CRASH_AT"
_reached: Counter[str] = Counter()


def crash_point(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] >= int(count or "1"):
        os.kill(os.getpid(), signal.SIGKILL)
