"""Script-aware transcript normalization: canonical Unicode, script tags, transliteration
policies, code-mixing metrics and transliteration-insensitive scoring."""

from voxshard.normalizers.canonical import canonicalize
from voxshard.normalizers.codemix import cmi, i_index, language_tags, m_index
from voxshard.normalizers.lexicon import EMPTY, Lexicon, read_lexicon
from voxshard.normalizers.policies import (
    POLICIES,
    SOURCE_POLICY,
    Normalized,
    check_policy,
    normalize,
    normalize_lines,
)
from voxshard.normalizers.romanize import latin_key
from voxshard.normalizers.scoring import Score, edit_distance, score
from voxshard.normalizers.scripts import tag_scripts, token_script

__all__ = [
    "EMPTY",
    "POLICIES",
    "SOURCE_POLICY",
    "Lexicon",
    "Normalized",
    "Score",
    "canonicalize",
    "check_policy",
    "cmi",
    "edit_distance",
    "i_index",
    "language_tags",
    "latin_key",
    "m_index",
    "normalize",
    "normalize_lines",
    "read_lexicon",
    "score",
    "tag_scripts",
    "token_script",
]
