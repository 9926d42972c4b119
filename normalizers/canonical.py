"""Unicode canonicalization of transcripts with unicodedata2 (current Unicode, not Python's).

Not blanket NFKC: only full-width/half-width forms and Arabic presentation forms are folded
(NFKC would also rewrite compatibility jamo, superscripts, ligatures, ...). Steps, in order:
fold those forms; remove soft hyphens, bidi controls and tatweel used as elongation; map
legacy ZWJ sequences to atomic letters (Malayalam chillus, Bengali khanda ta); drop ZWJ/ZWNJ
where they are rendering hints inside Brahmic scripts, keep them elsewhere (Persian/Urdu
ZWNJ, emoji ZWJ sequences); put a nukta typed after a vowel sign back after its consonant;
NFC; collapse every whitespace run (NBSP included) to one space. Idempotent; total.
"""

from __future__ import annotations

import re

import unicodedata2

from voxshard.normalizers.blocks import brahmic_blocks
from voxshard.normalizers.scripts import char_script

ZWNJ = "\u200c"
ZWJ = "\u200d"
TATWEEL = "\u0640"
BRAHMIC = frozenset(
    {"Deva", "Beng", "Guru", "Gujr", "Orya", "Taml", "Telu", "Knda", "Mlym", "Sinh"}
)
# soft hyphen, ALM, LRM, RLM, BOM, LRE..RLO, LRI..PDI, and C0/C1 controls that are not
# whitespace (tab, newlines, NEL and friends are whitespace: they collapse to a space)
_CONTROLS = [c for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if not chr(c).isspace()]
_REMOVE = dict.fromkeys(
    [
        0x00AD,
        0x061C,
        0x200E,
        0x200F,
        0xFEFF,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        *_CONTROLS,
    ]
)
_FOLD_RANGES = ((0xFB50, 0xFDFF), (0xFE70, 0xFEFE), (0xFF01, 0xFFEF))
_FOLD = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _FOLD_RANGES) + "]+")
_ATOMIC = {
    "\u0d23\u0d4d\u200d": "\u0d7a",  # ണ്‍ -> ൺ
    "\u0d28\u0d4d\u200d": "\u0d7b",  # ന്‍ -> ൻ
    "\u0d30\u0d4d\u200d": "\u0d7c",  # ര്‍ -> ർ
    "\u0d32\u0d4d\u200d": "\u0d7d",  # ല്‍ -> ൽ
    "\u0d33\u0d4d\u200d": "\u0d7e",  # ള്‍ -> ൾ
    "\u0d15\u0d4d\u200d": "\u0d7f",  # ക്‍ -> ൿ
    "\u09a4\u09cd\u200d": "\u09ce",  # ত্‍ -> ৎ
}
_ATOMIC_PATTERN = re.compile("|".join(map(re.escape, _ATOMIC)))
_JOINER_PATTERN = re.compile("[\u200c\u200d]+")
# nukta after one or more vowel signs of the same block: move it next to the consonant
_NUKTA_BASES = tuple(block.base for block in brahmic_blocks().values() if block.nukta)
_NUKTA_PATTERN = re.compile(
    "|".join(
        f"([\\u{base + 0x3E:04x}-\\u{base + 0x4C:04x}\\u{base + 0x62:04x}\\u{base + 0x63:04x}]+)"
        f"(\\u{base + 0x3C:04x})"
        for base in _NUKTA_BASES
    )
)
_NUKTAS = "".join(chr(base + 0x3C) for base in _NUKTA_BASES)
# any character one of the rare steps acts on: lines without one take the fast path
_SPECIAL = re.compile(
    "["
    + "".join(f"\\U{code:08x}" for code in _REMOVE)
    + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _FOLD_RANGES)
    + TATWEEL
    + ZWNJ
    + ZWJ
    + _NUKTAS
    + "]"
)
_ELONGATION = re.compile(f"(?<=[\u0620-\u064a\u066e-\u06d3\u06fa-\u06ff]){TATWEEL}+")


# Halfwidth Hangul letters (U+FFA0-U+FFDC) decompose <narrow> to the compatibility jamo
# (U+3131...), which this policy keeps; NFKC would go on to conjoining jamo that compose
# into syllables (U+FFA1 U+FFC2 -> 가), unlike the same letters typed as compatibility jamo.
_HALFWIDTH_HANGUL = re.compile("[\uffa0-\uffdc]")


def _narrow(match: re.Match[str]) -> str:
    mapping = unicodedata2.decomposition(match.group(0))  # "<narrow> 3131"
    return chr(int(mapping.split()[-1], 16)) if mapping.startswith("<narrow>") else match.group(0)


def _fold(match: re.Match[str]) -> str:
    text = _HALFWIDTH_HANGUL.sub(_narrow, match.group(0))
    folded: str = (
        unicodedata2.normalize("NFKC", text) if text == match.group(0) else _nfkc_rest(text)
    )
    return folded


def _nfkc_rest(text: str) -> str:
    """NFKC for everything but the compatibility jamo the halfwidth letters became."""
    return "".join(
        char if 0x3130 <= ord(char) <= 0x318F else unicodedata2.normalize("NFKC", char)
        for char in text
    )


def _is_emoji_side(char: str) -> bool:
    code = ord(char)
    return (
        0x1F000 <= code <= 0x1FAFF
        or 0x2600 <= code <= 0x27BF
        or 0x1F3FB <= code <= 0x1F3FF
        or code == 0xFE0F
        or 0x2190 <= code <= 0x21FF
        or 0x2B00 <= code <= 0x2BFF
    )


def _joiners(match: re.Match[str]) -> str:
    text = match.string
    before = text[match.start() - 1] if match.start() > 0 else ""
    after = text[match.end()] if match.end() < len(text) else ""
    if (before and _is_emoji_side(before)) or (after and _is_emoji_side(after)):
        return match.group(0)
    if (before and char_script(before) in BRAHMIC) or (after and char_script(after) in BRAHMIC):
        return ""
    if not before or not after or before.isspace() or after.isspace():
        return ""  # a joiner at a word edge joins nothing
    return match.group(0)


def _nukta(match: re.Match[str]) -> str:
    groups = [group for group in match.groups() if group is not None]
    return groups[1] + groups[0]


def canonicalize(text: str, lang: str | None = None) -> str:
    """The canonical form of ``text`` (``lang`` is accepted for per-language rules)."""
    del lang
    if _SPECIAL.search(text):
        text = _FOLD.sub(_fold, text)
        text = text.translate(_REMOVE)
        if TATWEEL in text:
            text = _ELONGATION.sub("", text)
        if ZWJ in text or ZWNJ in text:
            text = _ATOMIC_PATTERN.sub(lambda m: _ATOMIC[m.group(0)], text)
            text = _JOINER_PATTERN.sub(_joiners, text)
        text = _NUKTA_PATTERN.sub(_nukta, text)
    composed: str = unicodedata2.normalize("NFC", text)
    # str.split() splits at exactly the characters str.isspace() knows (NBSP, U+2028, ...)
    return " ".join(composed.split())
