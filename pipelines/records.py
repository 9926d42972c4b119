"""Plain per-element functions of the build: merge duplicates, turn a source item into a sample."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from voxshard.corpora import CorpusOptions, SourceUtterance, get_corpus, origin_order
from voxshard.corpora.geo_table import GeoTable
from voxshard.encoders import language_coordinates
from voxshard.normalizers import EMPTY, SOURCE_POLICY, Lexicon, normalize
from voxshard.pipelines.audio import AudioConfig, EncodedAudio, Span, copy_flac, process_file
from voxshard.pipelines.shards import Sample
from voxshard.schemas import (
    AudioError,
    Geo,
    SourceRef,
    Transcript,
    Utterance,
    storage,
)
from voxshard.schemas.pickling import pickled_by_fields


@pickled_by_fields
@dataclass(frozen=True, slots=True)
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


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Count:
    """A number a step reports to Finalize (items parsed from a table, listings merged)."""

    name: str
    value: int


def _listing(item: SourceUtterance) -> SourceUtterance:
    """What must be equal for two listings to be one utterance: all but split and origin."""
    return replace(item, split="", origin="")


def merge_duplicates(
    items: Iterable[SourceUtterance], options: CorpusOptions
) -> tuple[SourceUtterance, list[Reject], int]:
    """Resolve every item that shares one key. Returns (kept, rejects, merged listings).

    The same utterance listed twice (a Common Voice clip in train.tsv and validated.tsv: the
    same audio, span and metadata) is one item: the listing whose split comes first in
    --splits is kept and the others are merged, not counted. Anything else under one key
    (other audio, or the same audio with other metadata) keeps the first by (split rank,
    origin) and rejects the rest as duplicate keys, naming the row that was kept.
    """
    ordered = sorted(items, key=lambda u: (options.split_rank(u.split), origin_order(u.origin)))
    kept = ordered[0]
    rejects = []
    merged = 0
    same = _listing(kept)
    for other in ordered[1:]:
        if _listing(other) == same:
            merged += 1
            continue
        detail = f"also at {kept.origin}"
        if other.audio_path == kept.audio_path:
            detail += " (same audio, other metadata)"
        rejects.append(Reject(other.key, other.origin, "dedup", "duplicate key", detail))
    return kept, rejects, merged


@dataclass(frozen=True)
class TextOptions:
    """How transcripts are normalized: a policy, an optional lexicon, a to-native scheme."""

    policy: str = "canonical"
    lexicon: Lexicon = EMPTY
    scheme: str | None = None


def _spans(item: SourceUtterance) -> tuple[Span, ...]:
    return item.pieces if item.pieces else ((item.start_s, item.end_s),)


def _geo(
    item: SourceUtterance, language: str, geo_table: GeoTable | None, language_geo: bool
) -> Geo | None:
    """The row's own coordinates, else --geo's speaker or language row, else (when
    ``language_geo``) the language's location recovered from lang2vec, else None."""
    if item.lat is not None and item.lon is not None:
        return Geo(item.lat, item.lon, "manifest")
    found = None if geo_table is None else geo_table.lookup(item.corpus, item.speaker, language)
    if found is not None:
        return Geo(*found)
    place = language_coordinates(language) if language_geo else None
    return None if place is None else Geo(place[0], place[1], "language")


def encode_items(
    audio_path: str,
    items: Sequence[tuple[SourceUtterance, str]],
    options: CorpusOptions,
    audio: AudioConfig,
    copy: bool = False,
    verify_copies: bool = True,
) -> Iterator[EncodedAudio | AudioError]:
    """The audio work for every (item, ISO 639-3 language) of one audio file, which is
    opened and decoded once: an EncodedAudio or the AudioError that rejects it, one per item
    in the order of ``items``, as each is encoded. ``copy``: the one whole-file item's FLAC
    bytes are copied (audio.copy_flac)."""
    path = storage.join(options.base_dir, audio_path)
    if copy:
        yield _copied(path, audio, verify_copies)
        return
    yield from process_file(path, [_spans(item) for item, _ in items], audio)


def finish_sample(
    item: SourceUtterance,
    language: str,
    result: EncodedAudio | AudioError,
    geo_table: GeoTable | None = None,
    text: TextOptions = TextOptions(),
    language_geo: bool = True,
) -> Sample | Reject:
    """An item's Sample (its record: geo, normalized transcript, JSON) from its encoded
    audio, or its Reject (decode or validate stage) from the AudioError."""
    if isinstance(result, AudioError):
        return Reject(item.key, item.audio_path, result.stage, result.reason, result.detail)
    geo = _geo(item, language, geo_table, language_geo)
    return _sample(item, language, result, geo, _transcript(item, language, text))


def _copied(path: str, audio: AudioConfig, verify: bool) -> EncodedAudio | AudioError:
    try:
        return copy_flac(storage.read_bytes(path), audio, verify)
    except FileNotFoundError:
        return AudioError("decode", "missing audio file")
    except (OSError, ValueError) as error:  # a folder, no permission, a NUL byte
        return AudioError("decode", "unreadable audio", str(error))
    except AudioError as error:
        return error


def _transcript(item: SourceUtterance, language: str, options: TextOptions) -> Transcript:
    """The raw text, and the policy applied to it. Where the source's own normalization must
    come first (BABEL without its tags: ``normalized_by_source``) the policy gets that text;
    the ``source`` policy takes the corpus's own normalized text where it ships one
    (VoxPopuli's normed_text), canonicalized."""
    raw = item.transcript
    policy = options.policy
    source_text = item.transcript_normalized if item.normalized_by_source else raw
    if source_text is None:  # no raw text, only the corpus's normalization: use that
        source_text = item.transcript_normalized
    if policy == SOURCE_POLICY and item.transcript_normalized is not None:
        source_text, policy = item.transcript_normalized, "canonical"
    if source_text is None:
        return Transcript(raw=raw, normalized=None)
    result = normalize(source_text, language, policy, options.lexicon, options.scheme)
    return Transcript(
        raw=raw,
        normalized=result.text or None,
        scripts=result.scripts,
        cmi=round(result.cmi, 4),
    )


def _sample(
    item: SourceUtterance,
    language: str,
    encoded: EncodedAudio,
    geo: Geo | None,
    transcript: Transcript,
) -> Sample:
    start_s, end_s = item.start_s, item.end_s
    if item.pieces:
        start_s, end_s = item.pieces[0][0], item.pieces[-1][1]
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
        transcript=transcript,
        duration_s=encoded.duration_s,
        sample_rate=encoded.sample_rate,
        num_samples=encoded.num_samples,
        source=SourceRef(item.audio_path, start_s, end_s),
        license=item.license or get_corpus(item.corpus).license,
    )
    return Sample(
        key=item.key,
        lang=language,
        corpus=item.corpus,
        split=item.split,
        flac=encoded.flac,
        json=record.to_json_bytes(),
        duration_s=encoded.duration_s,
        clipped=encoded.clipped,
    )
