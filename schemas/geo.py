"""Geographic coordinates: validation only (distances live in encoders/)."""

from __future__ import annotations

import math

from voxshard.schemas.errors import GeoError

GEO_SOURCES = ("speaker", "language-table", "language", "manifest")


def validate_lat_lon(lat: float | str, lon: float | str) -> tuple[float, float]:
    """Return (lat, lon) as floats or raise :class:`GeoError` naming the bad value."""
    try:
        lat_f, lon_f = float(lat), float(lon)
    except (TypeError, ValueError) as error:
        raise GeoError(f"lat/lon must be numbers, got {lat!r}, {lon!r}") from error
    if not math.isfinite(lat_f) or not -90.0 <= lat_f <= 90.0:
        raise GeoError(f"latitude {lat!r} is outside [-90, 90]")
    if not math.isfinite(lon_f) or not -180.0 <= lon_f <= 180.0:
        raise GeoError(f"longitude {lon!r} is outside [-180, 180]")
    return lat_f, lon_f
