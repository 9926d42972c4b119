from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from voxshard.pipelines.plan import FileWork
from voxshard.pipelines.records import encode_items, finish_sample
from voxshard.pipelines.shards import (
    Sample,
    archive_bytes,
    member_bytes,
    stable_hash,
    write_tar,
)
from voxshard.pipelines.write import ShardContext


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


@pytest.mark.parametrize(
    "name",
    [
        "a.flac",
        "common_voice_en_41236.json",
        "x" * 99,
        "x" * 100,
        "é" * 49 + "a",
        "é" * 50,
        "ü/ß.flac",
        "a\udcffb.json",
        "k" * 700,
    ],
)
@pytest.mark.parametrize("size", [0, 1, 511, 512, 1_000_000, 8**11 - 1, 8**11])
def test_member_headers_are_what_tarfile_writes(name: str, size: int) -> None:
    from voxshard.pipelines.shards import _tarinfo, member_header

    expected = _tarinfo(name, size).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    assert member_header(name, size) == expected


def _manifest_shard_context(corpus: Path, out: Path) -> ShardContext:
    """What writing a shard of a manifest corpus under ``corpus`` into ``out`` needs."""
    from voxshard.corpora import CorpusOptions
    from voxshard.pipelines.audio import AudioConfig
    from voxshard.pipelines.records import TextOptions

    return ShardContext(
        out=str(out),
        options=CorpusOptions(root=str(corpus / "m.tsv")),
        audio=AudioConfig(),
        text=TextOptions(),
        geo_table=None,
        language_geo=False,
        verify_copies=True,
    )


