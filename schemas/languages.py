"""Resolve any language tag a corpus uses to ISO 639-3, through the TSV tables in ``data/``.

Order: explicit aliases (locales such as ``zh-CN``, MLS names, BABEL ids, withdrawn codes), then
ISO 639-3, ISO 639-1, ISO 639-2/B, then the primary subtag of a BCP-47 style tag
(``pa-IN`` -> ``pa`` -> ``pan``; ``rm-sursilv`` -> ``roh``). Special codes (``und``, ``mul``,
``zxx``, ``mis``) are not languages and do not resolve.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from voxshard.schemas.errors import UnknownLanguageError
from voxshard.schemas.tables import data_rows


@dataclass(frozen=True)
class LanguageTables:
    codes: frozenset[str]  # ISO 639-3 individual and macrolanguage codes
    names: dict[str, str]  # ISO 639-3 -> reference name
    macrolanguages: frozenset[str]
    part1: dict[str, str]  # ISO 639-1 -> ISO 639-3
    part2b: dict[str, str]  # ISO 639-2/B -> ISO 639-3
    aliases: dict[str, str]  # normalized tag -> ISO 639-3


@functools.cache
def tables() -> LanguageTables:
    iso = data_rows("voxshard.schemas", "iso639_3.tsv")
    languages = [row for row in iso if row["scope"] in ("I", "M")]
    codes = frozenset(row["code"] for row in languages)
    aliases = {
        _normalize(row["tag"]): row["code"]
        for row in data_rows("voxshard.schemas", "language_aliases.tsv")
    }
    unknown = sorted(code for code in aliases.values() if code not in codes)
    if unknown:
        raise RuntimeError(f"language_aliases.tsv maps to codes missing from ISO 639-3: {unknown}")
    return LanguageTables(
        codes=codes,
        names={row["code"]: row["name"] for row in languages},
        macrolanguages=frozenset(row["code"] for row in languages if row["scope"] == "M"),
        part1={row["part1"]: row["code"] for row in languages if row["part1"]},
        part2b={row["part2b"]: row["code"] for row in languages if row["part2b"]},
        aliases=aliases,
    )


def _normalize(tag: str) -> str:
    return tag.strip().replace("_", "-").lower()


def resolve_language(tag: str) -> str:
    """Return the ISO 639-3 code for ``tag`` or raise :class:`UnknownLanguageError`."""
    table = tables()
    normalized = _normalize(tag)
    while normalized:
        code = (
            table.aliases.get(normalized)
            or (normalized if normalized in table.codes else None)
            or table.part1.get(normalized)
            or table.part2b.get(normalized)
        )
        if code is not None:
            return code
        if "-" not in normalized:
            break
        normalized = normalized.rsplit("-", 1)[0]
    raise UnknownLanguageError(tag)


def is_language_tag(tag: str) -> bool:
    """Whether the whole of ``tag`` is a code or a listed alias (``resolve_language`` also
    accepts a known prefix: ``zh-Hant-TW`` -> ``zh``; a folder name must match exactly)."""
    table = tables()
    normalized = _normalize(tag)
    return bool(
        normalized in table.aliases
        or normalized in table.codes
        or normalized in table.part1
        or normalized in table.part2b
    )


def language_name(code: str) -> str:
    """Reference name of an ISO 639-3 code (``eng`` -> ``English``)."""
    return tables().names[code]
