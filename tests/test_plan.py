"""The build's plan (pipelines/plan.py), FLAC copy-through, the dry run and progress."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from conftest import tone, tree_digest, write_audio, write_tsv
from voxshard.corpora import SourceUtterance
from voxshard.pipelines import plan as planner
from voxshard.pipelines.audio import AudioConfig, copy_flac, flac_metadata
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.plan import (
    FileWork,
    GroupPlan,
    PlannedItem,
    cut_shards,
    plan_file,
    plan_group,
)
from voxshard.pipelines.progress import Progress, progress_line
from voxshard.pipelines.records import Count, Reject
from voxshard.pipelines.runner import run_build
from voxshard.schemas import AudioError

AUDIO = AudioConfig()


def item(key: str, path: str, **fields: Any) -> SourceUtterance:
    values: dict[str, Any] = {"split": "train", "source_language": "en"} | fields
    return SourceUtterance(
        key=key, corpus="manifest", audio_path=path, origin=f"m.tsv:{key}", **values
    )


def work(
    path: str, num_bytes: int, group: tuple[str, str, str] = ("eng", "c", "train")
) -> FileWork:
    planned = PlannedItem(item(path, path), "eng", 1.0)
    return FileWork(group, path, (planned,), num_bytes, copy=False)


# ---------------------------------------------------------------- cutting a group into shards


def test_cut_shards_closes_a_shard_before_the_file_that_would_pass_the_target() -> None:
    assert cut_shards([3, 3, 3, 3, 50, 1], 10) == [0, 0, 0, 1, 2, 3]
    assert cut_shards([10, 10], 10) == [0, 1]  # exactly the target fits
    assert cut_shards([], 10) == []


def test_plan_group_is_a_function_of_the_files_not_their_order() -> None:
    files = [work(f"audio/{i}.wav", 400 + 37 * (i % 5)) for i in range(200)]
    summary, assigned = plan_group(("eng", "c", "train"), files, 2000)
    reference = {w.audio_path: key for key, w in assigned}
    shuffled = list(files)
    random.Random(7).shuffle(shuffled)
    again_summary, again = plan_group(("eng", "c", "train"), iter(shuffled), 2000)
    assert {w.audio_path: key for key, w in again} == reference
    assert again_summary == summary
    numbers = sorted({key[3] for key in reference.values()})
    assert numbers == list(range(summary.shards))  # contiguous from 0
    # files are ordered by the stable hash of their path and cut greedily
    ordered = sorted(files, key=FileWork.order)
    expected = cut_shards([w.num_bytes for w in ordered], 2000)
    assert [reference[w.audio_path][3] for w in ordered] == expected
    per_shard: dict[int, int] = {}
    for w in files:
        per_shard[reference[w.audio_path][3]] = (
            per_shard.get(reference[w.audio_path][3], 0) + w.num_bytes
        )
    assert max(per_shard.values()) <= 2000
    assert (summary.files, summary.items, summary.num_bytes) == (
        200,
        200,
        sum(w.num_bytes for w in files),
    )


def test_plan_group_orders_by_path_when_hashes_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planner, "stable_hash", lambda text: 7)
    monkeypatch.setattr("voxshard.pipelines.plan.FileWork.order", lambda self: (7, self.audio_path))
    files = [work(name, 600) for name in ("c.wav", "a.wav", "b.wav", "d.wav")]
    summary, assigned = plan_group(("eng", "c", "train"), files, 1300)
    assert {w.audio_path: key[3] for key, w in assigned} == {
        "a.wav": 0,
        "b.wav": 0,
        "c.wav": 1,
        "d.wav": 1,
    }
    assert summary.shards == 2


# ---------------------------------------------------------------- planning one file


def test_timestamped_items_are_planned_without_opening_the_audio(tmp_path: Path) -> None:
    """Segment timestamps give the durations: the (absent) file is never opened here."""
    items = [
        item("b", "session.ogg", start_s=4.0, end_s=6.5, transcript="two"),
        item("a", "session.ogg", start_s=0.5, end_s=2.0, transcript="one"),
        item("c", "session.ogg", pieces=((7.0, 8.0), (9.0, 9.5))),
    ]
    [result] = plan_file("session.ogg", items, str(tmp_path), AUDIO)
    assert isinstance(result, FileWork)
    assert [p.item.key for p in result.items] == ["a", "b", "c"]  # by start time
    assert [p.duration_s for p in result.items] == [1.5, 2.5, 1.5]
    assert result.group == ("eng", "manifest", "train") and not result.copy
    assert result.num_bytes == sum(planner.estimate_bytes(d, AUDIO) for d in (1.5, 2.5, 1.5))
    assert planner.estimate_bytes(1.0, AUDIO) == int(16000 * 2 * 0.6) + 1024 + 1536


def test_items_are_checked_before_decoding(tmp_path: Path) -> None:
    items = [
        item("long", "a.wav", start_s=0.0, end_s=1.0, transcript="x" * 5000),
        item("lang", "a.wav", start_s=0.0, end_s=1.0, source_language="xx-nope"),
        item("escape", "a.wav", start_s=0.0, end_s=1.0, split="x/../../VICTIM"),
        item("dots", "a.wav", start_s=0.0, end_s=1.0, split=".."),
        item("fine", "a.wav", start_s=0.0, end_s=1.0, split="dev.clean"),
    ]
    results = list(plan_file("a.wav", items, str(tmp_path), AUDIO))
    rejects = {r.key: (r.stage, r.reason) for r in results if isinstance(r, Reject)}
    assert rejects == {
        "long": ("text", "transcript too long"),
        "lang": ("language", "unknown language"),
        "escape": ("validate", "unsafe split name"),
        "dots": ("validate", "unsafe split name"),
    }
    [kept] = [r for r in results if isinstance(r, FileWork)]
    assert kept.group == ("eng", "manifest", "dev.clean")


def test_header_decides_missing_files_and_clearly_too_long_ones(tmp_path: Path) -> None:
    write_audio(tmp_path / "long.wav", tone(440, 63.0, 8000), 8000, "wav")
    write_audio(tmp_path / "edge.wav", tone(440, 60.5, 8000), 8000, "wav")
    results = [
        *plan_file("missing.wav", [item("m", "missing.wav")], str(tmp_path), AUDIO),
        *plan_file("long.wav", [item("l", "long.wav")], str(tmp_path), AUDIO),
        *plan_file("edge.wav", [item("e", "edge.wav")], str(tmp_path), AUDIO),
    ]
    missing, long, edge = results
    assert isinstance(missing, Reject) and (missing.stage, missing.reason) == (
        "decode",
        "missing audio file",
    )
    assert isinstance(long, Reject) and long.reason == "too long"
    assert long.detail == "63.000 s by its header > --max-duration 60.0 (not decoded)"
    # within the margin the decode decides (the header only estimates some formats)
    assert isinstance(edge, FileWork) and edge.items[0].duration_s == 60.5


@pytest.mark.parametrize(
    ("subtype", "rate", "channels"),
    [
        ("VORBIS", 16000, 1),
        ("VORBIS", 44100, 2),
        ("OPUS", 16000, 1),
        ("OPUS", 48000, 2),
        ("OPUS", 8000, 1),
    ],
)
def test_ogg_headers_come_from_the_pages_and_equal_libsndfiles(
    tmp_path: Path, subtype: str, rate: int, channels: int
) -> None:
    """Vorbis and Opus lengths are read from the last page's granule position, not by
    libsndfile's scan of the stream; the result is libsndfile's to the sample."""
    from voxshard.pipelines import audio

    samples = np.stack([tone(300 + 50 * c, 3.3, rate) for c in range(channels)], axis=1)
    path = tmp_path / "a.ogg"
    sf.write(path, samples, rate, format="OGG", subtype=subtype)
    found = audio._ogg_header(str(path))
    assert found is not None
    header, _tail = found
    info = sf.info(str(path))
    assert (header.format, header.subtype, header.channels) == ("OGG", subtype, channels)
    assert (header.sample_rate, header.frames) == (info.samplerate, info.frames)
    assert audio.read_header(str(path)) == header
    # a cut file is still truncated audio; a file of another kind goes through libsndfile
    data = path.read_bytes()
    (tmp_path / "cut.ogg").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(AudioError, match="truncated audio"):
        audio.read_header(str(tmp_path / "cut.ogg"))
    write_audio(tmp_path / "b.flac", tone(300, 1.0, 16000), 16000, "flac")
    assert audio._ogg_header(str(tmp_path / "b.flac")) is None
    assert audio.read_header(str(tmp_path / "b.flac")).format == "FLAC"


def _ogg_page(body: bytes, end_of_stream: bool, granule: int, serial: bytes) -> bytes:
    """One Ogg page (RFC 3533) holding ``body`` as one packet (CRC left zero: not read)."""
    lacing = bytes([255] * (len(body) // 255) + [len(body) % 255])
    header = b"OggS" + bytes([0, 0x04 if end_of_stream else 0])
    header += granule.to_bytes(8, "little") + serial + bytes(8) + bytes([len(lacing)])
    return header + lacing + body


def test_the_last_ogg_page_is_found_when_its_audio_holds_the_bytes_oggs() -> None:
    """ "OggS" inside the last page's audio is not taken for a page: the file is whole."""
    from voxshard.pipelines import audio

    serial = b"\x01\x02\x03\x04"
    body = bytes(300) + b"OggS" + bytes(40)  # a false capture pattern 40 bytes from the end
    tail = _ogg_page(bytes(500), False, 1000, serial) + _ogg_page(body, True, 4800, serial)
    last = len(tail) - len(_ogg_page(body, True, 4800, serial))
    assert audio._last_ogg_page(tail) == last
    assert audio._ogg_shortfall(tail) is None
    assert audio._ogg_shortfall(tail[:-10]) == "its last Ogg page is cut short"
    ended = _ogg_page(bytes(500), False, 1000, serial) + _ogg_page(body, False, 4800, serial)
    assert audio._ogg_shortfall(ended) == "its last Ogg page does not end the stream"


