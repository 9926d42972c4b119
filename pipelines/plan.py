"""Plan the shards from metadata alone: the plain functions behind PlanShards.

1. ``plan_file``: one audio file's items (after dedup) are checked (transcript length, language,
   split name), their durations taken from what the corpus says (segment timestamps) or from
   the file's header, and grouped into one ``FileWork`` per (language, corpus, split). A file
   whose header cannot be read is rejected here, before any shard is planned around it.
2. ``plan_group``: a group's files are ordered by a stable hash of their path and cut into
   shards of about ``--shard-size`` estimated bytes, numbered 0, 1, 2, ... contiguously.

The plan is a pure function of the items and the options: the same on every runner, with any
worker count and any bundling. Estimated bytes are raw 16-bit PCM at the build rate times
FLAC_RATIO_ESTIMATE, plus the JSON record and tar headers; a copied FLAC counts its own size.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxshard.corpora import SourceUtterance
from voxshard.pipelines.audio import AudioConfig, AudioHeader, read_header
from voxshard.pipelines.records import Count, Reject
from voxshard.pipelines.shards import TAR_BLOCK, stable_hash
from voxshard.schemas import AudioError, UnknownLanguageError, resolve_language, storage
from voxshard.schemas.pickling import pickled_by_fields

# FLAC keeps ~45-70 % of 16-bit speech; 0.6 aims shards at --shard-size. Audio that does not
# compress (noise) makes a shard up to 1 / 0.6 = 1.67x the target; see the README.
FLAC_RATIO_ESTIMATE = 0.6
JSON_BYTES_ESTIMATE = 1024  # a sample's JSON record with a sentence of transcript
SAMPLE_OVERHEAD_BYTES = 3 * TAR_BLOCK  # two member headers + the padding of two members
# A longer transcript is not one utterance's (60 s of fast speech is ~1,200 characters); it is
# rejected before its audio is decoded, so a corrupt table cannot fill memory or the index.
MAX_TRANSCRIPT_CHARS = 4096
# A split becomes part of a shard's file name: letters, digits, '_', '-', '.', no '..'.
SAFE_SPLIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A header that says a file is this much longer than --max-duration rejects it undecoded
# (MP3 headers only estimate their length, so they get a wider margin).
HEADER_TOO_LONG_MARGIN_S = 1.0
MP3_HEADER_FACTOR = 2.0

Group = tuple[str, str, str]  # (language ISO 639-3, corpus, split)
ShardKey = tuple[str, str, str, int]  # (language, corpus, split, shard number)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PlannedItem:
    item: SourceUtterance
    language: str  # ISO 639-3
    duration_s: float  # estimated from timestamps or the header


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class FileWork:
    """The items of one audio file that go into one group's shards: the unit of decoding."""

    group: Group
    audio_path: str  # relative to the corpus base folder
    items: tuple[PlannedItem, ...]  # in (start, key) order
    num_bytes: int  # estimated bytes in the shard
    copy: bool  # a whole-file FLAC already in the build's format: its bytes are copied

    @property
    def duration_s(self) -> float:
        return sum(planned.duration_s for planned in self.items)

    def order(self) -> tuple[int, str]:
        """The stable order of files within a group (spreads speakers and sessions)."""
        return (stable_hash(self.audio_path), self.audio_path)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class GroupPlan:
    """What the plan holds for one group: a line of the dry run, the total for progress."""

    group: Group
    files: int
    items: int
    shards: int
    duration_s: float
    num_bytes: int
    source_languages: tuple[str, ...]  # the tags the corpus used for this language

    def to_dict(self) -> dict[str, object]:
        language, corpus, split = self.group
        return {
            "language": language,
            "corpus": corpus,
            "split": split,
            "files": self.files,
            "items": self.items,
            "shards": self.shards,
            "duration_s": round(self.duration_s, 3),
            "num_bytes": self.num_bytes,
            "source_languages": list(self.source_languages),
        }


def check_item(item: SourceUtterance) -> str | Reject:
    """The item's ISO 639-3 language, or why it cannot be written (decided before decoding)."""
    longest = max(len(item.transcript or ""), len(item.transcript_normalized or ""))
    if longest > MAX_TRANSCRIPT_CHARS:
        detail = f"{longest} characters; an utterance may have {MAX_TRANSCRIPT_CHARS}"
        return Reject(item.key, item.origin, "text", "transcript too long", detail)
    if not SAFE_SPLIT.match(item.split) or ".." in item.split:
        detail = f"{item.split[:80]!r}: a split names shard files (letters, digits, _ - .)"
        return Reject(item.key, item.origin, "validate", "unsafe split name", detail)
    try:
        return resolve_language(item.source_language)
    except UnknownLanguageError as error:
        return Reject(item.key, item.origin, "language", "unknown language", error.tag)


def start_s(item: SourceUtterance) -> float:
    """Where the utterance starts in its file (its first piece, for VAD-cut ones)."""
    return item.pieces[0][0] if item.pieces else (item.start_s or 0.0)


