"""``--geo FILE``: a CSV or TSV mapping speakers or languages to coordinates.

Header columns: ``lat``, ``lon`` and ``speaker`` and/or ``language``; each row fills exactly one
of the two keys. Speakers match the build's namespaced speaker (``commonvoice_<client_id>``) or
the corpus's own id. Languages may be any tag ``resolve_language`` knows. Every bad row is
reported at once, by line, before the build starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxshard.corpora.base import read_table
from voxshard.schemas import (
    ConfigError,
    CorpusFormatError,
    GeoError,
    UnknownLanguageError,
    resolve_language,
    validate_lat_lon,
)


@dataclass(frozen=True)
class GeoTable:
    speakers: dict[str, tuple[float, float]] = field(default_factory=dict)
    languages: dict[str, tuple[float, float]] = field(default_factory=dict)

    def lookup(
        self, corpus: str, speaker: str | None, language: str
    ) -> tuple[float, float, str] | None:
        """(lat, lon, geo source) for a speaker, else its language, else None."""
        if speaker is not None:
            raw = speaker[len(corpus) + 1 :] if speaker.startswith(f"{corpus}_") else speaker
            for candidate in (speaker, raw):
                if candidate in self.speakers:
                    lat, lon = self.speakers[candidate]
                    return lat, lon, "speaker"
        if language in self.languages:
            lat, lon = self.languages[language]
            return lat, lon, "language-table"
        return None


def read_geo_table(path: str) -> GeoTable:
    delimiter = "," if path.lower().endswith(".csv") else "\t"
    problems: list[str] = []
    speakers: dict[str, tuple[float, float]] = {}
    languages: dict[str, tuple[float, float]] = {}
    try:
        rows = list(read_table(path, path, delimiter))
    except (OSError, CorpusFormatError) as error:
        raise ConfigError(f"--geo {path}: {error}") from error
    for number, row in rows:
        if isinstance(row, CorpusFormatError):
            problems.append(f"--geo {path}:{number}: {row.reason} ({row.detail})")
            continue
        if "lat" not in row or "lon" not in row or not ({"speaker", "language"} & set(row)):
            raise ConfigError(
                f"--geo {path}: the header needs lat, lon and speaker and/or language columns"
            )
        speaker = row.get("speaker", "").strip()
        language = row.get("language", "").strip()
        try:
            if bool(speaker) == bool(language):
                raise GeoError("give either a speaker or a language")
            coordinates = validate_lat_lon(row["lat"].strip(), row["lon"].strip())
            if speaker:
                speakers[speaker] = coordinates
            else:
                languages[resolve_language(language)] = coordinates
        except (GeoError, UnknownLanguageError) as error:
            problems.append(f"--geo {path}:{number}: {error}")
    if problems:
        raise ConfigError(problems)
    return GeoTable(speakers, languages)
