"""``voxshard similarity``: lang2vec language-similarity matrices and speaker distances.

Reads builds' ``utterances.parquet`` (streamed by row group), writes ``languages.json``,
``lang_<set>.npy``, ``language_pairs.parquet``, ``speakers.parquet``,
``speaker_haversine_km.npy``, ``speaker_geo_similarity.npy``, plots and ``report.json``.
Speaker matrices are written block by block into .npy files (header first, then rows), so
memory stays bounded however many speakers there are.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from voxshard.encoders import (
    geo_similarity,
    language_coordinates,
    load_feature_set,
    masked_cosine,
    unit_vectors,
)
from voxshard.encoders.geo import block_rows, chord_distances_km
from voxshard.encoders.lang2vec import feature_sets
from voxshard.schemas import ConfigError, UnknownLanguageError, resolve_language, storage

LOG = logging.getLogger("voxshard")


@dataclass(frozen=True)
class SimilarityConfig:
    builds: tuple[str, ...]
    out: str
    languages: tuple[str, ...] = ()
    feature_sets: tuple[str, ...] = ("syntax_knn",)
    geo_scale_km: float = 500.0
    min_shared: int = 20
    plots: bool = True

    def __post_init__(self) -> None:
        problems = []
        for build in self.builds:
            if not storage.isfile(storage.join(build, "utterances.parquet")):
                problems.append(f"{build!r} holds no utterances.parquet: is it a build folder?")
        for tag in self.languages:
            try:
                resolve_language(tag)
            except UnknownLanguageError as error:
                problems.append(f"--languages: {error}")
        known = feature_sets()
        problems.extend(
            f"unknown feature set {name!r}; choose from {', '.join(known)}"
            for name in self.feature_sets
            if name not in known
        )
        if not self.builds and not self.languages:
            problems.append("give at least one BUILD or --languages")
        if self.geo_scale_km <= 0:
            problems.append(f"--geo-scale-km {self.geo_scale_km} must be positive")
        if problems:
            raise ConfigError(problems)


@dataclass
class SpeakerTally:
    utterances: int = 0
    seconds: float = 0.0
    languages: Counter[str] = field(default_factory=Counter)
    places: Counter[tuple[float, float, str]] = field(default_factory=Counter)


def collect(builds: Sequence[str]) -> tuple[set[str], dict[str, SpeakerTally]]:
    """Languages and per-speaker tallies from builds, streaming utterances.parquet."""
    import pyarrow.parquet as pq

    languages: set[str] = set()
    speakers: dict[str, SpeakerTally] = defaultdict(SpeakerTally)
    for build in builds:
        parquet = pq.ParquetFile(storage.open_read(storage.join(build, "utterances.parquet")))
        for batch in parquet.iter_batches(columns=["speaker", "language", "geo", "duration_s"]):
            for speaker, language, geo, seconds in zip(
                *(batch.column(i).to_pylist() for i in range(4)), strict=True
            ):
                languages.add(language)
                if speaker is None:
                    continue
                tally = speakers[speaker]
                tally.utterances += 1
                tally.seconds += seconds
                tally.languages[language] += 1
                if geo is not None and geo["source"] != "language":
                    tally.places[(geo["lat"], geo["lon"], geo["source"])] += 1
    return languages, speakers


def speaker_rows(speakers: dict[str, SpeakerTally]) -> list[dict[str, Any]]:
    """One row per speaker (sorted): main language, location (own, else the language's)."""
    rows = []
    for speaker in sorted(speakers):
        tally = speakers[speaker]
        language = min(tally.languages.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        lat = lon = None
        source = None
        if tally.places:
            (lat, lon, source), _count = min(tally.places.items(), key=lambda kv: (-kv[1], kv[0]))
        else:
            found = language_coordinates(language)
            if found is not None:
                (lat, lon), source = found, "language"
        rows.append(
            {
                "speaker": speaker,
                "language": language,
                "lat": lat,
                "lon": lon,
                "geo_source": source,
                "utterances": tally.utterances,
                "hours": round(tally.seconds / 3600.0, 6),
            }
        )
    return rows


def write_npy_blocks(path: str, lat_lon: npt.NDArray[np.float64], scale_km: float | None) -> None:
    """n x n float32 distances (or exp(-d/scale) with ``scale_km``) written row block by row
    block after the .npy header: peak memory is one block."""
    n = len(lat_lon)
    units = unit_vectors(lat_lon)
    step = block_rows(n)
    temp = f"{path}.tmp"
    with open(temp, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (n, n)}
        )
        for start in range(0, n, step):
            distances = chord_distances_km(units[start : start + step], units)
            values = distances if scale_km is None else geo_similarity(distances, scale_km)
            handle.write(values.astype("<f4").tobytes())
    os.replace(temp, path)


def language_matrices(
    languages: list[str], config: SimilarityConfig, report: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write lang_<set>.npy per set; return the pair rows; fill the report."""
    pairs = []
    for name in config.feature_sets:
        features = load_feature_set(name)
        resolved = []
        unknown, substituted = [], {}
        min_shared = min(config.min_shared, len(features.feature_names))
        for code in languages:
            used, note = features.resolve(code, min_shared)
            resolved.append(used)
            if used is None:
                unknown.append(code)
            elif note is not None:
                substituted[code] = used
        similarity, shared = masked_cosine(features.vectors(resolved), min_shared=min_shared)
        similarity = np.maximum(similarity, similarity.T)  # exact symmetry (NaN-aware max)
        np.fill_diagonal(similarity, 1.0)
        np.save(os.path.join(config.out, f"lang_{name}.npy"), similarity.astype(np.float32))
        nan_pairs = []
        for i in range(len(languages)):
            for j in range(i + 1, len(languages)):
                value = float(similarity[i, j])
                if np.isnan(value):
                    reason = (
                        "unknown language"
                        if resolved[i] is None or resolved[j] is None
                        else f"fewer than {min_shared} shared features ({int(shared[i, j])})"
                    )
                    nan_pairs.append(
                        {"lang_a": languages[i], "lang_b": languages[j], "reason": reason}
                    )
                pairs.append(
                    {
                        "lang_a": languages[i],
                        "lang_b": languages[j],
                        "set": name,
                        "similarity": None if np.isnan(value) else value,
                        "shared_features": int(shared[i, j]),
                    }
                )
        report["feature_sets"][name] = {
            "features": len(features.feature_names),
            "min_shared": min_shared,
            "unknown_languages": unknown,
            "substituted": substituted,
            "nan_pairs": nan_pairs,
        }
        if config.plots:
            from voxshard.pipelines.plots import heatmap

            heatmap(similarity, languages, name, os.path.join(config.out, f"lang_{name}.png"))
    return pairs


def run_similarity(config: SimilarityConfig) -> dict[str, Any]:
    """Every output file of ``voxshard similarity`` into ``config.out`` (a folder or a URL:
    written locally, then uploaded file by file when all of them are done)."""
    with storage.local_folder(config.out) as local:
        return _similarity(config, local)


def _similarity(config: SimilarityConfig, out: str) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    config = replace(config, out=out)
    found, speakers = collect(config.builds)
    languages = sorted(found | {resolve_language(tag) for tag in config.languages})
    LOG.info("similarity: %d languages, %d speakers", len(languages), len(speakers))
    with open(os.path.join(config.out, "languages.json"), "w", encoding="utf-8") as handle:
        json.dump(languages, handle, indent=1)
    report: dict[str, Any] = {"languages": languages, "feature_sets": {}}
    pairs = language_matrices(languages, config, report)
    pq.write_table(
        pa.Table.from_pylist(
            pairs,
            schema=pa.schema(
                [
                    ("lang_a", pa.string()),
                    ("lang_b", pa.string()),
                    ("set", pa.string()),
                    ("similarity", pa.float64()),
                    ("shared_features", pa.int32()),
                ]
            ),
        ),
        os.path.join(config.out, "language_pairs.parquet"),
    )
    rows = speaker_rows(speakers)
    pq.write_table(
        pa.Table.from_pylist(
            rows,
            schema=pa.schema(
                [
                    ("speaker", pa.string()),
                    ("language", pa.string()),
                    ("lat", pa.float64()),
                    ("lon", pa.float64()),
                    ("geo_source", pa.string()),
                    ("utterances", pa.int64()),
                    ("hours", pa.float64()),
                ]
            ),
        ),
        os.path.join(config.out, "speakers.parquet"),
    )
    lat_lon = np.array(
        [[np.nan, np.nan] if r["lat"] is None else [r["lat"], r["lon"]] for r in rows],
        dtype=np.float64,
    ).reshape(-1, 2)
    write_npy_blocks(os.path.join(config.out, "speaker_haversine_km.npy"), lat_lon, None)
    write_npy_blocks(
        os.path.join(config.out, "speaker_geo_similarity.npy"), lat_lon, config.geo_scale_km
    )
    report["speakers"] = {
        "count": len(rows),
        "geo_sources": dict(Counter(str(r["geo_source"]) for r in rows)),
        "without_location": [r["speaker"] for r in rows if r["lat"] is None],
        "geo_scale_km": config.geo_scale_km,
    }
    if config.plots:
        from voxshard.pipelines.plots import geo_scatter

        geo_scatter(rows, languages, os.path.join(config.out, "geo.png"))
    with open(os.path.join(config.out, "report.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    return report
