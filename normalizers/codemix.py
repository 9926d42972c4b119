"""Code-mixing metrics over token language tags: CMI (Das & Gambäck 2014), M-index and
I-index (Guzmán et al. 2017). ``univ`` tokens (digits, punctuation, symbols) count for CMI's
n and u, and are left out of M and I."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from voxshard.normalizers.lexicon import EMPTY, Lexicon
from voxshard.normalizers.scripts import COMMON, INHERITED, MIXED, UNKNOWN
from voxshard.schemas.tables import data_rows

UNIV = "univ"


@dataclass(frozen=True)
class LanguageInfo:
    native: frozenset[str]
    scheme: str
    latin: str


@functools.cache
def _table() -> dict[str, LanguageInfo]:
    return {
        row["language"]: LanguageInfo(
            frozenset(row["native"].split("+")), row["scheme"], row["latin"]
        )
        for row in data_rows("voxshard.normalizers", "languages.tsv")
    }


@functools.lru_cache(maxsize=1024)
def _known_info(language: str) -> LanguageInfo | None:
    return _table().get(language)


def language_info(language: str, scripts: Sequence[str] = ()) -> LanguageInfo:
    """The table row of ``language``; unknown languages take the dominant script as native."""
    found = _known_info(language)
    if found is not None:
        return found
    counted = Counter(s for s in scripts if s not in (COMMON, INHERITED, UNKNOWN, MIXED))
    native = frozenset({counted.most_common(1)[0][0]}) if counted else frozenset({"Latn"})
    return LanguageInfo(native, "none", "eng")


def language_tags(
    tokens: Sequence[str], scripts: Sequence[str], language: str, lexicon: Lexicon = EMPTY
) -> list[str]:
    """A language per token: the matrix language for its native script (and for tokens mixing
    scripts inside one word), the table's Latin language for other Latin tokens unless the
    lexicon knows them (romanized matrix words), ``univ`` for Common-script tokens and tokens
    without a letter or digit, and ``x-<Script>`` for any other script."""
    info = language_info(language, scripts)
    by_script: dict[str, str] = {}
    tags = []
    check_lexicon = bool(lexicon.to_native or lexicon.to_latin)
    for token, script in zip(tokens, scripts, strict=True):
        if not any(char.isalnum() for char in token):
            # punctuation is language-independent, even where it takes a neighbour's script
            # tag (a standalone danda or Arabic comma): never a word of the matrix language
            tags.append(UNIV)
            continue
        if (
            script == "Latn"
            and check_lexicon
            and "Latn" not in info.native
            and lexicon.knows(token)
        ):
            tags.append(language)
            continue
        tag = by_script.get(script)
        if tag is None:
            if script in (COMMON, INHERITED, UNKNOWN):
                tag = UNIV
            elif script == MIXED or script in info.native:
                tag = language
            elif script == "Latn":
                tag = info.latin
            else:
                tag = f"x-{script}"
            by_script[script] = tag
        tags.append(tag)
    return tags


def mixing_metrics(tags: Sequence[str]) -> tuple[float, float, float]:
    """(CMI, M-index, I-index) in one pass over the tags."""
    counts: dict[str, int] = {}
    previous = None
    switches = 0
    total = 0
    for tag in tags:
        if tag == UNIV:
            continue
        counts[tag] = counts.get(tag, 0) + 1
        if previous is not None and tag != previous:
            switches += 1
        previous = tag
        total += 1
    if total == 0:
        return 0.0, 0.0, 0.0
    code_mixing = 100.0 * (1.0 - max(counts.values()) / total)
    multilingual = 0.0
    if len(counts) > 1:
        squares = sum((count / total) ** 2 for count in counts.values())
        multilingual = (1.0 - squares) / ((len(counts) - 1) * squares)
    integration = switches / (total - 1) if total > 1 else 0.0
    return code_mixing, multilingual, integration


def cmi(tags: Sequence[str]) -> float:
    """Code-Mixing Index: 100 * (1 - max_i w_i / (n - u)), 0 when every token is univ."""
    return mixing_metrics(tags)[0]


def m_index(tags: Sequence[str]) -> float:
    """Multilingual index: (1 - sum p_j^2) / ((k - 1) sum p_j^2); 0 for one language."""
    return mixing_metrics(tags)[1]


def i_index(tags: Sequence[str]) -> float:
    """Integration index: switch points between consecutive language tokens / (n - 1)."""
    return mixing_metrics(tags)[2]
