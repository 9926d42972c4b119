"""Code-mixing metrics over token language tags: CMI (Das & Gambäck 2014), M-index and
I-index (Guzmán et al. 2017). ``univ`` tokens (digits, punctuation, symbols) count for CMI's
n and u, and are left out of M and I."""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from normalizers.lexicon import EMPTY, Lexicon
from normalizers.scripts import COMMON, INHERITED, MIXED, UNKNOWN

UNIV = "univ"


@dataclass(frozen=True)
class LanguageInfo:
    native: frozenset[str]
    scheme: str
    latin: str


@functools.cache
def _table() -> dict[str, LanguageInfo]:
    text = resources.files("normalizers").joinpath("data", "languages.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return {row[0]: LanguageInfo(frozenset(row[1].split("+")), row[2], row[3]) for row in rows[1:]}


def language_info(language: str, scripts: Sequence[str] = ()) -> LanguageInfo:
    """The table row of ``language``; unknown languages take the dominant script as native."""
    found = _table().get(language)
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
    lexicon knows them (romanized matrix words), ``univ`` for Common-script tokens, and
    ``x-<Script>`` for any other script."""
    info = language_info(language, scripts)
    tags = []
    for token, script in zip(tokens, scripts, strict=True):
        if script in (COMMON, INHERITED, UNKNOWN):
            tags.append(UNIV)
        elif script == MIXED or script in info.native:
            tags.append(language)
        elif script == "Latn":
            tags.append(language if lexicon.knows(token) else info.latin)
        else:
            tags.append(f"x-{script}")
    return tags


def cmi(tags: Sequence[str]) -> float:
    """Code-Mixing Index: 100 * (1 - max_i w_i / (n - u)), 0 when every token is univ."""
    language_tokens = [t for t in tags if t != UNIV]
    if not language_tokens:
        return 0.0
    top = Counter(language_tokens).most_common(1)[0][1]
    return 100.0 * (1.0 - top / len(language_tokens))


def m_index(tags: Sequence[str]) -> float:
    """Multilingual index: (1 - sum p_j^2) / ((k - 1) sum p_j^2); 0 for one language."""
    counts = Counter(t for t in tags if t != UNIV)
    total = sum(counts.values())
    if len(counts) < 2:
        return 0.0
    squares = sum((c / total) ** 2 for c in counts.values())
    return (1.0 - squares) / ((len(counts) - 1) * squares)


def i_index(tags: Sequence[str]) -> float:
    """Integration index: switch points between consecutive language tokens / (n - 1)."""
    language_tokens = [t for t in tags if t != UNIV]
    if len(language_tokens) < 2:
        return 0.0
    switches = sum(a != b for a, b in itertools.pairwise(language_tokens))
    return switches / (len(language_tokens) - 1)
