"""The OUT folder's lifecycle: claim it (or resume in it), clear it, tidy it when done."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from voxshard.pipelines.config import BuildConfig
from voxshard.schemas import BuildError, ConfigError, storage
from voxshard.schemas.storage import TEMP_MARKER

LOG = logging.getLogger("voxshard")
WORK_DIR = ".work"  # fragments, plan summaries and shard receipts while a build runs
MARKER = ".voxshard-build.json"  # says OUT holds this config's build until COMPLETED
OUTPUT_ENTRIES = (
    "shards",
    "utterances.parquet",
    "shards.jsonl",
    "rejects.jsonl",
    "stats.json",
    "COMPLETED",
    "README.md",  # the dataset card (pipelines/card.py)
    WORK_DIR,
    MARKER,
)


LOCK = ".voxshard.lock"  # held by the driver of a local build (fcntl.flock)
# what a shard's path may look like: shards/<ISO 639-3>/<corpus>-<split>-<NNNNNN>.tar
SHARD_PATH = re.compile(
    r"^shards/[a-z]{3}/[A-Za-z0-9_-]+-[A-Za-z0-9][A-Za-z0-9_.-]*-[0-9]{6}\.tar$"
)


def is_shard_path(relative: str) -> bool:
    """A plain relative path under OUT/shards in the build's naming (never ``..``)."""
    return bool(SHARD_PATH.match(relative)) and ".." not in relative


