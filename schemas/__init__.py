"""The record and its rules: Utterance, Arrow + JSON schema, language codes, geo, keys; and
the one file layer (local paths and gs:// URLs alike)."""

from schemas import storage
from schemas.errors import (
    AudioError,
    BuildError,
    ConfigError,
    CorpusFormatError,
    GeoError,
    InvalidKeyError,
    UnknownLanguageError,
    VoxshardError,
)
from schemas.geo import GEO_SOURCES, validate_lat_lon
from schemas.keys import KEY_PATTERN, make_key, validate_key
from schemas.languages import language_name, resolve_language
from schemas.utterance import (
    GENDERS,
    SCHEMA_VERSION,
    Geo,
    SourceRef,
    Transcript,
    Utterance,
    arrow_schema,
    json_schema,
)

__all__ = [
    "GENDERS",
    "GEO_SOURCES",
    "KEY_PATTERN",
    "SCHEMA_VERSION",
    "AudioError",
    "BuildError",
    "ConfigError",
    "CorpusFormatError",
    "Geo",
    "GeoError",
    "InvalidKeyError",
    "SourceRef",
    "Transcript",
    "UnknownLanguageError",
    "Utterance",
    "VoxshardError",
    "arrow_schema",
    "json_schema",
    "language_name",
    "make_key",
    "resolve_language",
    "storage",
    "validate_key",
    "validate_lat_lon",
]
