"""MASR metadata encoders: lang2vec language vectors, language coordinates, Haversine.

Plain numpy, shared by the similarity pipeline and the trainer (neither imports the other).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxshard.encoders.coordinates import language_coordinates
from voxshard.encoders.geo import (
    EARTH_RADIUS_KM,
    geo_similarity,
    haversine_km,
    pairwise_haversine_km,
    unit_vectors,
)
from voxshard.encoders.lang2vec import FeatureSet, load_feature_set, masked_cosine


class LanguageEncoder:
    """lang2vec vector e for a language (the MASR language metadata encoder).

    Unknown languages, or missing features, give zeros in ``vectors`` (so a batch always has
    a vector) and NaN in ``pairwise`` (so a similarity is never invented).
    """

    def __init__(self, feature_set: str = "syntax_knn") -> None:
        self.features: FeatureSet = load_feature_set(feature_set)

    @property
    def dim(self) -> int:
        return len(self.features.feature_names)

    def vectors(self, codes: list[str]) -> npt.NDArray[np.float32]:
        resolved = [self.features.resolve(code)[0] for code in codes]
        return np.nan_to_num(self.features.vectors(resolved), nan=0.0)

    def pairwise(self, codes: list[str], min_shared: int = 1) -> npt.NDArray[np.float32]:
        resolved = [self.features.resolve(code, min_shared)[0] for code in codes]
        similarity, _shared = masked_cosine(self.features.vectors(resolved), min_shared=min_shared)
        return similarity


class GeoEncoder:
    """Unit-sphere vectors for (lat, lon) and an exp(-d / scale) similarity between them."""

    def __init__(self, scale_km: float = 500.0) -> None:
        self.scale_km = scale_km

    def vectors(self, lat_lon: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return unit_vectors(lat_lon)

    def pairwise(self, lat_lon: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return geo_similarity(pairwise_haversine_km(lat_lon), self.scale_km)


__all__ = [
    "EARTH_RADIUS_KM",
    "GeoEncoder",
    "LanguageEncoder",
    "geo_similarity",
    "haversine_km",
    "language_coordinates",
    "load_feature_set",
    "masked_cosine",
    "pairwise_haversine_km",
    "unit_vectors",
]