def test_only_files_named_as_ogg_are_read_from_their_pages(tmp_path: Path) -> None:
    from voxshard.pipelines import audio

    sf.write(tmp_path / "a.ogg", tone(300, 1.0, 16000), 16000, format="OGG", subtype="VORBIS")
    (tmp_path / "a.audio").write_bytes((tmp_path / "a.ogg").read_bytes())
    assert audio._ogg_header(str(tmp_path / "a.ogg")) is not None
    assert audio._ogg_header(str(tmp_path / "a.audio")) is None  # libsndfile reads this one
    assert audio.read_header(str(tmp_path / "a.audio")) == audio.read_header(
        str(tmp_path / "a.ogg")
    )


def test_an_ogg_with_more_than_two_channels_is_rejected_by_its_header(tmp_path: Path) -> None:
    from voxshard.pipelines import audio

    samples = np.stack([tone(300 + 50 * c, 1.0, 16000) for c in range(4)], axis=1)
    sf.write(tmp_path / "four.ogg", samples, 16000, format="OGG", subtype="VORBIS")
    with pytest.raises(AudioError, match="too many channels"):
        audio.read_header(str(tmp_path / "four.ogg"))


def test_one_file_in_two_splits_is_two_pieces_of_work(tmp_path: Path) -> None:
    items = [
        item("a", "s.wav", start_s=0.0, end_s=1.0),
        item("b", "s.wav", start_s=1.0, end_s=2.0, split="dev"),
        item("c", "s.wav", start_s=2.0, end_s=3.0, source_language="pl"),
    ]
    results = list(plan_file("s.wav", items, str(tmp_path), AUDIO))
    assert [(w.group, [p.item.key for p in w.items]) for w in results] == [  # type: ignore[union-attr]
        (("eng", "manifest", "dev"), ["b"]),
        (("eng", "manifest", "train"), ["a"]),
        (("pol", "manifest", "train"), ["c"]),
    ]