# Characters (not counting spaces) per second of a transcribed utterance. Read speech runs at
# about 10-20 a second in alphabetic scripts and 3-8 in CJK; 40 is out of reach, and a
# long clip whose transcript has under 0.1 a second has lost its text (or its audio).
MAX_CHARS_PER_S = 40.0
MIN_CHARS_PER_S = 0.1
MIN_CHECKED_S = 1.0  # shorter clips are left alone: durations that small are imprecise
MIN_CHECKED_SPARSE_S = 10.0


def implausible_speaking_rate(item: SourceUtterance, duration_s: float) -> str | None:
    """Why a transcript cannot belong to ``duration_s`` of speech, or None."""
    text = item.transcript or ""
    characters = sum(map(len, text.split()))  # split() drops exactly what isspace() matches
    if not characters or duration_s < MIN_CHECKED_S:
        return None
    rate = characters / duration_s
    if rate > MAX_CHARS_PER_S or (duration_s >= MIN_CHECKED_SPARSE_S and rate < MIN_CHARS_PER_S):
        return (
            f"{characters} characters in {duration_s:.2f} s ({rate:.2f}/s; "
            f"speech is between {MIN_CHARS_PER_S} and {MAX_CHARS_PER_S})"
        )
    return None


def _needs_header(item: SourceUtterance) -> bool:
    """A header read gives what the item's own metadata does not: the length of an
    open-ended item, and for a FLAC file whether it can be copied as it is."""
    if item.pieces is not None or item.end_s is not None:
        return False
    stated = item.duration_s is not None and not item.audio_path.lower().endswith(".flac")
    return not stated


def _whole_file(item: SourceUtterance) -> bool:
    return item.pieces is None and item.start_s is None and item.end_s is None


def item_duration_s(item: SourceUtterance, header: AudioHeader | None) -> float:
    """The utterance's duration from its timestamps, else from the file's header."""
    if item.pieces:
        return sum(max(0.0, end - start) for start, end in item.pieces)
    start = start_s(item)
    end = item.end_s
    if header is not None:
        end = header.duration_s if end is None else min(end, header.duration_s)
    elif end is None and item.duration_s is not None:
        end = item.duration_s
    return max(0.0, (end or 0.0) - start)


def estimate_bytes(duration_s: float, audio: AudioConfig) -> int:
    """Estimated bytes of one re-encoded sample in a shard."""
    flac = duration_s * audio.sample_rate * 2 * FLAC_RATIO_ESTIMATE
    return int(flac) + JSON_BYTES_ESTIMATE + SAMPLE_OVERHEAD_BYTES


def copyable(items: Sequence[PlannedItem], header: AudioHeader | None, rate: int) -> bool:
    """One whole-file item of a FLAC that is mono, 16-bit, at the build rate."""
    return (
        header is not None
        and len(items) == 1
        and _whole_file(items[0].item)
        and (header.format, header.subtype, header.channels) == ("FLAC", "PCM_16", 1)
        and header.sample_rate == rate
    )


def _too_long_by_header(duration_s: float, header: AudioHeader, audio: AudioConfig) -> bool:
    limit = audio.max_duration_s + HEADER_TOO_LONG_MARGIN_S
    if header.format == "MP3":
        limit *= MP3_HEADER_FACTOR
    return duration_s > limit


def plan_file(
    audio_path: str, items: Iterable[SourceUtterance], base_dir: str, audio: AudioConfig
) -> Iterator[FileWork | Reject]:
    """One audio file's items -> a FileWork per group, and a Reject for every item that cannot
    be written for a reason known before decoding."""
    accepted: list[tuple[SourceUtterance, str]] = []
    for item in sorted(items, key=lambda u: (start_s(u), u.key)):
        checked = check_item(item)
        if isinstance(checked, Reject):
            yield checked
        else:
            accepted.append((item, checked))
    if not accepted:
        return
    header = None
    if any(_needs_header(item) for item, _ in accepted):
        try:
            header = read_header(storage.join(base_dir, audio_path))
        except AudioError as error:
            for item, _ in accepted:
                yield Reject(item.key, item.audio_path, error.stage, error.reason, error.detail)
            return
    groups: dict[Group, list[PlannedItem]] = defaultdict(list)
    for item, language in accepted:
        duration_s = item_duration_s(item, header)
        by_header = header is not None and _needs_header(item)
        if by_header and header is not None and _too_long_by_header(duration_s, header, audio):
            detail = (
                f"{duration_s:.3f} s by its header > --max-duration {audio.max_duration_s}"
                " (not decoded)"
            )
            yield Reject(item.key, item.audio_path, "validate", "too long", detail)
            continue
        stated = item.duration_s is not None and item.end_s is None and item.pieces is None
        if stated and duration_s > audio.max_duration_s + HEADER_TOO_LONG_MARGIN_S:
            detail = (
                f"{duration_s:.3f} s by the corpus's duration table > --max-duration "
                f"{audio.max_duration_s} (not decoded)"
            )
            yield Reject(item.key, item.audio_path, "validate", "too long", detail)
            continue
        rate = implausible_speaking_rate(item, duration_s)
        if rate is not None:
            yield Reject(item.key, item.origin, "text", "implausible speaking rate", rate)
            continue
        groups[(language, item.corpus, item.split)].append(PlannedItem(item, language, duration_s))
    for group in sorted(groups):
        members = tuple(groups[group])
        copy = copyable(members, header, audio.sample_rate)
        if copy and header is not None:
            num_bytes = header.num_bytes + JSON_BYTES_ESTIMATE + SAMPLE_OVERHEAD_BYTES
        else:
            num_bytes = sum(estimate_bytes(p.duration_s, audio) for p in members)
        yield FileWork(group, audio_path, members, num_bytes, copy)


