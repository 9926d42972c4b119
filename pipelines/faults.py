"""Fault injection for fault tests; unset, each point costs one global lookup.

``VOXSHARD_CRASH_AT=<point>:<n>`` kills the process with SIGKILL the n-th time it reaches
``point`` (per process). ``VOXSHARD_FAIL_AT=<point>:<n>`` raises InjectedFaultError once, the n-th
time (a transient error a runner's bundle retry gets past); ``VOXSHARD_FAIL_AT=<point>:<n>:enospc``
raises OSError(ENOSPC) from the n-th time on (a full disk). ``VOXSHARD_PAUSE_AT=<point>:<n>:<s>``
sleeps s seconds the n-th time (a window for signal tests). The variables are read once per
process, when this module is first imported (a fault test sets them for the whole process).

Points: ``make-samples`` (after a source file's audio was encoded), ``tar-partial`` (a
shard's temp file half written), ``shard-written`` (after a shard was published),
``index-written`` (utterances.parquet published, before stats.json and COMPLETED).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import Counter

CRASH_ENV = "VOXSHARD_CRASH_AT"
FAIL_ENV = "VOXSHARD_FAIL_AT"
PAUSE_ENV = "VOXSHARD_PAUSE_AT"
_reached: Counter[str] = Counter()


class InjectedFaultError(RuntimeError):
    """A transient failure raised on purpose by VOXSHARD_FAIL_AT."""


def _parse(spec: str) -> tuple[str, int, str]:
    name, _, rest = spec.partition(":")
    count, _, kind = rest.partition(":")
    return name, int(count or "1"), kind


# read once: three os.environ lookups at every point cost ~25 ms of a 2-hour build's writes
_SPECS = (os.environ.get(CRASH_ENV), os.environ.get(FAIL_ENV), os.environ.get(PAUSE_ENV))
_ARMED = any(_SPECS)


def crash_point(point: str) -> None:
    if not _ARMED:
        return
    crash, fail, pause = _SPECS
    _reached[point] += 1
    if pause:
        name, count, seconds = _parse(pause)
        if name == point and _reached[point] == count:
            time.sleep(float(seconds or "30"))
    if crash:
        name, count, _kind = _parse(crash)
        if name == point and _reached[point] >= count:
            os.kill(os.getpid(), signal.SIGKILL)
    if fail:
        name, count, kind = _parse(fail)
        if name != point:
            return
        if kind == "enospc" and _reached[point] >= count:
            raise OSError(errno.ENOSPC, f"No space left on device (injected at {point})")
        if not kind and _reached[point] == count:
            raise InjectedFaultError(f"injected transient failure at {point} (reach {count})")
