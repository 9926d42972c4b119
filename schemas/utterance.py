"""The sample record (schema version 2): what every ``<key>.json`` in a shard holds.

Field order here is the field order of the JSON and of ``utterances.parquet``. Unknown values
are ``None`` (JSON ``null``), never ``""``. Version 2 added ``license``: the licence the
sample's audio and transcript come under (its corpus's, or a manifest row's own), so a mixed
build stays traceable sample by sample.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 2
GENDERS = ("female", "male", "other")


@dataclass(frozen=True)
class Geo:
    lat: float
    lon: float
    source: str  # one of schemas.geo.GEO_SOURCES


@dataclass(frozen=True)
class Transcript:
    raw: str | None
    normalized: str | None
    scripts: tuple[str, ...] | None = None
    cmi: float | None = None


@dataclass(frozen=True)
class SourceRef:
    path: str  # relative to the build ROOT, POSIX separators
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True)
class Utterance:
    key: str
    corpus: str
    split: str
    language: str  # ISO 639-3
    source_language: str  # the tag as the source wrote it
    speaker: str | None
    gender: str | None
    age: str | None
    accent: str | None
    geo: Geo | None
    transcript: Transcript
    duration_s: float
    sample_rate: int
    num_samples: int
    source: SourceRef
    license: str  # an SPDX identifier (CC0-1.0, CC-BY-4.0), LicenseRef-..., or "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "corpus": self.corpus,
            "split": self.split,
            "language": self.language,
            "source_language": self.source_language,
            "speaker": self.speaker,
            "gender": self.gender,
            "age": self.age,
            "accent": self.accent,
            "geo": None
            if self.geo is None
            else {"lat": self.geo.lat, "lon": self.geo.lon, "source": self.geo.source},
            "transcript": {
                "raw": self.transcript.raw,
                "normalized": self.transcript.normalized,
                "scripts": None
                if self.transcript.scripts is None
                else list(self.transcript.scripts),
                "cmi": self.transcript.cmi,
            },
            "duration_s": self.duration_s,
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            "source": {
                "path": self.source.path,
                "start_s": self.source.start_s,
                "end_s": self.source.end_s,
            },
            "license": self.license,
        }

    def to_json_bytes(self) -> bytes:
        """Canonical JSON: fixed field order, UTF-8, compact, trailing newline."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Utterance:
        geo = data["geo"]
        transcript = data["transcript"]
        source = data["source"]
        scripts = transcript.get("scripts")
        return cls(
            key=data["key"],
            corpus=data["corpus"],
            split=data["split"],
            language=data["language"],
            source_language=data["source_language"],
            speaker=data["speaker"],
            gender=data["gender"],
            age=data["age"],
            accent=data["accent"],
            geo=None if geo is None else Geo(geo["lat"], geo["lon"], geo["source"]),
            transcript=Transcript(
                raw=transcript["raw"],
                normalized=transcript["normalized"],
                scripts=None if scripts is None else tuple(scripts),
                cmi=transcript.get("cmi"),
            ),
            duration_s=data["duration_s"],
            sample_rate=data["sample_rate"],
            num_samples=data["num_samples"],
            source=SourceRef(source["path"], source["start_s"], source["end_s"]),
            license=data.get("license") or "unknown",  # version 1 samples carry none
        )


@functools.cache
def arrow_schema(with_shard: bool = True) -> Any:
    """The pyarrow schema of ``utterances.parquet`` (the JSON fields, plus ``shard``); built
    once (pyarrow schemas are immutable), not at every shard: cold, it cost ~2 ms."""
    import pyarrow as pa

    fields = [
        pa.field("key", pa.string(), nullable=False),
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("source_language", pa.string(), nullable=False),
        pa.field("speaker", pa.string()),
        pa.field("gender", pa.string()),
        pa.field("age", pa.string()),
        pa.field("accent", pa.string()),
        pa.field(
            "geo",
            pa.struct(
                [
                    pa.field("lat", pa.float64()),
                    pa.field("lon", pa.float64()),
                    pa.field("source", pa.string()),
                ]
            ),
        ),
        pa.field(
            "transcript",
            pa.struct(
                [
                    pa.field("raw", pa.string()),
                    pa.field("normalized", pa.string()),
                    pa.field("scripts", pa.list_(pa.string())),
                    pa.field("cmi", pa.float64()),
                ]
            ),
            nullable=False,
        ),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field(
            "source",
            pa.struct(
                [
                    pa.field("path", pa.string()),
                    pa.field("start_s", pa.float64()),
                    pa.field("end_s", pa.float64()),
                ]
            ),
            nullable=False,
        ),
        pa.field("license", pa.string(), nullable=False),
    ]
    if with_shard:
        fields.append(pa.field("shard", pa.string(), nullable=False))
    return pa.schema(fields, metadata={b"voxshard_schema_version": str(SCHEMA_VERSION).encode()})


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the sample JSON, shipped as data/sample.schema.json."""
    from importlib import resources

    text = (
        resources.files("voxshard.schemas")
        .joinpath("data", "sample.schema.json")
        .read_text("utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema
