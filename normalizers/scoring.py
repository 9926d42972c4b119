"""WER, CER and transliteration-insensitive WER (T-WER) for code-switched evaluation.

T-WER counts a reference word as matched when the hypothesis has it in either script: equal
words, a lexicon pair, or equal ``to-latin`` keys. Corpus rates are total edits over total
reference words (characters for CER).

An empty reference follows jiwer 4.0's definition: against an empty hypothesis it scores 0;
otherwise every hypothesis word (character) is an insertion over a denominator of 1, so ``''``
vs ``'hello world'`` has WER 2. The same holds over a corpus whose references are all empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from voxshard.normalizers.lexicon import EMPTY, Lexicon
from voxshard.normalizers.policies import normalize
from voxshard.normalizers.romanize import latin_key
from voxshard.schemas import ConfigError

T = TypeVar("T")


def edit_distance(
    ref: Sequence[T], hyp: Sequence[T], equal: Callable[[T, T], bool] | None = None
) -> int:
    """Levenshtein distance (unit costs) with an optional equality test."""
    same = equal or (lambda a, b: a == b)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (0 if same(r, h) else 1),
            )
        previous = current
    return previous[-1]


def rate(edits: int, reference_size: int) -> float:
    """Edits per reference unit; with an empty reference, the edits (insertions) themselves."""
    return edits / reference_size if reference_size else float(edits)


def transliteration_equal(lexicon: Lexicon) -> Callable[[str, str], bool]:
    def equal(a: str, b: str) -> bool:
        return a == b or lexicon.same(a, b) or (latin_key(a) == latin_key(b) != "")

    return equal


@dataclass
class UtteranceScore:
    index: int
    ref_words: int
    ref_chars: int
    word_edits: int
    char_edits: int
    t_word_edits: int


@dataclass
class Score:
    wer: float
    cer: float
    t_wer: float
    utterances: int
    ref_words: int
    details: list[UtteranceScore] = field(default_factory=list)

    def to_json(self, details: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "wer": round(self.wer, 6),
            "cer": round(self.cer, 6),
            "t_wer": round(self.t_wer, 6),
            "utterances": self.utterances,
            "ref_words": self.ref_words,
        }
        if details:
            out["details"] = self.detail_rows()
        return out

    def detail_rows(self) -> list[dict[str, float]]:
        return [
            {
                "index": d.index,
                "ref_words": d.ref_words,
                "wer": rate(d.word_edits, d.ref_words),
                "cer": rate(d.char_edits, d.ref_chars),
                "t_wer": rate(d.t_word_edits, d.ref_words),
            }
            for d in self.details
        ]


def score(
    refs: Sequence[str],
    hyps: Sequence[str],
    language: str,
    policy: str = "canonical",
    lexicon: Lexicon = EMPTY,
) -> Score:
    """Corpus WER, CER and T-WER of hypotheses against references, line by line."""
    if len(refs) != len(hyps):
        raise ConfigError(f"{len(refs)} reference lines but {len(hyps)} hypothesis lines")
    equal = transliteration_equal(lexicon)
    details = []
    for index, (ref, hyp) in enumerate(zip(refs, hyps, strict=True)):
        r = normalize(ref, language, policy, lexicon).text
        h = normalize(hyp, language, policy, lexicon).text
        r_words, h_words = r.split(), h.split()
        details.append(
            UtteranceScore(
                index=index,
                ref_words=len(r_words),
                ref_chars=len(r),
                word_edits=edit_distance(r_words, h_words),
                char_edits=edit_distance(r, h),
                t_word_edits=edit_distance(r_words, h_words, equal),
            )
        )
    words = sum(d.ref_words for d in details)
    chars = sum(d.ref_chars for d in details)
    return Score(
        wer=rate(sum(d.word_edits for d in details), words),
        cer=rate(sum(d.char_edits for d in details), chars),
        t_wer=rate(sum(d.t_word_edits for d in details), words),
        utterances=len(details),
        ref_words=words,
        details=details,
    )
