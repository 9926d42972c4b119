"""Transcript normalization (script-aware policies arrive with the normalizers issue)."""

from normalizers.canonical import canonicalize

__all__ = ["canonicalize"]
