"""Script-aware transcript normalization: canonical Unicode, script tags, transliteration
policies, code-mixing metrics and transliteration-insensitive scoring."""

from normalizers.canonical import canonicalize
from normalizers.codemix import cmi, i_index, language_tags, m_index
from normalizers.lexicon import EMPTY, Lexicon, read_lexicon
from normalizers.policies import POLICIES, Normalized, check_policy, normalize, normalize_lines
from normalizers.romanize import latin_key
from normalizers.scoring import Score, edit_distance, score
from normalizers.scripts import tag_scripts, token_script

__all__ = [
    "EMPTY",
    "POLICIES",
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
