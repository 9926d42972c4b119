"""Deterministic WebDataset shards: exact tar size accounting, stable hashing, atomic writes.

A sample is two tar members, ``<key>.flac`` and ``<key>.json``. Members have mtime 0, uid/gid
0, empty owner names and mode 0644, and are sorted by key, so the same samples give the same
bytes. A shard is written atomically (schemas.storage: temp name + rename locally, one object
upload remotely), so a crash never leaves a partial file under a final name.
"""

from __future__ import annotations

import hashlib
import math
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from voxshard.pipelines.faults import crash_point
from voxshard.schemas import storage

TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK
GNU_NAME_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Sample:
    """One encoded utterance on its way into a shard."""

    key: str
    lang: str
    corpus: str
    split: str
    flac: bytes
    json: bytes
    duration_s: float
    clipped: int = 0  # samples clipped to 16-bit full scale (counted in stats.json)

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.lang, self.corpus, self.split)

    @property
    def tar_bytes(self) -> int:
        return member_bytes(f"{self.key}.flac", len(self.flac)) + member_bytes(
            f"{self.key}.json", len(self.json)
        )


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to OUT
    lang: str
    corpus: str
    split: str
    num_samples: int
    num_bytes: int
    duration_s: float
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "lang": self.lang,
            "corpus": self.corpus,
            "split": self.split,
            "num_samples": self.num_samples,
            "num_bytes": self.num_bytes,
            "duration_s": self.duration_s,
            "sha256": self.sha256,
        }


def member_bytes(name: str, size: int) -> int:
    """Bytes a member takes in a GNU tar: header, GNU long-name blocks, padded data."""
    header = TAR_BLOCK
    encoded = len(name.encode("utf-8"))
    if encoded >= GNU_NAME_LIMIT:
        header += TAR_BLOCK + math.ceil((encoded + 1) / TAR_BLOCK) * TAR_BLOCK
    return header + math.ceil(size / TAR_BLOCK) * TAR_BLOCK


def archive_bytes(members_bytes: int) -> int:
    """Total tar size for members totalling ``members_bytes``: end blocks, record padding."""
    return math.ceil((members_bytes + 2 * TAR_BLOCK) / TAR_RECORD) * TAR_RECORD


def stable_hash(text: str) -> int:
    """A digest-based hash that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def shard_name(corpus: str, split: str, number: int) -> str:
    return f"{corpus}-{split}-{number:06d}.tar"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


# The fixed fields of a member header as tarfile writes them in GNU format (mode 0644, uid and
# gid 0, mtime 0, regular file, "ustar  " magic, empty owner names and device fields); name,
# size and checksum go in between. A long name or a size past 11 octal digits takes
# tarfile's own path (GNU long-name blocks, base-256 sizes).
_HEAD_MODE_IDS = b"0000644\x000000000\x000000000\x00"
_HEAD_MTIME = b"00000000000\x00"
_HEAD_TAIL = b"0" + bytes(100) + b"ustar  \x00" + bytes(64 + 16 + 155 + 12)
_HEAD_SUM_BASE = sum(_HEAD_MODE_IDS) + sum(_HEAD_MTIME) + sum(_HEAD_TAIL) + 8 * ord(" ")
MAX_OCTAL_SIZE = 8**11 - 1


def member_header(name: str, size: int) -> bytes:
    """A member's header block(s), byte for byte what tarfile's GNU format writes for
    ``_tarinfo(name, size)`` (tests compare), without building a TarInfo per member."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) >= GNU_NAME_LIMIT or size > MAX_OCTAL_SIZE:
        return _tarinfo(name, size).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    name_field = encoded + bytes(100 - len(encoded))
    size_field = b"%011o\x00" % size
    checksum = _HEAD_SUM_BASE + sum(name_field) + sum(size_field)
    return b"".join(
        (
            name_field,
            _HEAD_MODE_IDS,
            size_field,
            _HEAD_MTIME,
            b"%06o\x00 " % checksum,
            _HEAD_TAIL,
        )
    )


def write_tar(path: str, samples: Iterable[Sample]) -> tuple[int, str]:
    """Write samples (already sorted) to ``path`` atomically. Returns (num_bytes, sha256)."""

    def members() -> Iterator[tuple[str, bytes]]:
        for sample in samples:
            yield f"{sample.key}.flac", sample.flac
            yield f"{sample.key}.json", sample.json
            crash_point("tar-partial")

    count, digest = write_members(path, members())
    crash_point("shard-written")
    return count, digest


def write_members(path: str, members: Iterable[tuple[str, bytes]]) -> tuple[int, str]:
    """Write (name, payload) members to a tar at ``path`` atomically, in the given order, with
    the fixed headers above. Returns (num_bytes, sha256).

    Members are written as tarfile's GNU format would (header blocks, data, zero padding to
    512, two end blocks, padding to the 10240-byte record), one write each.
    """
    digest = hashlib.sha256()
    count = 0
    with storage.atomic_writer(path) as handle:

        def emit(chunk: bytes) -> None:
            nonlocal count
            digest.update(chunk)
            handle.write(chunk)
            count += len(chunk)

        for name, payload in members:
            emit(member_header(name, len(payload)))
            emit(payload)
            emit(bytes(-len(payload) % TAR_BLOCK))
        end = 2 * TAR_BLOCK
        emit(bytes(end + (-(count + end) % TAR_RECORD)))
    return count, digest.hexdigest()


def read_samples(path: str) -> Iterator[tuple[str, bytes, bytes]]:
    """(key, FLAC bytes, JSON bytes) of every sample of a shard (a path or a URL), in order.
    A member without its pair is skipped (``voxshard verify`` names it)."""
    from voxshard.schemas.tario import iter_members

    flac: tuple[str, bytes] | None = None
    with storage.open_read(path) as stream:
        for name, payload in iter_members(stream):
            key, _, suffix = name.partition(".")
            if suffix == "flac":
                flac = (key, payload)
            elif suffix == "json" and flac is not None and flac[0] == key:
                yield key, flac[1], payload
                flac = None
