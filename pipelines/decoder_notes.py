"""Keep libmpg123's notes off the user's terminal while a build decodes.

libsndfile decodes MP3 through libmpg123, which writes notes such as ``Note: Illegal
Audio-MPEG-Header 0x00000000 at offset 771.`` / ``Note: Trying to resync...`` straight to file
descriptor 2 from C: Python's warnings and logging cannot catch them. What they describe is
already handled (a damaged file is a reject in rejects.jsonl; a resync that recovers is
validated like any decode), so during a build fd 2 goes through a pipe whose reader passes
every other byte on unchanged and counts the decoder's lines instead. Worker processes
started during the build inherit the pipe, so their notes are filtered too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOG = logging.getLogger("voxshard")

# libmpg123's message prefixes (src/libmpg123: "Note: ", "Warning: ", "[file:line] error: ")
DECODER_LINE = re.compile(rb"^(Note: |Warning: |\[src/libmpg123/[^\]]*\] )")


@dataclass
class Filtered:
    lines: int = 0


# the filter in force: (the real stderr's descriptor, the thread passing bytes to it)
_ACTIVE: list[tuple[int, threading.Thread]] = []


def release(timeout_s: float = 0.05) -> None:
    """Give fd 2 back to the real stderr now (what is written next goes straight there) and
    give the filter a moment to pass on what it holds: for a process about to leave with
    os._exit (Ctrl-C), whose last words must be seen. It does not wait for the pipe's end:
    worker processes still hold it, and the caller is about to stop them."""
    if not _ACTIVE:
        return
    original, pump = _ACTIVE[-1]
    sys.stderr.flush()
    os.dup2(original, 2)
    pump.join(timeout=timeout_s)


def is_decoder_note(line: bytes) -> bool:
    return bool(DECODER_LINE.match(line))


@contextmanager
def quiet_decoder_notes(enabled: bool = True) -> Iterator[Filtered]:
    """While inside, drop libmpg123's lines from fd 2 (counted in the yielded object) and pass
    everything else through; ``enabled=False`` (``--verbose``) changes nothing."""
    filtered = Filtered()
    if not enabled:
        yield filtered
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(
        target=_pump, args=(read_end, original, filtered), name="voxshard-stderr", daemon=True
    )
    pump.start()
    _ACTIVE.append((original, pump))
    try:
        yield filtered
    finally:
        _ACTIVE.pop()
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end in this process closes here
        pump.join(timeout=5.0)  # EOF once worker processes holding it have exited
        if not pump.is_alive():  # else a straggler still writes through it: leave it open
            os.close(original)
        if filtered.lines:
            LOG.debug("%d libmpg123 note(s) kept off the terminal", filtered.lines)


def _pump(read_end: int, original: int, filtered: Filtered) -> None:
    pending = b""
    try:
        while chunk := os.read(read_end, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = []
            for line in lines:
                if is_decoder_note(line):
                    filtered.lines += 1
                else:
                    out.append(line + b"\n")
            if b"\r" in pending and not is_decoder_note(pending):  # a terminal's progress line
                cut = pending.rindex(b"\r") + 1
                out.append(pending[:cut])
                pending = pending[cut:]
            if out:
                _write_all(original, b"".join(out))
        if pending and not is_decoder_note(pending):
            _write_all(original, pending)
    finally:
        os.close(read_end)


def _write_all(fd: int, data: bytes) -> None:
    """Pass bytes on; a stderr that went away (``2>&1 | head``) drops them. The pump must keep
    draining the pipe whatever happens: were it to stop, the next writer to a full pipe (a
    log line, a decoder) would block and the build would hang."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:
            return
