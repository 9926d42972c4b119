"""Typed errors. Each message says what is wrong and how to fix it."""

from __future__ import annotations


class VoxshardError(Exception):
    """Base class of every error voxshard raises on purpose."""


class ConfigError(VoxshardError):
    """Invalid options or environment. Collects every problem so the user fixes them at once."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class CorpusFormatError(VoxshardError):
    """A source table row (or whole file) that does not follow the corpus layout."""

    def __init__(self, path: str, line: int | None, reason: str, detail: str | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = reason  # a stable category, counted in stats.json
        self.detail = detail  # the specifics of this row
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}" + (f" ({detail})" if detail else ""))

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def __reduce__(
        self,
    ) -> tuple[type[CorpusFormatError], tuple[str, int | None, str, str | None]]:
        return (CorpusFormatError, (self.path, self.line, self.reason, self.detail))


class UnknownLanguageError(VoxshardError):
    """A language tag that no table resolves to ISO 639-3."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        super().__init__(
            f"unknown language tag {tag!r}: not an ISO 639-1/639-2B/639-3 code, a known locale, "
            "an MLS language name or a BABEL id (add it to schemas/data/language_aliases.tsv)"
        )

    def __reduce__(self) -> tuple[type[UnknownLanguageError], tuple[str]]:
        return (UnknownLanguageError, (self.tag,))


class InvalidKeyError(VoxshardError):
    """A sample key that webdataset cannot carry."""


class GeoError(VoxshardError):
    """Coordinates out of range or not numbers."""


class AudioError(VoxshardError):
    """Audio that cannot be decoded, or that fails validation. ``stage`` is decode or validate."""

    def __init__(self, stage: str, reason: str, detail: str | None = None) -> None:
        self.stage = stage
        self.reason = reason  # a stable category, counted in stats.json
        self.detail = detail
        super().__init__(f"{stage}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str, str | None]]:
        return (AudioError, (self.stage, self.reason, self.detail))


class BuildError(VoxshardError):
    """A build that ran but did not produce a complete, accounted output."""
