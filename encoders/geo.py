"""Great-circle distances (Haversine) and the MASR geo encoder, in numpy.

Haversine with the mean Earth radius R = 6371.0088 km; ``a`` is clamped to [0, 1] so
identical points, antipodes and rounding never produce NaN, and atan2 keeps it stable for
nearby and antipodal points alike.

Pairwise matrices use the same angle through unit vectors: the chord |u - v| is summed from
coordinate differences (no cancellation for nearby points, unlike the 1 - u.v shortcut) and
theta = 2 asin(chord / 2), clamped. It agrees with the haversine form to ~1e-9 km (within
0.3 m near antipodes) at a third of the cost. Blocks are sized by element count so memory
stays bounded however many points there are.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM = 6371.0088
BLOCK_ELEMENTS = 4_000_000  # float64 values per block temporary (32 MB)
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


def block_rows(columns: int) -> int:
    """Rows per block so one block temporary holds about BLOCK_ELEMENTS values."""
    return max(1, BLOCK_ELEMENTS // max(1, columns))


def chord_distances_km(unit_a: FloatArray, unit_b: FloatArray) -> FloatArray:
    """Great-circle km between rows of two unit-vector arrays (see the module docstring)."""
    distance = (unit_a[:, None, 0] - unit_b[None, :, 0]) ** 2
    distance += (unit_a[:, None, 1] - unit_b[None, :, 1]) ** 2
    distance += (unit_a[:, None, 2] - unit_b[None, :, 2]) ** 2
    np.sqrt(distance, out=distance)
    distance *= 0.5
    np.minimum(distance, 1.0, out=distance)
    np.arcsin(distance, out=distance)
    distance *= 2.0 * EARTH_RADIUS_KM
    return distance


def pairwise_haversine_km(
    lat_lon_a: FloatArray,
    lat_lon_b: FloatArray | None = None,
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """(n, m) float32 distances in km between rows of (lat, lon) degree arrays, in blocks.

    ``out`` may be a memory-mapped array; peak extra memory is a few block temporaries.
    """
    b = lat_lon_a if lat_lon_b is None else lat_lon_b
    result = np.empty((len(lat_lon_a), len(b)), dtype=np.float32) if out is None else out
    unit_b = unit_vectors(b)
    step = block_rows(len(b))
    for start in range(0, len(lat_lon_a), step):
        block = unit_vectors(lat_lon_a[start : start + step])
        result[start : start + len(block)] = chord_distances_km(block, unit_b)
    return result


def unit_vectors(lat_lon: FloatArray) -> FloatArray:
    """Points on the unit sphere (x, y, z) for (lat, lon) degree rows: the geo encoder."""
    lat, lon = np.radians(lat_lon[:, 0]), np.radians(lat_lon[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def geo_similarity(distance_km: npt.ArrayLike, scale_km: float) -> FloatArray:
    """The similarity kernel exp(-d / scale)."""
    result: FloatArray = np.exp(-np.asarray(distance_km, dtype=np.float64) / scale_km)
    return result
