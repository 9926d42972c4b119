"""ISO 15924 script of characters and tokens, from Unicode 18.0's Scripts.txt and
ScriptExtensions.txt shipped as tables in ``data/`` (no ICU: the same answer everywhere)."""

from __future__ import annotations

import bisect
import functools

from voxshard.schemas.tables import data_rows

COMMON = "Zyyy"
INHERITED = "Zinh"
UNKNOWN = "Zzzz"
MIXED = "mixed"


def _read_ranges(name: str) -> tuple[list[int], list[int], list[str]]:
    rows = data_rows("voxshard.normalizers", name)
    column = "script" if "script" in rows[0] else "scripts"
    starts = [int(row["first"], 16) for row in rows]
    ends = [int(row["last"], 16) for row in rows]
    return starts, ends, [row[column] for row in rows]


@functools.cache
def _tables() -> tuple[tuple[list[int], list[int], list[str]], ...]:
    return _read_ranges("scripts.tsv"), _read_ranges("script_extensions.tsv")


def _lookup(table: tuple[list[int], list[int], list[str]], code: int) -> str | None:
    starts, ends, values = table
    index = bisect.bisect_right(starts, code) - 1
    if index >= 0 and code <= ends[index]:
        return values[index]
    return None


@functools.lru_cache(maxsize=65536)
def char_script(char: str) -> str:
    """The Script property of one character as an ISO 15924 code (Zyyy, Zinh, Zzzz included)."""
    return _lookup(_tables()[0], ord(char)) or UNKNOWN


@functools.lru_cache(maxsize=65536)
def char_script_extensions(char: str) -> frozenset[str]:
    """Script_Extensions: the scripts a Common/Inherited character is used with (danda is
    used with Deva, Beng, ...); defaults to the character's own script."""
    found = _lookup(_tables()[1], ord(char))
    return frozenset(found.split()) if found else frozenset({char_script(char)})


@functools.lru_cache(maxsize=262144)
def token_script(token: str) -> str:
    """One script for a token: its letters' script, ``mixed`` when letters of two scripts meet
    (``Facebookपर``), else the single script every Common character extends to (a lone danda
    is ``Zyyy`` here; ``tag_scripts`` resolves it against its neighbours), else ``Zyyy``."""
    scripts = set()
    for char in token:
        script = char_script(char)
        if script not in (COMMON, INHERITED, UNKNOWN):
            scripts.add(script)
    if len(scripts) == 1:
        return scripts.pop()
    if scripts:
        return MIXED
    return COMMON


def _extension_candidates(token: str) -> frozenset[str] | None:
    """Scripts every non-neutral Common character of the token is used with, or None."""
    candidates: frozenset[str] | None = None
    for char in token:
        extensions = char_script_extensions(char) - {COMMON, INHERITED}
        if extensions:
            candidates = extensions if candidates is None else candidates & extensions
    return candidates


def tag_scripts(tokens: list[str]) -> list[str]:
    """Script per token; Common tokens whose characters have Script_Extensions (danda,
    Arabic comma, ...) take the script of the nearest token before (else after) them that is
    in those extensions, else Zyyy."""
    tags = [token_script(token) for token in tokens]
    for index, tag in enumerate(tags):
        if tag != COMMON:
            continue
        candidates = _extension_candidates(tokens[index])
        if not candidates:
            continue
        neighbours = [tags[i] for i in range(index - 1, -1, -1)] + tags[index + 1 :]
        for neighbour in neighbours:
            if neighbour in candidates:
                tags[index] = neighbour
                break
    return tags
