"""``to-native``: Latin-script tokens into a Brahmic script through a declared romanization
scheme (ITRANS, Harvard-Kyoto, IAST; ``data/schemes.tsv``). A consonant takes a vowel sign from
the vowel after it, a virama before another consonant and at the end of the word (ITRANS's
rule); the Devanagari layout is shifted to the target's parallel block, and a letter that
block lacks makes the token unconvertible (None)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import unicodedata2

from voxshard.normalizers.scripts import char_script
from voxshard.schemas.tables import data_rows

SCHEMES = ("itrans", "hk", "iast", "none")
BLOCK_BASE = {
    "Deva": 0x0900,
    "Beng": 0x0980,
    "Guru": 0x0A00,
    "Gujr": 0x0A80,
    "Orya": 0x0B00,
    "Taml": 0x0B80,
    "Telu": 0x0C00,
    "Knda": 0x0C80,
    "Mlym": 0x0D00,
}
VIRAMA = 0x4D
# independent vowel offset -> dependent vowel sign offset (a: none)
VOWEL_SIGN = {
    0x06: 0x3E,
    0x07: 0x3F,
    0x08: 0x40,
    0x09: 0x41,
    0x0A: 0x42,
    0x0B: 0x43,
    0x60: 0x44,
    0x0C: 0x62,
    0x61: 0x63,
    0x0F: 0x47,
    0x10: 0x48,
    0x13: 0x4B,
    0x14: 0x4C,
}


@dataclass(frozen=True)
class Unit:
    kind: str  # vowel, consonant, mark
    offsets: tuple[int, ...]


@functools.cache
def scheme_units(scheme: str) -> dict[str, Unit]:
    return {
        row["latin"]: Unit(row["kind"], tuple(int(o, 16) for o in row["offsets"].split()))
        for row in data_rows("voxshard.normalizers", "schemes.tsv")
        if row["scheme"] == scheme
    }


def parse(word: str, scheme: str) -> list[Unit] | None:
    """Greedy longest-match split of ``word`` into scheme units, or None if it does not parse."""
    units = scheme_units(scheme)
    if scheme == "iast":
        word = unicodedata2.normalize("NFC", word.lower())
    longest = max(map(len, units), default=0)
    found = []
    position = 0
    while position < len(word):
        for size in range(min(longest, len(word) - position), 0, -1):
            unit = units.get(word[position : position + size])
            if unit is not None:
                found.append(unit)
                position += size
                break
        else:
            return None
    return found


def to_native_word(word: str, scheme: str, script: str) -> str | None:
    """``word`` (Latin) in ``script`` through ``scheme``; None when it cannot be converted."""
    base = BLOCK_BASE.get(script)
    if base is None or scheme not in SCHEMES or scheme == "none":
        return None
    units = parse(word, scheme)
    if not units:
        return None
    offsets: list[int] = []
    after_consonant = False
    for unit in units:
        if unit.kind == "consonant":
            if after_consonant:
                offsets.append(VIRAMA)
            offsets.extend(unit.offsets)
            after_consonant = True
        elif unit.kind == "vowel":
            vowel = unit.offsets[0]
            if after_consonant:
                if vowel != 0x05:
                    offsets.append(VOWEL_SIGN[vowel])
            else:
                offsets.append(vowel)
            after_consonant = False
        else:
            offsets.extend(unit.offsets)
            after_consonant = False
    if after_consonant:
        offsets.append(VIRAMA)
    chars = [chr(base + offset) for offset in offsets]
    if any(unicodedata2.name(c, "") == "" or char_script(c) != script for c in chars):
        return None
    native: str = unicodedata2.normalize("NFC", "".join(chars))
    return native
