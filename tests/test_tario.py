"""schemas.tario against Python's tarfile: same members for every tar format it writes."""

from __future__ import annotations

import io
import tarfile

import pytest

from voxshard.schemas.tario import ShardFormatError, iter_members

MEMBERS = [
    ("a.flac", b""),
    ("a.json", b"{}"),
    ("k" * 99 + ".json", b"x" * 511),  # a name of exactly 100 bytes with the suffix
    ("deep/" * 20 + "long.flac", bytes(range(256)) * 5),  # 109 bytes: L / path / prefix
    ("caf\u00e9-\u0939\u093f.json", b"\x00" * 513),
]


def make_tar(fmt: int, members: list[tuple[str, bytes]] = MEMBERS) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder, None)  # a non-file member is skipped
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_members_match_tarfile(fmt: int) -> None:
    members = MEMBERS
    if fmt == tarfile.USTAR_FORMAT:  # ASCII only, long names only with a folder prefix
        members = [m for m in MEMBERS if m[0].isascii() and not m[0].startswith("kkk")]
    data = make_tar(fmt, members)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = [
            (m.name, tar.extractfile(m).read())  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        ]
    assert list(iter_members(io.BytesIO(data))) == expected == members


def test_a_shard_written_by_the_build_reads_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from voxshard.pipelines.shards import Sample, write_tar

    samples = [Sample(f"k{i}", "eng", "c", "s", b"f" * (i * 300), b"{}", 1.0) for i in range(4)]
    write_tar(str(tmp_path / "s.tar"), samples)
    with open(tmp_path / "s.tar", "rb") as handle:
        members = list(iter_members(handle))
    assert members == [
        (f"k{i}.{kind}", p)
        for i in range(4)
        for kind, p in (("flac", b"f" * (i * 300)), ("json", b"{}"))
    ]


def test_truncation_and_corruption_are_errors() -> None:
    data = make_tar(tarfile.GNU_FORMAT)
    for cut in (100, 512 + 512 + 10, len(data) - 10240 + 700):
        with pytest.raises(ShardFormatError, match="ends inside"):
            list(iter_members(io.BytesIO(data[:cut])))
    flipped = bytearray(data)
    flipped[512 + 3] ^= 0x01  # a name byte of the second header
    with pytest.raises(ShardFormatError, match="checksum"):
        list(iter_members(io.BytesIO(bytes(flipped))))
    with pytest.raises(ShardFormatError, match="an empty file is not a tar"):
        list(iter_members(io.BytesIO(b"")))


def test_a_member_claiming_an_absurd_size_is_refused_unread() -> None:
    """A header with a valid checksum claiming 2^62 bytes (GNU base-256) is an error, raised
    before anything is read or allocated."""
    info = tarfile.TarInfo("huge.flac")
    info.size = 0
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[124:136] = b"\x80" + (1 << 62).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    with pytest.raises(ShardFormatError, match=r"a member claims 4611686018427387904 bytes"):
        list(iter_members(io.BytesIO(bytes(header) + bytes(1024))))
