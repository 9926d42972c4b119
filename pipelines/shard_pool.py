"""Local worker processes for the write step of an in-process build (``--workers N``).

Beam's own multi-process mode starts N SDK harness processes that each import Beam and talk
gRPC: about 2 s of wall clock per build here (1.3 s before the first element, 0.7 s tearing
down), most of what a second core gave a 2-hour build. Parsing and planning move metadata
only, so an in-process build runs Beam in the driver, and the write step hands each planned
shard (its file list) to one of N processes forked from the driver before the pipeline
starts: forked, so they start in milliseconds with everything imported, and no script is
re-run (spawn and forkserver import ``__main__`` again); early, so the only other thread is
the decoder-note filter, blocked reading its pipe. A shard's bytes do not depend on which
process writes it (tested against one process); receipts, resume and Ctrl-C work as before
(the processes are the driver's children). Off Linux they are spawned (START_METHOD).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from voxshard.pipelines.batches import Unpacked
from voxshard.pipelines.plan import ShardKey
from voxshard.pipelines.write import ShardContext, ShardResult, write_shard

IN_FLIGHT_PER_PROCESS = 2  # shards queued per process: keeps every process busy
# fork on Linux; macOS's system libraries are not fork-safe in a process with threads (Python
# spawns there by default), so elsewhere the processes are spawned: each imports the write
# path, and a script calling voxshard.build needs the usual `if __name__ == "__main__":`
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"

_context: ShardContext | None = None  # a worker process's, set by its initializer
_opened: dict[str, ShardPool] = {}  # the driver's pools, by OUT, for WriteShard to find


class ShardProcessError(RuntimeError):
    """A process writing shards died: killed, or out of memory."""

    def __init__(self) -> None:
        super().__init__(
            "a process writing shards died (killed, or out of memory: the kernel log says, "
            "dmesg | grep -i oom; --workers 1 needs less memory)"
        )


def _result(future: Future[ShardResult]) -> ShardResult:
    try:
        return future.result()
    except BrokenProcessPool:
        raise ShardProcessError() from None


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int) -> None:
    """A write process ends with the driver, even one killed with SIGKILL (no Ctrl-C handler
    runs then): else it would finish its shard into OUT beside the user's rerun. Linux only
    (prctl); checked against a parent that died before the call."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _initialize(context: ShardContext, parent: int) -> None:
    global _context
    _context = context
    _die_with(parent)


def _write(shard_key: ShardKey, batches: list[bytes]) -> ShardResult:
    assert _context is not None, "the pool's initializer sets the context"
    return write_shard(_context, shard_key, Unpacked(batches))


class ShardPool:
    """Shards written by ``processes`` forked worker processes, a few queued per process;
    results come back as they finish (their order does not matter: Finalize sorts)."""

    def __init__(self, context: ShardContext, processes: int) -> None:
        self.executor = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context(START_METHOD),
            initializer=_initialize,
            initargs=(context, os.getpid()),
        )
        self.executor.submit(int).result()  # forks every process now (fork: all at once)
        self.limit = processes * IN_FLIGHT_PER_PROCESS
        self.pending: deque[Future[ShardResult]] = deque()

    def submit(self, shard_key: ShardKey, batches: list[bytes]) -> Iterator[ShardResult]:
        """Queue a shard (its files in the compressed batches that crossed the GroupByKey:
        the write process unpacks them, the driver does not); yields the results of shards
        that finished meanwhile, waiting for the oldest when the queue is full."""
        try:
            self.pending.append(self.executor.submit(_write, shard_key, batches))
        except BrokenProcessPool:
            raise ShardProcessError() from None
        while self.pending and (len(self.pending) > self.limit or self.pending[0].done()):
            yield _result(self.pending.popleft())

    def drain(self) -> Iterator[ShardResult]:
        """The results of every shard still queued."""
        while self.pending:
            yield _result(self.pending.popleft())

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()


@contextmanager
def opened(out: str, context: ShardContext, processes: int) -> Iterator[ShardPool]:
    """A pool for the build into ``out``, forked now; WriteShard finds it with ``find``."""
    pool = ShardPool(context, processes)
    _opened[out] = pool
    try:
        yield pool
    finally:
        del _opened[out]
        pool.close()


def find(out: str) -> ShardPool | None:
    """The pool the driver opened for ``out`` (None in any other process)."""
    return _opened.get(out)
