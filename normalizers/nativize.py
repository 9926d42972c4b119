"""``to-native``: Latin-script tokens into a Brahmic script through a declared romanization
scheme (ITRANS, Harvard-Kyoto, IAST; ``data/schemes.tsv``). A consonant takes a vowel sign from
the vowel after it, a virama before another consonant and at the end of the word (ITRANS's
rule); the Devanagari layout is shifted to the target's parallel block (data/brahmic_blocks.tsv),
a letter the block lacks is written as its usual romanizations write it there (Bengali v, w:
ব), and any other missing letter makes the token unconvertible (None).

Rules beyond the schemes' tables: IAST ``ḷ`` is the consonant ळ before a vowel (ISO 15919:
śāḷā -> शाळा) and the vowel ऌ elsewhere (kḷpta); ISO 15919's ``r̥``/``l̥`` are vowels. A word
cannot begin with a visarga or anusvara: a capital ``H``/``M`` at a word's start (a sentence's
first word, ``Hindi``) is read as the lower-case letter; the same holds for any capital
whose reading would start the word with such a mark."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import unicodedata2

from voxshard.normalizers.blocks import brahmic_blocks
from voxshard.normalizers.scripts import char_script
from voxshard.schemas.tables import data_rows

SCHEMES = ("itrans", "hk", "iast", "none")
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


IAST_VOCALIC_L = Unit("vowel", (0x0C,))
LLA = Unit("consonant", (0x33,))


def _units(word: str, scheme: str) -> list[Unit] | None:
    """The word's units, with the rules the tables cannot express (module docstring)."""
    units = parse(word, scheme)
    if units and units[0].kind == "mark" and word[:1].isupper():
        units = parse(word[0].lower() + word[1:], scheme)  # "Hindi": h, not a visarga
    if not units or units[0].kind == "mark":
        return None
    if scheme == "iast":
        units = [
            LLA
            if unit == IAST_VOCALIC_L and i + 1 < len(units) and units[i + 1].kind == "vowel"
            else unit
            for i, unit in enumerate(units)
        ]
    return units


def to_native_word(word: str, scheme: str, script: str) -> str | None:
    """``word`` (Latin) in ``script`` through ``scheme``; None when it cannot be converted."""
    block = brahmic_blocks().get(script)
    if block is None or scheme not in SCHEMES or scheme == "none":
        return None
    base = block.base
    units = _units(word, scheme)
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
    chars = [chr(base + block.substitutes.get(offset, offset)) for offset in offsets]
    if any(unicodedata2.name(c, "") == "" or char_script(c) != script for c in chars):
        return None
    native: str = unicodedata2.normalize("NFC", "".join(chars))
    return native