@pytest.mark.parametrize(
    ("rate", "channels", "subtype", "whole", "copy"),
    [
        (16000, 1, "PCM_16", True, True),
        (22050, 1, "PCM_16", True, False),  # another rate: resampled
        (16000, 2, "PCM_16", True, False),  # stereo: mixed down
        (16000, 1, "PCM_24", True, False),  # 24-bit: requantized
        (16000, 1, "PCM_16", False, False),  # a segment of the file: cut
    ],
)
def test_only_whole_flac_files_in_the_build_format_are_copied(
    tmp_path: Path, rate: int, channels: int, subtype: str, whole: bool, copy: bool
) -> None:
    samples = np.tile(tone(440, 1.0, rate)[:, None], (1, channels))
    sf.write(tmp_path / "a.flac", samples, rate, format="FLAC", subtype=subtype)
    span = {} if whole else {"start_s": 0.1, "end_s": 0.9}
    [result] = plan_file("a.flac", [item("a", "a.flac", **span)], str(tmp_path), AUDIO)
    assert isinstance(result, FileWork) and result.copy is copy
    if copy:
        size = (tmp_path / "a.flac").stat().st_size
        assert result.num_bytes == size + planner.JSON_BYTES_ESTIMATE + 3 * 512


# ---------------------------------------------------------------- FLAC copy-through


