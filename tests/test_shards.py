from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from voxshard.pipelines.shards import (
    Sample,
    archive_bytes,
    member_bytes,
    stable_hash,
    write_tar,
)


def sample(key: str, flac_size: int, json_size: int = 100) -> Sample:
    return Sample(
        key,
        "eng",
        "c",
        "train",
        bytes([len(key) % 256]) * flac_size,
        b"{" + b" " * (json_size - 2) + b"}",
        1.0,
    )


@pytest.mark.parametrize("key_length", [5, 90, 95, 96, 150, 700])
@pytest.mark.parametrize("sizes", [(0, 1), (511, 512), (513, 100_000), (1, 1023)])
def test_size_accounting_matches_real_tar_bytes(
    tmp_path: Path, key_length: int, sizes: tuple[int, int]
) -> None:
    samples = [sample("k" * key_length + str(i), size) for i, size in enumerate(sizes)]
    path = tmp_path / "s.tar"
    num_bytes, _ = write_tar(str(path), samples)
    expected = archive_bytes(sum(s.tar_bytes for s in samples))
    assert num_bytes == expected == path.stat().st_size
    assert member_bytes("a.json", 0) == 512


def test_tar_members_are_fixed_sorted_and_complete(tmp_path: Path) -> None:
    samples = [sample("b", 10), sample("a", 2000)]
    path = tmp_path / "s.tar"
    _num_bytes, sha = write_tar(str(path), sorted(samples, key=lambda s: s.key))
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a.flac", "a.json", "b.flac", "b.json"]
        for member in members:
            assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644)
            assert (member.uname, member.gname) == ("", "")
        assert tar.extractfile("a.flac").read() == samples[1].flac  # type: ignore[union-attr]
    # same samples, same bytes, and no temporary file left behind
    write_tar(str(tmp_path / "t.tar"), sorted(samples, key=lambda s: s.key))
    assert (tmp_path / "t.tar").read_bytes() == path.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["s.tar", "t.tar"]


def test_stable_hash_is_the_same_on_any_machine() -> None:
    assert stable_hash("commonvoice_en_1") == stable_hash("commonvoice_en_1")
    assert stable_hash("commonvoice_en_1") == 0x40EF25988E20A6A1  # blake2b-64, big-endian


def test_spooled_samples_come_back_exactly_in_key_order() -> None:
    """The shard writer's spool: samples of any size, added in decode order, come back whole
    and sorted by key, past the in-memory limit too."""
    from voxshard.pipelines import write

    sizes = {"k3": 0, "k0": 1, "k4": 700, "k1": 100_000, "k2": 3}  # added in this order
    originals = [sample(key, size) for key, size in sizes.items()]
    spool = write.SampleSpool()
    for original in originals:
        spool.add(original)
    assert len(spool) == 5
    back = list(spool.in_key_order(("eng", "c", "train", 0)))
    assert [s.key for s in back] == ["k0", "k1", "k2", "k3", "k4"]
    by_key = {s.key: s for s in originals}
    for got in back:
        assert (got.flac, got.json, got.duration_s) == (
            by_key[got.key].flac,
            by_key[got.key].json,
            by_key[got.key].duration_s,
        )
    spool.close()
    big = write.SampleSpool()
    payload = sample("big", write.SPOOL_MEMORY_BYTES + 10)
    big.add(payload)
    assert big.file._rolled  # type: ignore[attr-defined]  # spilled to disk past the limit
    assert next(big.in_key_order(("eng", "c", "train", 0))).flac == payload.flac
    big.close()


def test_index_rows_from_json_match_python_rows() -> None:
    """Arrow's JSON reader gives exactly the rows Table.from_pylist gives, edge cases included."""
    import json

    import pyarrow as pa

    from voxshard.pipelines.index import records_table
    from voxshard.schemas import Geo, SourceRef, Transcript, Utterance, arrow_schema

    def record(key: str, **changes: object) -> bytes:
        fields: dict[str, object] = {
            "key": key,
            "corpus": "c",
            "split": "train",
            "language": "hin",
            "source_language": "hi-IN",
            "speaker": None,
            "gender": None,
            "age": None,
            "accent": None,
            "geo": None,
            "transcript": Transcript(raw=None, normalized=None),
            "duration_s": 1.0,
            "sample_rate": 16000,
            "num_samples": 16000,
            "source": SourceRef("a.wav", None, None),
            "license": "CC0-1.0",
        }
        fields.update(changes)
        return Utterance(**fields).to_json_bytes()  # type: ignore[arg-type]

    records = [
        record("a"),
        record(
            "b",
            speaker="c_\u0938\u094d\u092a\u0940\u0915\u0930",
            geo=Geo(28.6139, 77.209, "speaker"),
            transcript=Transcript(
                "bell\x07 \u201cq\u201d \\ \u0928\u092e", "bell q", ("Latn", "Deva"), 0.25
            ),
            duration_s=0.1 + 0.2,
            source=SourceRef("x/y.sph", 0.0, 12.345678901234567),
        ),
        record("c", transcript=Transcript("la " * 1300, "la " * 1300, (), 0.0), num_samples=2**40),
    ]
    expected = pa.Table.from_pylist(
        [{**json.loads(r), "shard": "shards/hin/c-train-000000.tar"} for r in records],
        schema=arrow_schema(),
    )
    assert records_table(records, "shards/hin/c-train-000000.tar").equals(expected)


def test_batches_are_bounded_lose_nothing_and_reiterate() -> None:
    from voxshard.pipelines.batches import BATCH_ITEMS, MAX_PENDING_ITEMS, Batcher, Unpacked, unpack

    items = [(f"k{i}", i % 7) for i in range(MAX_PENDING_ITEMS + 3000)]
    batcher = Batcher(lambda item: item[1])
    out = [element for item in items for element in batcher.add(item)]
    out += list(batcher.flush())
    sizes = [len(list(unpack([batch]))) for _key, batch in out]
    assert max(sizes) == BATCH_ITEMS and sum(sizes) == len(items)
    assert all(item[1] == key for key, batch in out for item in unpack([batch]))
    assert sorted(item for _key, batch in out for item in unpack([batch])) == sorted(items)
    many = Batcher(lambda item: item[0])  # one item per key: the pending bound flushes
    flushed = [e for item in items[: MAX_PENDING_ITEMS + 1] for e in many.add(item)]
    assert len(flushed) == MAX_PENDING_ITEMS
    again = Unpacked([batch for _key, batch in out[:3]])
    assert list(again) == list(again) != []  # a GroupByKey's values can be read twice
