"""Run folders at URLs: a training run (or a probe) may name ``gs://bucket/runs/x``.

torch.save, metrics appends and TensorBoard write local files, so a run at a URL works in a
local mirror (``~/.cache/voxshard/runs/<hash of the URL>``, or ``VOXSHARD_RUN_CACHE``):
``fetch`` empties the mirror (the URL is the truth: a mirror may hold a run deleted there
since) and brings the URL's latest checkpoint, its pointer, config.json and metrics.jsonl
down before a resume; ``publish`` sends a new checkpoint up (its files first, the pointer
``latest.json`` last, so a reader never sees a pointer to a partial checkpoint), then the
metrics, and removes the checkpoints the mirror pruned. A local run folder is used as is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass

from voxshard.schemas import storage

POINTER = "latest.json"
SIDE_FILES = ("config.json", "metrics.jsonl")


@dataclass(frozen=True)
class RunFolder:
    """Where a run lives (``url``: a path or URL) and where it is written (``local``)."""

    url: str
    local: str

    @property
    def remote(self) -> bool:
        return self.local != self.url

    def fetch(self) -> None:
        """Make the local mirror what the URL holds: its latest checkpoint and side files."""
        if not self.remote:
            return
        shutil.rmtree(self.local, ignore_errors=True)
        os.makedirs(os.path.join(self.local, "checkpoints"), exist_ok=True)
        for name in SIDE_FILES:
            _download(storage.join(self.url, name), os.path.join(self.local, name))
        pointer = storage.join(self.url, "checkpoints", POINTER)
        if not storage.isfile(pointer):
            return
        folder = str(json.loads(storage.read_bytes(pointer))["path"])
        source = storage.join(self.url, "checkpoints", folder)
        target = os.path.join(self.local, "checkpoints", folder)
        for relative in storage.walk_files(source):
            _download(storage.join(source, relative), os.path.join(target, relative))
        _download(pointer, os.path.join(self.local, "checkpoints", POINTER))

    def publish(self, folder: str | None = None) -> None:
        """Upload checkpoint ``folder`` (a name under checkpoints/) with the pointer last,
        then the side files; drop the URL's checkpoints the mirror no longer has."""
        if not self.remote:
            return
        checkpoints = os.path.join(self.local, "checkpoints")
        if folder is not None:
            source = os.path.join(checkpoints, folder)
            for name in sorted(os.listdir(source)):
                _upload(
                    os.path.join(source, name), storage.join(self.url, "checkpoints", folder, name)
                )
            _upload(
                os.path.join(checkpoints, POINTER), storage.join(self.url, "checkpoints", POINTER)
            )
            kept = set(os.listdir(checkpoints))
            remote = storage.join(self.url, "checkpoints")
            for name in storage.listdir(remote):
                if name.startswith("step_") and name not in kept:
                    storage.remove_tree(storage.join(remote, name))
        for name in SIDE_FILES:
            path = os.path.join(self.local, name)
            if os.path.isfile(path):
                _upload(path, storage.join(self.url, name))


def run_folder(url: str, reader: bool = False) -> RunFolder:
    """The RunFolder of ``url``: a local path as itself, a URL with its local mirror. A
    ``reader`` (the probe, ``--init-from``) gets a mirror of its own, so reading a run never
    empties the mirror that a training process on this machine is writing."""
    if not storage.is_remote(url):
        return RunFolder(url, url)
    cache = os.environ.get(
        "VOXSHARD_RUN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "voxshard", "runs")
    )
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return RunFolder(url, os.path.join(cache, f"read-{digest}" if reader else digest))


def _download(source: str, target: str) -> None:
    if not storage.isfile(source):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with storage.open_read(source) as handle, open(f"{target}.part", "wb") as out:
        while chunk := handle.read(1 << 22):
            out.write(chunk)
    os.replace(f"{target}.part", target)


def _upload(source: str, target: str) -> None:
    with open(source, "rb") as handle, storage.atomic_writer(target) as out:
        while chunk := handle.read(1 << 22):
            out.write(chunk)
