"""The record and its rules: Utterance, Arrow + JSON schema, language codes, geo, keys; and
the one file layer (local paths and gs:// URLs alike)."""

from voxshard.schemas import storage
from voxshard.schemas.errors import (
    AudioError,
    BuildError,
    ConfigError,
    CorpusFormatError,
    GeoError,
    InvalidKeyError,
    UnknownLanguageError,
    VoxshardError,
)
from voxshard.schemas.geo import GEO_SOURCES, validate_lat_lon
from voxshard.schemas.keys import KEY_PATTERN, make_key, validate_key
from voxshard.schemas.languages import is_language_tag, language_name, resolve_language
from voxshard.schemas.utterance import (
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
    "is_language_tag",
    "json_schema",
    "language_name",
    "make_key",
    "resolve_language",
    "storage",
    "validate_key",
    "validate_lat_lon",
]
