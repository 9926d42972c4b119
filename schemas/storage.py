"""Paths that are local or remote (``gs://``, ``s3://``, ``memory://``): the one file layer.

Corpus adapters, the build, ``verify`` and the trainer reach files only through these functions,
so ROOT and OUT may be object-store URLs on Dataflow and plain folders on a laptop. A local
path goes straight to ``os`` (fsync + rename for atomic writes); a URL goes to the fsspec
filesystem of its scheme (``gcsfs`` for ``gs://``, installed by ``voxshard[gcp]``). Object
stores publish an object only when its upload completes, so a remote write is atomic without
a rename; a failed write is discarded, never left under its final name.
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from voxshard.schemas.errors import ConfigError

TEMP_MARKER = ".tmp-"
READ_BUFFER_BYTES = 1 << 20
_INSTALL_HINT = {
    "gs": "pip install 'voxshard[gcp]' (gcsfs)",
    "gcs": "pip install 'voxshard[gcp]' (gcsfs)",
    "s3": "pip install s3fs",
}


def is_remote(path: str) -> bool:
    """True for a URL with a scheme other than ``file://``."""
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _fs(path: str) -> tuple[Any, str]:
    import fsspec

    protocol = path.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(path)  # type: ignore[no-any-return]
    except (ImportError, ValueError) as error:
        hint = _INSTALL_HINT.get(protocol, f"install the fsspec filesystem for {protocol}://")
        raise ConfigError(f"cannot open {path!r}: {error}; {hint}") from error


def join(base: str, *parts: str) -> str:
    if not is_remote(base):
        return os.path.join(_local(base), *parts)
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts if part)])


def dirname(path: str) -> str:
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(_local(path))


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(path)


def absolute(path: str) -> str:
    """``os.path.abspath`` for a local path; a URL as given, without a trailing slash."""
    return path.rstrip("/") if is_remote(path) else os.path.abspath(_local(path))


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(_local(path))
    fs, inner = _fs(path)
    return bool(fs.exists(inner))


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(_local(path))
    fs, inner = _fs(path)
    return bool(fs.isfile(inner))


def isdir(path: str) -> bool:
    """A local folder, or a URL prefix that holds at least one object."""
    if not is_remote(path):
        return os.path.isdir(_local(path))
    fs, inner = _fs(path)
    return bool(fs.isdir(inner))


def getsize(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(_local(path))
    fs, inner = _fs(path)
    return int(fs.size(inner))


def listdir(path: str) -> list[str]:
    """Entry names (files and folders) directly under ``path``, sorted."""
    if not is_remote(path):
        return sorted(os.listdir(_local(path)))
    fs, inner = _fs(path)
    return sorted(posixpath.basename(entry.rstrip("/")) for entry in fs.ls(inner, detail=False))


def walk_files(root: str) -> Iterator[str]:
    """Every file below ``root`` as a POSIX path relative to it, sorted."""
    if not is_remote(root):
        local = _local(root)
        found = []
        for folder, _dirs, files in os.walk(local):
            for name in files:
                found.append(os.path.relpath(os.path.join(folder, name), local))
        yield from sorted(name.replace(os.sep, "/") for name in found)
        return
    fs, inner = _fs(root)
    prefix = inner.rstrip("/") + "/"
    yield from sorted(path[len(prefix) :] for path in fs.find(inner) if path.startswith(prefix))


def open_read(path: str) -> IO[bytes]:
    """A seekable binary reader."""
    if not is_remote(path):
        return open(_local(path), "rb")
    fs, inner = _fs(path)
    # io.BufferedReader adds what fsspec files lack (readline(size), peek) and keeps seek exact
    return io.BufferedReader(fs.open(inner, "rb"), buffer_size=READ_BUFFER_BYTES)


def read_bytes(path: str) -> bytes:
    with open_read(path) as handle:
        return handle.read()


def makedirs(path: str) -> None:
    """Create a local folder and its parents; object stores need none."""
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)


@contextmanager
def atomic_writer(path: str) -> Iterator[IO[bytes]]:
    """A binary writer whose content appears under ``path`` only if the block completes.

    Local: a hidden temporary file beside ``path``, fsync'd and renamed. Remote: an fsspec
    file opened with ``autocommit=False``: committed (the object published) on success,
    discarded on any exception.
    """
    if is_remote(path):
        fs, inner = _fs(path)
        handle = fs.open(inner, "wb", autocommit=False)  # fsspec's transaction protocol
        try:
            yield handle
            handle.close()
        except BaseException:
            handle.discard()
            raise
        handle.commit()
        return
    local = _local(path)
    folder = os.path.dirname(local) or "."
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f".{os.path.basename(local)}{TEMP_MARKER}{uuid.uuid4().hex}")
    try:
        with open(temp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, local)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_atomic(path: str, payload: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(payload)


def remove(path: str) -> None:
    """Remove a file if it exists."""
    if not is_remote(path):
        if os.path.exists(_local(path)):
            os.remove(_local(path))
        return
    fs, inner = _fs(path)
    if fs.exists(inner):
        fs.rm(inner)


def remove_tree(path: str) -> None:
    """Remove a folder (or a URL prefix) and everything below it, if it exists."""
    if not is_remote(path):
        local = _local(path)
        if os.path.isdir(local):
            shutil.rmtree(local)
        elif os.path.exists(local):
            os.remove(local)
        return
    fs, inner = _fs(path)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


@contextmanager
def local_folder(path: str) -> Iterator[str]:
    """A local folder to write ``path``'s files into: ``path`` itself when it is local; for a
    URL, a temporary folder whose files are uploaded under the URL (each atomically) when
    the block completes, and discarded if it fails. For outputs that libraries write by file
    name (numpy, matplotlib, Parquet writers)."""
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)
        yield _local(path)
        return
    with tempfile.TemporaryDirectory(prefix="voxshard-out-") as staging:
        yield staging
        for relative in walk_files(staging):
            with (
                open(os.path.join(staging, relative), "rb") as source,
                atomic_writer(join(path, relative)) as target,
            ):
                shutil.copyfileobj(source, target, READ_BUFFER_BYTES)
