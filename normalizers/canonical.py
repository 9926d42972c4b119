"""Unicode canonicalization of transcripts with unicodedata2 (current Unicode, not Python's)."""

from __future__ import annotations

import re

import unicodedata2

_WHITESPACE = re.compile(r"\s+")


def canonicalize(text: str, lang: str | None = None) -> str:
    """NFC (unicodedata2) and every run of whitespace, NBSP included, collapsed to one space."""
    del lang  # per-language rules come with the script-aware normalizers
    return _WHITESPACE.sub(" ", unicodedata2.normalize("NFC", text)).strip()