def cut_shards(sizes: Sequence[int], target_bytes: int) -> list[int]:
    """The shard number of each file (in plan order): a shard is closed before the file that
    would take it past ``target_bytes``; a file larger than the target gets its own."""
    numbers = []
    shard, total = 0, 0
    for size in sizes:
        if total and total + size > target_bytes:
            shard, total = shard + 1, 0
        numbers.append(shard)
        total += size
    return numbers


def plan_group(
    group: Group, files: Iterable[FileWork], target_bytes: int
) -> tuple[GroupPlan, Iterator[tuple[ShardKey, FileWork]]]:
    """A group's files -> its summary and (shard key, file) pairs.

    Two passes over ``files`` (a grouped iterable that runners can iterate again): the first
    keeps only a 64-bit hash and an estimate per file (16 bytes, so millions of files fit a
    worker), the second hands out each file with its shard number. Equal hashes (about one in
    10^12 group pairs) fall back to ordering by the full (hash, path)."""
    if iter(files) is files:  # a one-shot iterator: keep it
        files = list(files)
    hashes, sizes = [], []
    items, duration_s = 0, 0.0
    tags: set[str] = set()
    for work in files:
        hashes.append(stable_hash(work.audio_path))
        sizes.append(work.num_bytes)
        items += len(work.items)
        duration_s += work.duration_s
        tags.update(p.item.source_language for p in work.items)
    hash_array = np.array(hashes, dtype=np.uint64)
    order = np.argsort(hash_array, kind="stable")
    sorted_hashes = hash_array[order]
    collisions = len(sorted_hashes) > 1 and bool(np.any(sorted_hashes[1:] == sorted_hashes[:-1]))
    if collisions:
        paths = sorted((work.order(), i) for i, work in enumerate(files))
        order = np.array([i for _order, i in paths], dtype=np.int64)
    numbers = cut_shards([sizes[i] for i in order], target_bytes)
    summary = GroupPlan(
        group=group,
        files=len(hashes),
        items=items,
        shards=(numbers[-1] + 1) if numbers else 0,
        duration_s=duration_s,
        num_bytes=sum(sizes),
        source_languages=tuple(sorted(tags)),
    )

    def assigned() -> Iterator[tuple[ShardKey, FileWork]]:
        if collisions:
            position = {int(i): n for i, n in zip(order, numbers, strict=True)}
            for i, work in enumerate(files):
                yield (*group, position[i]), work
            return
        for work in files:
            at = int(np.searchsorted(sorted_hashes, np.uint64(stable_hash(work.audio_path))))
            yield (*group, numbers[at]), work

    return summary, assigned()


def dry_run_summary(events: Iterable[object]) -> dict[str, Any]:
    """What a build would write, from the events of parse and plan: items, rejects so far by
    reason, and per language the planned hours, shards and the tags that resolved to it."""
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    plans: list[GroupPlan] = []
    for event in events:
        if isinstance(event, Count):
            counts[event.name] += event.value
        elif isinstance(event, Reject):
            reasons[event.reason] += 1
            counts["parse rejects"] += event.stage == "parse"
        elif isinstance(event, GroupPlan):
            plans.append(event)
    plans.sort(key=lambda plan: plan.group)
    by_language: dict[str, dict[str, Any]] = {}
    for plan in plans:
        row = by_language.setdefault(
            plan.group[0], {"items": 0, "hours": 0.0, "shards": 0, "source_languages": []}
        )
        row["items"] += plan.items
        row["hours"] = round(row["hours"] + plan.duration_s / 3600, 6)
        row["shards"] += plan.shards
        row["source_languages"] = sorted(set(row["source_languages"]) | set(plan.source_languages))
    return {
        "dry_run": True,
        # as stats.json counts them: listings merged away are not items, bad rows are
        "discovered": counts["parsed"] - counts["merged"] + counts["parse rejects"],
        "parsed": counts["parsed"],
        "merged_duplicate_listings": counts["merged"],
        "planned_items": sum(plan.items for plan in plans),
        "rejected_so_far": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "hours": round(sum(plan.duration_s for plan in plans) / 3600, 6),
        "shards": sum(plan.shards for plan in plans),
        "by_language": by_language,
        "groups": [plan.to_dict() for plan in plans],
    }