def _marker_bytes(config: BuildConfig) -> bytes:
    marker = {"config_hash": config.config_hash(), "config": config.identity()}
    return (json.dumps(marker, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        value = json.loads(storage.read_bytes(path))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _entries(out: str) -> list[str]:
    return [name for name in storage.listdir(out) if name != LOCK]


def prepare_output(config: BuildConfig, overwrite: bool) -> bool:
    """Check OUT and claim it; an interrupted build of the same options resumes in place.

    Returns True when OUT already holds this very build (a rerun of the same command): then
    there is nothing to do, and cleanup that a kill interrupted after COMPLETED is finished.
    """
    out = config.out
    marker_path = storage.join(out, MARKER)
    if storage.exists(out) and not storage.isdir(out):
        raise ConfigError(f"OUT {out!r} exists and is not a folder")
    entries = _entries(out) if storage.isdir(out) else []
    if entries:
        completed = _read_json(storage.join(out, "COMPLETED"))
        marker = _read_json(marker_path)
        same = config.config_hash()
        if completed is not None and completed.get("config_hash") == same and not overwrite:
            if marker is not None or storage.exists(storage.join(out, WORK_DIR)):
                LOG.info("finishing the cleanup of the completed build in %s", out)
                remove_work_dir(out)
            return True
        ours = completed is not None or marker is not None
        if overwrite:
            foreign = sorted(set(entries) & set(OUTPUT_ENTRIES))
            if not ours and foreign:
                raise ConfigError(
                    f"OUT {out!r} holds {', '.join(foreign)} that no voxshard build wrote; "
                    "--overwrite only replaces a voxshard build: choose another OUT"
                )
            clear_outputs(out)
        elif completed is not None:
            raise ConfigError(
                f"OUT {out!r} already holds a completed build with other options; "
                "pass --overwrite to replace it, or choose another OUT"
            )
        elif marker is None:
            raise ConfigError(
                f"OUT {out!r} is not empty and holds no voxshard build; choose an empty folder"
            )
        elif marker.get("config_hash") != same and _only_the_marker(out):
            LOG.info("replacing the claim of a build that wrote nothing in %s", out)
        elif marker.get("config_hash") != same:
            raise ConfigError(
                f"OUT {out!r} holds an unfinished build with other options: rerun the command "
                "that started it to finish it, or add --overwrite to discard it"
            )
        else:
            LOG.info("resuming the unfinished build in %s", out)
            remove_temporaries(out)
    try:
        storage.makedirs(out)
        storage.write_atomic(marker_path, _marker_bytes(config))
    except OSError as error:
        raise BuildError(
            f"cannot write to OUT {out!r}: {error}; choose a writable location"
        ) from error
    return False


def _only_the_marker(out: str) -> bool:
    """OUT holds a claim but nothing the build wrote (it stopped before its first file)."""
    rest = [name for name in _entries(out) if name not in (MARKER, WORK_DIR)]
    work = storage.join(out, WORK_DIR)
    return not rest and not (storage.isdir(work) and any(True for _ in storage.walk_files(work)))


def clear_outputs(out: str) -> None:
    """Remove what a voxshard build wrote in OUT, and nothing else: the shards its
    shards.jsonl lists or that carry its naming, its index files, scratch folder and marker."""
    shards_dir = storage.join(out, "shards")
    listed = []
    for line in _lines(storage.join(out, "shards.jsonl")):
        try:
            path = json.loads(line).get("path")
        except (ValueError, AttributeError):
            continue
        if isinstance(path, str) and is_shard_path(path):
            listed.append(path)
    named = (
        [f"shards/{rel}" for rel in storage.walk_files(shards_dir)]
        if storage.isdir(shards_dir)
        else []
    )
    for relative in sorted(set(listed) | {p for p in named if _ours(p)}):
        storage.remove(storage.join(out, relative))
    _remove_empty_folders(shards_dir)
    for name in OUTPUT_ENTRIES:
        if name != "shards":
            storage.remove_tree(storage.join(out, name))


def _ours(relative: str) -> bool:
    name = storage.basename(relative)
    return is_shard_path(relative) or (TEMP_MARKER in name and name.endswith(".tar"))


def _lines(path: str) -> list[bytes]:
    try:
        return storage.read_bytes(path).splitlines()
    except OSError:
        return []


def _remove_empty_folders(folder: str) -> None:
    if not storage.isdir(folder):
        return
    for name in storage.listdir(folder):
        child = storage.join(folder, name)
        if storage.isdir(child) and not storage.listdir(child):
            storage.remove_tree(child)
    if not storage.listdir(folder):
        storage.remove_tree(folder)


LEASE_REFRESH_S = 30.0  # a URL lock's heartbeat
LEASE_EXPIRY_S = 300.0  # a URL lock not refreshed this long was left by a killed build


def _lock_holder(out: str) -> dict[str, Any] | None:
    holder = _read_json(storage.join(out, LOCK))
    if holder is None or not isinstance(holder.get("refreshed"), (int, float)):
        return None
    return holder


@contextmanager
def _url_lock(out: str) -> Iterator[None]:
    """A lease on OUT at a URL: a lock object with a token and a heartbeat. Object stores
    offer no atomic create through this file layer, so the lock is written, read back and
    must still hold this build's token: two builds starting within the same second can
    both pass (documented); any later one is refused while the lease is fresh."""
    path = storage.join(out, LOCK)
    holder = _lock_holder(out)
    if holder is not None and time.time() - holder["refreshed"] < LEASE_EXPIRY_S:
        raise BuildError(
            f"OUT {out!r} is being built by another voxshard process ({holder.get('owner')}); "
            "wait for it to finish, or choose another OUT"
        )
    token = uuid.uuid4().hex
    owner = f"pid {os.getpid()} on {socket.gethostname()}"

    def write() -> None:
        lease = {"token": token, "owner": owner, "refreshed": time.time()}
        storage.write_atomic(path, json.dumps(lease).encode())

    write()
    confirmed = _lock_holder(out)
    if confirmed is None or confirmed.get("token") != token:
        raise BuildError(
            f"OUT {out!r} is being built by another voxshard process; choose another OUT"
        )
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(LEASE_REFRESH_S):
            with suppress(OSError):
                write()

    thread = threading.Thread(target=heartbeat, name="voxshard-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with suppress(OSError):
            storage.remove(path)


@contextmanager
def build_lock(out: str) -> Iterator[None]:
    """Hold OUT for one build: a second build into the same OUT is refused. A local OUT is
    locked with flock (released by the kernel when the process dies); a URL with a lease
    object (see ``_url_lock``)."""
    if storage.is_remote(out):
        with _url_lock(out):
            yield
        return
    try:
        os.makedirs(out, exist_ok=True)
        handle = os.open(os.path.join(out, LOCK), os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as error:
        raise BuildError(
            f"cannot write to OUT {out!r}: {error}; choose a writable location"
        ) from error
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(handle, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(handle)
        raise BuildError(
            f"OUT {out!r} is being built by another voxshard process (pid {holder}); "
            "wait for it to finish, or choose another OUT"
        ) from None
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with suppress(OSError):
            os.unlink(os.path.join(out, LOCK))
        os.close(handle)


def remove_temporaries(out: str) -> None:
    """Delete temp files a killed build left behind (they never carry a final name)."""
    for relative in storage.walk_files(out):
        if TEMP_MARKER in storage.basename(relative):
            storage.remove(storage.join(out, relative))


def remove_work_dir(out: str) -> None:
    """Drop the build's scratch folder once COMPLETED is written (and the marker with it)."""
    storage.remove_tree(storage.join(out, WORK_DIR))
    storage.remove(storage.join(out, MARKER))
