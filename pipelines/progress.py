"""Progress of a running build, as the driver sees it on every runner and worker count.

Workers publish small files in OUT/.work/: one plan summary per (language, corpus, split) once
it is planned, one receipt per written shard. A thread in the driver reads what is new at a
steady interval and reports planned audio, done / total, rate and ETA. On a terminal the line
is redrawn in place; elsewhere (a log file, CI) each report is its own line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TextIO

from voxshard.pipelines.outdir import WORK_DIR
from voxshard.schemas import storage

PLAN_DIR = "plan"
DONE_DIR = "done"


def format_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(
    planned_s: float, planned_shards: int, done_s: float, done_shards: int, elapsed_s: float
) -> str:
    """One report: shards and hours done of the plan, audio seconds per wall second, ETA."""
    line = f"progress: {done_shards}/{planned_shards} shards, {done_s / 3600:.2f}"
    line += f"/{planned_s / 3600:.2f} h of audio"
    if planned_s > 0:
        line += f" ({min(100.0, 100 * done_s / planned_s):.0f}%)"
    if elapsed_s > 0 and done_s > 0:
        rate = done_s / elapsed_s
        line += f", {rate:.1f}x real time"
        line += f", ETA {format_duration(max(0.0, planned_s - done_s) / rate)}"
    return line


class Progress:
    """Reads the plan summaries and shard receipts under OUT/.work and reports them."""

    def __init__(self, out: str, interval_s: float = 10.0, stream: TextIO | None = None) -> None:
        self.work = storage.join(out, WORK_DIR)
        self.interval_s = interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.seen: dict[str, tuple[float, int]] = {}  # file -> (audio seconds, shards)
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="voxshard-progress", daemon=True)
        self.last_line = ""

    def _read_new(self, folder: str, parse: str) -> tuple[float, int]:
        root = storage.join(self.work, folder)
        total_s, count = 0.0, 0
        if storage.isdir(root):
            for relative in storage.walk_files(root):
                name = f"{folder}/{relative}"
                if name not in self.seen and relative.endswith(".json"):
                    try:
                        row = json.loads(storage.read_bytes(storage.join(root, relative)))
                    except (OSError, ValueError):
                        continue  # being replaced; read on the next round
                    if parse == "plan":
                        self.seen[name] = (float(row["duration_s"]), int(row["shards"]))
                    else:
                        shard = row.get("shard") or {}
                        self.seen[name] = (float(shard.get("duration_s", 0.0)), 1)
                if name in self.seen:
                    total_s += self.seen[name][0]
                    count += self.seen[name][1]
        return total_s, count

    def report(self) -> str:
        planned_s, planned_shards = self._read_new(PLAN_DIR, "plan")
        done_s, done_shards = self._read_new(DONE_DIR, "done")
        if not planned_shards and not done_shards:
            return ""
        line = progress_line(
            planned_s, planned_shards, done_s, done_shards, time.monotonic() - self.started
        )
        if line != self.last_line:
            self.last_line = line
            self.stream.write(f"\r{line}\x1b[K" if self.tty else f"{line}\n")
            self.stream.flush()
        return line

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            try:
                self.report()
            except OSError:
                continue  # OUT is being finalized; the next round or the summary will say

    def __enter__(self) -> Progress:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        self.thread.join()
        if self.tty and self.last_line:
            self.stream.write("\n")
            self.stream.flush()
