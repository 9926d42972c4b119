"""``to-latin``: a deterministic lower-case ASCII key per token (tables in ``data/``).

Brahmic scripts (Deva, Beng, Guru, Gujr, Orya, Taml, Telu, Knda, Mlym) share one table by
offset within their parallel Unicode blocks, so a word spelled in parallel in any of them gets
one key. Consonants carry their inherent ``a`` unless a virama or vowel sign follows (and
word-finally, where Hindi-style schwa deletion applies). Anusvara becomes ``m`` before a
labial or at the end of a word and ``n`` elsewhere, so हिंदी and हिन्दी agree. A nukta changes
its consonant (ज़ -> z). Vowel length and retroflex/dental are collapsed.

Cyrillic, Greek and Arabic-script letters map through ``letters.tsv``; Latin is lower-cased
and stripped of marks. Other scripts keep the canonical token: there is no lossless ASCII key
for Han or Hangul without a dictionary.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import unicodedata2

from voxshard.normalizers.blocks import script_of_block
from voxshard.schemas.tables import data_rows

LABIALS = frozenset({"p", "ph", "b", "bh", "m"})
_LATIN_SPECIAL = {
    "ß": "ss",
    "æ": "ae",
    "œ": "oe",
    "ø": "o",
    "đ": "d",
    "ł": "l",
    "þ": "th",
    "ð": "d",
    "ı": "i",
    "ŋ": "ng",
    "ħ": "h",
}


@dataclass(frozen=True)
class BrahmicLetter:
    kind: str
    key: str


@functools.cache
def _brahmic() -> dict[tuple[str, int], BrahmicLetter]:
    """(script or "*", offset) -> letter; a script's own row wins over the shared one."""
    return {
        (row["script"], int(row["offset"], 16)): BrahmicLetter(row["kind"], row["key"])
        for row in data_rows("voxshard.normalizers", "brahmic.tsv")
    }


@functools.cache
def _nukta() -> dict[str, str]:
    return {row["base"]: row["key"] for row in data_rows("voxshard.normalizers", "nukta.tsv")}


@functools.cache
def _letters() -> dict[str, str]:
    return {row["letter"]: row["key"] for row in data_rows("voxshard.normalizers", "letters.tsv")}


def _brahmic_letter(char: str) -> BrahmicLetter | None:
    code = ord(char)
    if not 0x0900 <= code < 0x0D80:
        return None
    table = _brahmic()
    script = script_of_block()[code & ~0x7F]
    return table.get((script, code & 0x7F)) or table.get(("*", code & 0x7F))


def _latin_char(char: str) -> str | None:
    """A character's Latin key: "" when it is dropped (punctuation, and letters whose key in
    letters.tsv is empty: Russian ь and ъ, Arabic hamza), None for a letter no table knows."""
    lowered = char.lower()
    if lowered in _LATIN_SPECIAL:
        return _LATIN_SPECIAL[lowered]
    if lowered in _letters():  # й, ї, ё: letters in their own right
        return _letters()[lowered]
    decomposed = unicodedata2.normalize("NFKD", lowered)
    base = decomposed[:1]
    if base in _letters():  # accented Greek and the like: the base letter's key
        return _letters()[base]
    key = "".join(c for c in decomposed if c.isascii() and c.isalnum())
    return key if key or not char.isalnum() else None


@functools.lru_cache(maxsize=262144)
def latin_key(token: str) -> str:
    """The ``to-latin`` key of one token (see the module docstring)."""
    parts: list[str] = []
    pending: str | None = None  # a consonant still waiting for its vowel
    nasal_at: list[int] = []  # positions of anusvaras, resolved by the next consonant
    syllables = 0
    foreign = []  # characters of scripts with no key: the token is kept

    def flush(inherent: bool) -> None:
        nonlocal pending, syllables
        if pending is not None:
            parts.append(pending + ("a" if inherent else ""))
            syllables += 1
            pending = None

    for char in token:
        letter = _brahmic_letter(char)
        if letter is None:
            flush(True)
            key = _latin_char(char)
            if key is None:
                foreign.append(char)
            else:
                parts.append(key)
            continue
        kind = letter.kind
        if kind == "consonant":
            flush(True)
            for position in nasal_at:
                parts[position] = "m" if letter.key in LABIALS else "n"
            nasal_at.clear()
            pending = letter.key
        elif kind == "nukta":
            if pending is not None:
                pending = _nukta().get(pending, pending)
        elif kind == "sign":
            if pending is not None:
                parts.append(pending)
                pending = None
            parts.append(letter.key)
            syllables += 1
        elif kind == "virama":
            if pending is not None:
                parts.append(pending)
                pending = None
        elif kind == "anusvara":
            flush(True)
            nasal_at.append(len(parts))
            parts.append("n")
        elif kind in ("vowel", "nasal", "visarga", "final", "digit"):
            flush(True)
            parts.append(letter.key)
            if kind == "vowel":
                syllables += 1
    flush(inherent=syllables == 0)  # word-final schwa deletion, not for a bare consonant
    for position in nasal_at:  # a word-final anusvara
        parts[position] = "m"
    if foreign:
        return token
    return "".join(parts)
