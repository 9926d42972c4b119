"""Plain per-element functions of the build: merge duplicates, turn a source item into a sample."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from corpora import CorpusOptions, SourceUtterance, origin_order
from normalizers import canonicalize
from pipelines.audio import AudioConfig, process
from pipelines.shards import Sample
from schemas import Geo, SourceRef, Transcript, Utterance, resolve_language


@dataclass(frozen=True)
class Reject:
    """One source item that was not written, and why. One line of rejects.jsonl."""

    key: str | None
    source: str  # "table:line" or the audio path relative to ROOT
    stage: str  # parse, dedup, language, decode, validate
    reason: str  # stable category, counted in stats.json
    detail: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "key": self.key,
            "source": self.source,
            "stage": self.stage,
            "reason": self.reason,
            "detail": self.detail,
        }

    def sort_key(self) -> tuple[tuple[str, int], str, str, str]:
        """Order by source path, then line number as a number, then key, stage, reason."""
        return (origin_order(self.source), self.key or "", self.stage, self.reason)


def _identity(item: SourceUtterance) -> tuple[str, float | None, float | None]:
    return (item.audio_path, item.start_s, item.end_s)


def merge_duplicates(
    items: Iterable[SourceUtterance], options: CorpusOptions
) -> tuple[SourceUtterance, list[Reject], int]:
    """Resolve every item that shares one key. Returns (kept, rejects, merged listings).

    The same audio listed twice (a Common Voice clip in train.tsv and validated.tsv) is one
    item: the listing whose split comes first in --splits is kept and the others are merged,
    not counted. Different audio under one key keeps the first by (split rank, origin) and
    rejects the rest as duplicate keys.
    """
    ordered = sorted(items, key=lambda u: (options.split_rank(u.split), origin_order(u.origin)))
    kept = ordered[0]
    rejects = []
    merged = 0
    seen = {_identity(kept)}
    for other in ordered[1:]:
        if _identity(other) in seen:
            merged += 1
            continue
        seen.add(_identity(other))
        rejects.append(
            Reject(other.key, other.origin, "dedup", "duplicate key", f"also at {kept.origin}")
        )
    return kept, rejects, merged


def make_sample(item: SourceUtterance, options: CorpusOptions, audio: AudioConfig) -> Sample:
    """Resolve the language, process the audio and build the record.

    Raises UnknownLanguageError or AudioError; the pipeline turns them into rejects.
    """
    import os

    language = resolve_language(item.source_language)
    encoded = process(
        os.path.join(options.base_dir, item.audio_path), item.start_s, item.end_s, audio
    )
    raw = item.transcript
    normalized = item.transcript_normalized
    if normalized is None and raw is not None:
        normalized = canonicalize(raw, language)
    geo = None
    if item.lat is not None and item.lon is not None:
        geo = Geo(item.lat, item.lon, "manifest")
    record = Utterance(
        key=item.key,
        corpus=item.corpus,
        split=item.split,
        language=language,
        source_language=item.source_language,
        speaker=item.speaker,
        gender=item.gender,
        age=item.age,
        accent=item.accent,
        geo=geo,
        transcript=Transcript(raw=raw, normalized=normalized),
        duration_s=encoded.duration_s,
        sample_rate=encoded.sample_rate,
        num_samples=encoded.num_samples,
        source=SourceRef(item.audio_path, item.start_s, item.end_s),
    )
    return Sample(
        key=item.key,
        lang=language,
        corpus=item.corpus,
        split=item.split,
        flac=encoded.flac,
        json=record.to_json_bytes(),
        duration_s=encoded.duration_s,
    )
