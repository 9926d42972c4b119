"""Transcript policies, one registry: ``keep``, ``canonical``, ``to-latin``, ``to-native``.

Every policy also reports the per-token scripts and the code-mixing metrics of the canonical
text, so a build's JSON carries them whatever the policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import unicodedata2

from voxshard.normalizers.canonical import canonicalize
from voxshard.normalizers.codemix import language_info, language_tags, mixing_metrics
from voxshard.normalizers.lexicon import EMPTY, Lexicon
from voxshard.normalizers.nativize import SCHEMES, to_native_word
from voxshard.normalizers.romanize import latin_key
from voxshard.normalizers.scripts import tag_scripts
from voxshard.schemas import ConfigError

SOURCE_POLICY = "source"
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _is_edge(char: str) -> bool:
    """Punctuation or a symbol around a word; never a letter, digit or combining mark."""
    return not char.isalnum() and not unicodedata2.category(char).startswith("M")


def split_edges(token: str) -> tuple[str, str, str]:
    """(leading punctuation, word, trailing punctuation): a combining mark belongs to the
    word (``pitr̥``'s ring below is part of its r̥), not to the edges."""
    start, end = 0, len(token)
    while start < end and _is_edge(token[start]):
        start += 1
    while end > start and _is_edge(token[end - 1]):
        end -= 1
    return token[:start], token[start:end], token[end:]


@dataclass(frozen=True)
class Normalized:
    text: str
    scripts: tuple[str, ...]
    cmi: float
    m_index: float
    i_index: float
    unknown: int = 0  # to-native: Latin tokens left as they were

    def to_json(self) -> dict[str, object]:
        return {
            "normalized": self.text,
            "scripts": list(self.scripts),
            "cmi": round(self.cmi, 4),
            "m_index": round(self.m_index, 4),
            "i_index": round(self.i_index, 4),
            "unknown": self.unknown,
        }


@dataclass(frozen=True)
class PolicyContext:
    language: str
    lexicon: Lexicon
    scheme: str  # to-native's romanization scheme


def _keep(raw: str, tokens: list[str], scripts: list[str], ctx: PolicyContext) -> tuple[str, int]:
    return _LINE_BREAKS.sub(" ", raw), 0


def _canonical(
    raw: str, tokens: list[str], scripts: list[str], ctx: PolicyContext
) -> tuple[str, int]:
    return " ".join(tokens), 0


def _to_latin(
    raw: str, tokens: list[str], scripts: list[str], ctx: PolicyContext
) -> tuple[str, int]:
    keys = []
    for token in tokens:
        key = latin_key(token)
        if key:
            keys.append(key)
        elif any(char.isalpha() for char in token):
            keys.append(token)  # letters with no ASCII key are kept, never dropped
    return " ".join(keys), 0


def _to_native(
    raw: str, tokens: list[str], scripts: list[str], ctx: PolicyContext
) -> tuple[str, int]:
    info = language_info(ctx.language, scripts)
    target = sorted(info.native)[0]
    out = []
    unknown = 0
    for token, script in zip(tokens, scripts, strict=True):
        if script != "Latn":
            out.append(token)
            continue
        lead, core, trail = split_edges(token)
        native = ctx.lexicon.native(core) or to_native_word(core, ctx.scheme, target)
        if native is None:
            unknown += 1
            out.append(token)
        else:
            out.append(f"{lead}{native}{trail}")
    return " ".join(out), unknown


POLICIES: dict[str, Callable[[str, list[str], list[str], PolicyContext], tuple[str, int]]] = {
    "keep": _keep,
    "canonical": _canonical,
    "to-latin": _to_latin,
    "to-native": _to_native,
    # the corpus's own normalized text where it ships one (VoxPopuli's normed_text),
    # canonicalized; the build picks that text (pipelines/records.py), else it is canonical
    SOURCE_POLICY: _canonical,
}


def check_policy(policy: str, scheme: str | None = None) -> list[str]:
    problems = []
    if policy not in POLICIES:
        problems.append(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if scheme is not None and scheme not in SCHEMES:
        problems.append(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return problems


def normalize(
    text: str,
    language: str,
    policy: str = "canonical",
    lexicon: Lexicon = EMPTY,
    scheme: str | None = None,
) -> Normalized:
    """Apply ``policy`` to ``text`` of matrix ``language`` (ISO 639-3). Never raises on text."""
    if policy not in POLICIES or (scheme is not None and scheme not in SCHEMES):
        raise ConfigError(check_policy(policy, scheme))
    canonical = canonicalize(text, language)
    tokens = canonical.split(" ") if canonical else []
    scripts = tag_scripts(tokens)
    tags = language_tags(tokens, scripts, language, lexicon)
    info = language_info(language, scripts)
    context = PolicyContext(language, lexicon, scheme or info.scheme)
    output, unknown = POLICIES[policy](text, tokens, scripts, context)
    return Normalized(output, tuple(scripts), *mixing_metrics(tags), unknown)


def normalize_lines(
    lines: Iterable[bytes],
    language: str,
    policy: str = "canonical",
    lexicon: Lexicon = EMPTY,
    scheme: str | None = None,
    as_json: bool = False,
) -> Iterator[str]:
    """One output line (with its newline) per input line: text, or JSON with ``as_json``.

    Input lines are bytes split at ``\\n`` (a trailing ``\\r`` is dropped); undecodable bytes
    become U+FFFD rather than stopping the stream.
    """
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
        result = normalize(line, language, policy, lexicon, scheme)
        if as_json:
            yield json.dumps(result.to_json(), ensure_ascii=False) + "\n"
        else:
            yield result.text + "\n"