def flac_bytes(samples: np.ndarray, rate: int = 16000, **tags: str) -> bytes:
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", rate, 1, "PCM_16", format="FLAC") as handle:
        for name, value in tags.items():
            setattr(handle, name, value)
        handle.write(samples)
    return buffer.getvalue()


def test_copied_flac_keeps_the_audio_and_drops_tags() -> None:
    pcm = (tone(300, 1.5, 16000) * 20000).astype(np.int16)
    data = flac_bytes(pcm, title="a title", artist="someone")
    copied = copy_flac(data, AUDIO)
    assert copied.num_samples == len(pcm) and copied.sample_rate == 16000
    decoded, rate = sf.read(io.BytesIO(copied.flac), dtype="int16")
    assert rate == 16000 and np.array_equal(decoded, pcm)  # libsndfile reads the copy exactly
    assert b"a title" in data and b"a title" not in copied.flac
    info, chain, _ = flac_metadata(copied.flac)
    assert (info.sample_rate, info.channels, info.bits_per_sample) == (16000, 1, 16)
    assert info.total_samples == len(pcm)
    assert chain[0] & 0x7F == 0  # STREAMINFO first; the last kept block carries the flag
    # the audio frames are the source's own bytes
    _, _, frames_at = flac_metadata(data)
    assert copied.flac.endswith(data[frames_at:])