def test_a_shard_streamed_in_key_order_equals_the_spooled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files whose keys sort (whole-file corpora) go straight into the tar; any other shard
    through the spool. Both give the same tar, index fragment and receipt, rejects too."""
    import numpy as np
    import soundfile as sf

    from voxshard.corpora import SourceUtterance
    from voxshard.pipelines import write
    from voxshard.pipelines.index import fragment_path
    from voxshard.pipelines.plan import FileWork, PlannedItem
    from voxshard.pipelines.records import Reject
    from voxshard.pipelines.shards import ShardInfo

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(3)
    works = []
    for index in range(6):
        name = f"u{index}.wav"
        if index != 4:  # u4 is missing: a reject in the middle
            seconds = 0.5 + 0.25 * index
            audio = 0.2 * rng.standard_normal(int(22050 * seconds)).astype(np.float32)
            sf.write(corpus / name, audio, 22050)
        utterance = SourceUtterance(
            key=f"k{index}",
            corpus="manifest",
            split="train",
            source_language="en",
            audio_path=name,
            origin=f"m.tsv:{index}",
            transcript=f"word {index}",
        )
        planned = PlannedItem(utterance, "eng", 1.0)
        works.append(FileWork(("eng", "manifest", "train"), name, (planned,), 1000, copy=False))
    works.reverse()  # the GroupByKey's order is arbitrary
    assert write.stream_order(works) == sorted(works, key=lambda w: w.items[0].item.key)

    def build(out: Path) -> tuple[ShardInfo | None, list[Reject], int]:
        context = _manifest_shard_context(corpus, out)
        return write.write_shard(context, ("eng", "manifest", "train", 0), works)

    streamed = build(tmp_path / "streamed")
    monkeypatch.setattr(write, "stream_order", lambda files: None)
    spooled = build(tmp_path / "spooled")
    assert streamed == spooled
    info, rejects, _ = streamed
    assert info is not None and info.num_samples == 5
    assert [(r.key, r.reason) for r in rejects] == [("k4", "missing audio file")]
    for relative in (
        info.path,
        fragment_path("", info.path).lstrip("/"),
        write.receipt_path("", info.path).lstrip("/"),
    ):
        assert (tmp_path / "streamed" / relative).read_bytes() == (
            tmp_path / "spooled" / relative
        ).read_bytes()
    with tarfile.open(tmp_path / "streamed" / info.path) as tar:
        assert [m.name for m in tar.getmembers()][::2] == [f"k{i}.flac" for i in (0, 1, 2, 3, 5)]
    import pyarrow.parquet as pq

    fragment = pq.ParquetFile(tmp_path / "streamed" / fragment_path("", info.path).lstrip("/"))
    assert fragment.metadata.row_group(0).column(0).compression == "SNAPPY"  # read once
    assert fragment.read()["key"].to_pylist() == ["k0", "k1", "k2", "k3", "k5"]


def test_a_shard_whose_keys_do_not_sort_like_its_files_is_spooled() -> None:
    from voxshard.corpora import SourceUtterance
    from voxshard.pipelines import write
    from voxshard.pipelines.plan import FileWork, PlannedItem

    def planned(key: str, start_s: float) -> PlannedItem:
        utterance = SourceUtterance(
            key=key,
            corpus="c",
            split="train",
            source_language="en",
            audio_path="s.wav",
            origin="t",
            start_s=start_s,
            end_s=start_s + 1,
        )
        return PlannedItem(utterance, "eng", 1.0)

    # segments in start order whose keys sort otherwise (s_10 < s_2 as text)
    session = FileWork(
        ("eng", "c", "train"), "s.wav", (planned("s_2", 0), planned("s_10", 5)), 10, copy=False
    )
    assert write.stream_order([session]) is None
    # two files whose keys interleave
    first = FileWork(
        ("eng", "c", "train"), "r.wav", (planned("s_1", 0), planned("s_4", 2)), 10, copy=False
    )
    second = FileWork(("eng", "c", "train"), "t.wav", (planned("s_3", 0),), 10, copy=False)
    assert write.stream_order([second, first]) is None
    third = FileWork(("eng", "c", "train"), "u.wav", (planned("s_5", 0),), 10, copy=False)
    assert write.stream_order([third, first]) == [first, third]


def _segmented_shard(tmp_path: Path) -> tuple[ShardContext, list[FileWork]]:
    """A shard context and its files: a session cut into 5 segments (one past the end of
    the audio: a reject in the middle), 4 whole files and a missing one."""
    import numpy as np
    import soundfile as sf

    from voxshard.corpora import SourceUtterance
    from voxshard.pipelines.plan import FileWork, PlannedItem

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(5)

    def planned(key: str, path: str, span: tuple[float, float] | None = None) -> PlannedItem:
        start_s, end_s = span if span is not None else (None, None)
        utterance = SourceUtterance(
            key=key,
            corpus="manifest",
            split="train",
            source_language="en",
            audio_path=path,
            origin=f"m.tsv:{key}",
            start_s=start_s,
            end_s=end_s,
            transcript=f"words of {key}",
        )
        return PlannedItem(utterance, "eng", 1.0)

    sf.write(corpus / "s.wav", 0.2 * rng.standard_normal(44100 * 4).astype(np.float32), 44100)
    session = (
        *(planned(f"a{i}", "s.wav", (0.8 * i, 0.8 * i + 0.6)) for i in range(4)),
        planned("a4", "s.wav", (9.0, 9.5)),  # past the end of the 4 s session
    )
    works = [FileWork(("eng", "manifest", "train"), "s.wav", session, 1000, copy=False)]
    for index in range(5):
        name = f"u{index}.wav"
        if index != 2:
            audio = 0.2 * rng.standard_normal(int(22050 * (0.5 + 0.2 * index)))
            sf.write(corpus / name, audio.astype(np.float32), 22050)
        works.append(
            FileWork(("eng", "manifest", "train"), name, (planned(f"b{index}", name),), 1000, False)
        )
    return _manifest_shard_context(corpus, tmp_path / "out"), works


REJECTED = [
    ("a4", "segment starts at or after the end of the audio"),
    ("b2", "missing audio file"),
]


def test_samples_made_in_bursts_hold_at_most_a_burst_and_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer encodes up to BURST_ITEMS items (or BURST_BYTES of FLAC), then finishes and
    writes them; the tar, fragment, receipt and rejects are the same for any burst size."""
    import dataclasses

    from voxshard.pipelines import write
    from voxshard.pipelines.index import fragment_path

    context, works = _segmented_shard(tmp_path)
    outstanding = {"now": 0, "most": 0}

    def counted(*args: object, **kwargs: object) -> object:
        for result in encode_items(*args, **kwargs):  # type: ignore[arg-type]
            outstanding["now"] += 1
            outstanding["most"] = max(outstanding["most"], outstanding["now"])
            yield result

    def finished(*args: object, **kwargs: object) -> object:
        outstanding["now"] -= 1
        return finish_sample(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(write, "encode_items", counted)
    monkeypatch.setattr(write, "finish_sample", finished)
    outputs = {}
    for items, size in ((16, 16 << 20), (1, 16 << 20), (3, 16 << 20), (16, 1)):
        monkeypatch.setattr(write, "BURST_ITEMS", items)
        monkeypatch.setattr(write, "BURST_BYTES", size)
        outstanding["most"] = 0
        out = tmp_path / f"out-{items}-{size}"
        info, rejects, _ = write.write_shard(
            dataclasses.replace(context, out=str(out)), ("eng", "manifest", "train", 0), works
        )
        assert outstanding["now"] == 0
        # a reject holds no bytes: with BURST_BYTES 1 it is finished with the next item
        assert outstanding["most"] == (2 if size == 1 else min(items, 10))
        assert info is not None and info.num_samples == 8
        assert [(r.key, r.reason) for r in rejects] == REJECTED
        outputs[(items, size)] = [
            (out / relative).read_bytes()
            for relative in (
                info.path,
                fragment_path("", info.path).lstrip("/"),
                write.receipt_path("", info.path).lstrip("/"),
            )
        ]
    first = outputs[(16, 16 << 20)]
    assert all(files == first for files in outputs.values())


def test_a_file_that_fails_midway_rejects_the_items_it_had_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voxshard.pipelines import write

    context, works = _segmented_shard(tmp_path)

    def failing(audio_path: str, *args: object, **kwargs: object) -> object:
        for count, result in enumerate(encode_items(audio_path, *args, **kwargs)):  # type: ignore[arg-type]
            if audio_path == "s.wav" and count == 2:
                raise RuntimeError("decoder state lost")
            yield result

    monkeypatch.setattr(write, "encode_items", failing)
    info, rejects, _ = write.write_shard(context, ("eng", "manifest", "train", 0), works)
    assert info is not None and info.num_samples == 6  # a0, a1, b0, b1, b3, b4
    failed = [(r.key, r.stage, r.reason, r.detail) for r in rejects if str(r.key) < "b"]
    assert failed == [
        (key, "decode", "unreadable audio", "RuntimeError: decoder state lost")
        for key in ("a2", "a3", "a4")
    ]


def test_a_decoder_that_gives_too_few_results_rejects_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is lost silently: items a file's audio work never answered are rejected."""
    import itertools

    from voxshard.pipelines import write

    context, works = _segmented_shard(tmp_path)

    def short(audio_path: str, *args: Any, **kwargs: Any) -> Any:
        results = encode_items(audio_path, *args, **kwargs)
        return itertools.islice(results, 3) if audio_path == "s.wav" else results

    monkeypatch.setattr(write, "encode_items", short)
    info, rejects, _ = write.write_shard(context, ("eng", "manifest", "train", 0), works)
    assert info is not None and info.num_samples == 7  # a0-a2, b0, b1, b3, b4
    unanswered = [(r.key, r.reason) for r in rejects if str(r.key) < "b"]
    assert unanswered == [("a3", "unreadable audio"), ("a4", "unreadable audio")]
    assert all("shorter" in str(r.detail) for r in rejects if str(r.key) < "b")
