"""Great-circle distances (Haversine) and the MASR geo encoder, in numpy.

Haversine with the mean Earth radius R = 6371.0088 km; ``a`` is clamped to [0, 1] so
identical points, antipodes and rounding never produce NaN, and atan2 keeps it stable for
nearby and antipodal points alike. Distances between large sets are computed in row blocks
(optionally into a memory-mapped .npy) so memory stays bounded.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM = 6371.0088
BLOCK_ROWS = 1024
FloatArray = npt.NDArray[np.float64]


def haversine_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> FloatArray:
    """Great-circle distance in km between points given in degrees (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlambda = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dphi / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlambda / 2.0) ** 2
    a = np.clip(a, 0.0, 1.0)
    result: FloatArray = 2.0 * EARTH_RADIUS_KM * np.arctan2(np.sqrt(a), np.sqrt(1.0 - a))
    return result


def pairwise_haversine_km(
    lat_lon_a: FloatArray,
    lat_lon_b: FloatArray | None = None,
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """(n, m) float32 distances in km between rows of (lat, lon) degree arrays, in blocks.

    ``out`` may be a memory-mapped array (np.lib.format.open_memmap) so n x m never has to fit
    in memory; peak extra memory is one block of BLOCK_ROWS x m float64 values.
    """
    b = lat_lon_a if lat_lon_b is None else lat_lon_b
    result = np.empty((len(lat_lon_a), len(b)), dtype=np.float32) if out is None else out
    lat_b, lon_b = b[None, :, 0], b[None, :, 1]
    for start in range(0, len(lat_lon_a), BLOCK_ROWS):
        block = lat_lon_a[start : start + BLOCK_ROWS]
        result[start : start + len(block)] = haversine_km(
            block[:, 0:1], block[:, 1:2], lat_b, lon_b
        )
    return result


def unit_vectors(lat_lon: FloatArray) -> FloatArray:
    """Points on the unit sphere (x, y, z) for (lat, lon) degree rows: the geo encoder."""
    lat, lon = np.radians(lat_lon[:, 0]), np.radians(lat_lon[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def geo_similarity(distance_km: npt.ArrayLike, scale_km: float) -> FloatArray:
    """The similarity kernel exp(-d / scale)."""
    result: FloatArray = np.exp(-np.asarray(distance_km, dtype=np.float64) / scale_km)
    return result