def test_a_truncated_or_foreign_flac_is_not_copied() -> None:
    pcm = (tone(300, 2.0, 16000) * 20000).astype(np.int16)
    data = flac_bytes(pcm)
    with pytest.raises(AudioError, match="truncated audio") as cut_mid_frame:
        copy_flac(data[: len(data) * 2 // 3], AUDIO)
    decoded = int(str(cut_mid_frame.value.detail).rsplit(", ", 1)[1].split()[0])
    assert 0 < decoded < len(pcm) and decoded % 4096 == 0  # the whole frames before the cut
    # cut at a frame boundary: every frame left decodes, STREAMINFO's count says more (made
    # here by claiming 4096 samples more in STREAMINFO: bytes 8+10..8+17 of the file)
    field = int.from_bytes(data[18:26], "big") + 4096
    claims_more = data[:18] + field.to_bytes(8, "big") + data[26:]
    with pytest.raises(AudioError, match="truncated audio") as cut_at_frame:
        copy_flac(claims_more, AUDIO)
    claimed, decoded_text = str(cut_at_frame.value.detail).split(", ")
    assert claimed == f"STREAMINFO says {len(pcm) + 4096} samples"
    assert int(decoded_text.split()[0]) <= len(pcm)  # libsndfile stops at the missing frames
    with pytest.raises(AudioError, match="unreadable audio"):
        copy_flac(b"ID3" + data, AUDIO)
    with pytest.raises(AudioError, match="not a copyable FLAC"):
        copy_flac(flac_bytes(pcm, rate=8000), AUDIO)
    unverified = copy_flac(data, AUDIO, verify=False)  # the count comes from STREAMINFO
    assert unverified.num_samples == len(pcm)


def test_the_copy_check_reads_clean_files_in_large_reads_and_bad_ones_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voxshard.pipelines import audio

    pcm = (tone(300, 3.0, 16000) * 20000).astype(np.int16)
    data = flac_bytes(pcm)
    monkeypatch.setattr(audio, "FLAC_VERIFY_BLOCK_FRAMES", 10_000)  # several large reads
    assert audio._verified_frames(data, len(pcm)) == (len(pcm), None)
    assert copy_flac(data, AUDIO).num_samples == len(pcm)
    # damage in the middle: the outcome is the frame-step count's, whatever the read size
    _, _, frames_at = flac_metadata(data)
    middle = frames_at + (len(data) - frames_at) // 2
    damaged = data[:middle] + bytes(64) + data[middle + 64 :]
    assert audio._verified_frames(damaged, len(pcm)) == audio._count_decoded_frames(damaged)
    with pytest.raises(AudioError):
        copy_flac(damaged, AUDIO)


def test_a_build_copies_16k_flac_and_reencodes_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    pcm = (tone(300, 1.0, 16000) * 20000).astype(np.int16)
    (folder).mkdir()
    (folder / "copy.flac").write_bytes(flac_bytes(pcm, title="tag"))
    write_audio(folder / "resample.flac", tone(300, 1.0, 22050), 22050, "flac")
    write_tsv(
        folder / "manifest.tsv",
        ["id", "path", "language"],
        [["copy", "copy.flac", "en"], ["resample", "resample.flac", "en"]],
    )
    out = tmp_path / "out"
    stats = run_build(
        BuildConfig("manifest", str(folder / "manifest.tsv"), str(out)), progress_interval_s=None
    )
    assert stats["written"] == 2
    [shard] = list((out / "shards" / "eng").glob("*.tar"))
    with tarfile.open(shard) as tar:
        copied = tar.extractfile("manifest_copy.flac").read()  # type: ignore[union-attr]
        record = json.loads(tar.extractfile("manifest_copy.json").read())  # type: ignore[union-attr]
    source = (folder / "copy.flac").read_bytes()
    assert copied == copy_flac(source, AUDIO).flac and copied != source  # tags dropped
    assert record["num_samples"] == len(pcm)
    rows = {r["key"]: r for r in pq.read_table(out / "utterances.parquet").to_pylist()}
    assert rows["manifest_resample"]["num_samples"] == 16000


# ---------------------------------------------------------------- dry run and progress


def test_dry_run_writes_nothing_and_reports_the_plan(cv_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = BuildConfig("commonvoice", str(cv_root), str(out), shard_size_mb=0.03)
    plan = run_build(config, dry_run_only=True)
    assert not out.exists()
    assert plan["discovered"] == 11 and plan["planned_items"] == 11
    assert plan["rejected_so_far"] == 0
    assert {lang: row["source_languages"] for lang, row in plan["by_language"].items()} == {
        "deu": ["de"],
        "eng": ["en"],
        "pol": ["pl"],
    }
    stats = run_build(config, progress_interval_s=None)
    shards = (out / "shards.jsonl").read_text().splitlines()
    assert plan["shards"] == stats["shards"]["count"] == len(shards)
    assert abs(plan["hours"] - stats["hours"]) < 0.01  # header durations vs decoded
    # the whole build's graph for this runner (test_build pins it), not the dry run's own,
    # which stops after planning and summarizes instead of finishing
    assert plan["graph"]["ListSources"] == ["Impulse", "FlatMap", "Map"]  # in-process
    assert plan["graph"]["WriteShards"] == ["GroupByShard*", "Write"]
    assert plan["graph"]["Finalize"] == ["OneKey", "Gather*", "Finish"]


def test_beams_dry_run_option_on_a_local_runner_leaves_a_finished_build_alone(
    cv_root: Path, tmp_path: Path
) -> None:
    """It once ran the whole build and replaced OUT without --overwrite."""
    out = tmp_path / "out"
    config = BuildConfig("commonvoice", str(cv_root), str(out))
    run_build(config, progress_interval_s=None)
    before = tree_digest(out)
    plan = run_build(config, ["--dry_run=True"])
    assert plan["dry_run"] and "validated_only" not in plan
    assert tree_digest(out) == before


def test_progress_reads_plans_and_receipts(tmp_path: Path) -> None:
    work_dir = tmp_path / ".work"
    (work_dir / "plan" / "eng").mkdir(parents=True)
    (work_dir / "done" / "shards" / "eng").mkdir(parents=True)
    (work_dir / "plan" / "eng" / "c-train.json").write_text(
        json.dumps({"duration_s": 7200.0, "shards": 4})
    )
    (work_dir / "done" / "shards" / "eng" / "c-train-000000.json").write_text(
        json.dumps({"shard": {"duration_s": 1800.0}, "rejects": []})
    )
    stream = io.StringIO()
    progress = Progress(str(tmp_path), stream=stream)
    line = progress.report()
    assert line.startswith("progress: 1/4 shards, 0.50/2.00 h of audio (25%)")
    assert stream.getvalue() == line + "\n"  # not a terminal: whole lines, no carriage return
    assert progress_line(3600, 2, 1800, 1, 60) == (
        "progress: 1/2 shards, 0.50/1.00 h of audio (50%), 30.0x real time, ETA 1m00s"
    )


def test_counts_and_rejects_are_plain_events() -> None:
    from voxshard.pipelines.plan import dry_run_summary

    summary = dry_run_summary(
        [Count("parsed", 5), Count("merged", 1), Reject(None, "t:1", "parse", "bad row")]
    )
    assert summary["discovered"] == 5 and summary["rejected_by_reason"] == {"bad row": 1}


def test_transported_records_pickle_as_their_fields() -> None:
    """Items, plans, rejects and counts cross every GroupByKey pickled: each comes back equal,
    through its constructor (pickled_by_fields), not dataclasses' per-field __setstate__."""
    import pickle

    utterance = item(
        "k1",
        "raw_audios/en/2019/s.ogg",
        start_s=1.25,
        end_s=4.0,
        pieces=((1.25, 2.0), (2.5, 4.0)),
        speaker="s1",
        transcript="hello",
        transcript_normalized=None,
        normalized_by_source=True,
        lat=50.8,
        lon=4.35,
        duration_s=None,
        license="CC0",
    )
    planned = PlannedItem(utterance, "eng", 2.75)
    work = FileWork(("eng", "manifest", "train"), utterance.audio_path, (planned,), 88_000, False)
    group_plan = GroupPlan(("eng", "manifest", "train"), 1, 1, 1, 2.75, 88_000, ("en",))
    records = [
        utterance,
        planned,
        work,
        group_plan,
        Reject(None, "a.tsv:2", "parse", "x"),
        Count("parsed", 7),
    ]
    for record in records:
        reduced = record.__reduce__()
        assert reduced[0] is type(record)
        back = pickle.loads(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
        assert back == record and type(back) is type(record)
    assert Count("parsed", 7).__reduce__() == (Count, ("parsed", 7))


def test_pickled_by_fields_refuses_what_its_fields_cannot_rebuild() -> None:
    from dataclasses import dataclass, field

    from voxshard.schemas.pickling import pickled_by_fields

    @dataclass(frozen=True)
    class Derived:
        a: int
        b: int = field(init=False, default=0)

    @dataclass(frozen=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (Derived, Checked, int):
        with pytest.raises(TypeError):
            pickled_by_fields(cls)

    @pickled_by_fields
    @dataclass(frozen=True, slots=True)
    class One:
        a: str

    assert One("x").__reduce__() == (One, ("x",))
