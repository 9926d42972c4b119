"""Every option of one build, validated at construction (all problems reported at once)."""

from __future__ import annotations

import hashlib
import json
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

from voxshard.corpora import CorpusOptions, get_corpus
from voxshard.corpora.geo_table import read_geo_table
from voxshard.normalizers import EMPTY, check_policy, read_lexicon
from voxshard.pipelines.audio import AudioConfig
from voxshard.pipelines.records import TextOptions
from voxshard.schemas import (
    SCHEMA_VERSION,
    ConfigError,
    UnknownLanguageError,
    resolve_language,
    storage,
)

MB = 1_000_000


@dataclass(frozen=True)
class BuildConfig:
    """Every option of one build. Validated at construction; all problems reported at once."""

    source: str
    root: str
    out: str
    languages: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    sample_rate: int = 16000
    shard_size_mb: float = 256.0
    min_duration_s: float = 0.2
    max_duration_s: float = 60.0
    max_error_rate: float = 0.05
    workers: int = 1
    settings: tuple[tuple[str, str], ...] = ()  # corpus-specific: (name, value) pairs
    geo: str | None = None  # --geo FILE
    language_geo: bool = True  # fall back to the language's location (geo.source "language")
    normalize: str = "canonical"  # transcript policy
    lexicon: str | None = None  # --lexicon FILE (latin<TAB>native)
    scheme: str | None = None  # to-native romanization scheme (default: per language)
    # a whole-file FLAC source that is mono, 16-bit at the build rate is copied into the shard
    # as its own bytes; by default after a full decode that validates it and counts its samples
    verify_copies: bool = True

    def __post_init__(self) -> None:
        problems = []
        try:
            problems.extend(get_corpus(self.source).check_settings(self.settings))
        except ConfigError as error:
            problems.extend(error.problems)
        if self.geo is not None:
            try:
                read_geo_table(self.geo)
            except ConfigError as error:
                problems.extend(error.problems)
        problems.extend(f"--normalize: {p}" for p in check_policy(self.normalize, self.scheme))
        if self.lexicon is not None:
            try:
                read_lexicon(self.lexicon)
            except ConfigError as error:
                problems.extend(error.problems)
        root_exists = _reachable(self.root, "ROOT", problems)
        if root_exists is False:
            problems.append(f"ROOT {self.root!r} does not exist")
        elif root_exists and _inside(self.out, self.root):
            problems.append(
                f"OUT {self.out!r} is ROOT or inside it: a build must not write among its "
                "sources; choose an OUT outside ROOT (beside a manifest is fine)"
            )
        if self.sample_rate < 1000 or self.sample_rate > 192000:
            problems.append(f"--sample-rate {self.sample_rate} is outside 1000..192000 Hz")
        if not self.shard_size_mb > 0:
            problems.append(f"--shard-size {self.shard_size_mb} MB must be positive")
        if self.min_duration_s < 0 or self.max_duration_s <= self.min_duration_s:
            problems.append(
                f"--min-duration {self.min_duration_s} s must be >= 0 and below "
                f"--max-duration {self.max_duration_s} s"
            )
        if not 0.0 <= self.max_error_rate <= 1.0:
            problems.append(f"--max-error-rate {self.max_error_rate} must be within 0..1")
        if self.workers < 1:
            problems.append(f"--workers {self.workers} must be at least 1")
        for tag in self.languages or ():
            try:
                resolve_language(tag)
            except UnknownLanguageError as error:
                problems.append(f"--languages: {error}")
        if self.splits is not None and not all(self.splits):
            problems.append("--splits has an empty name")
        elif self.splits is not None:
            with suppress(ConfigError):  # an unknown SOURCE is reported above
                problems.extend(get_corpus(self.source).check_splits(self.splits))
        if problems:
            raise ConfigError(problems)

    @property
    def shard_size_bytes(self) -> int:
        return int(self.shard_size_mb * MB)

    def text(self) -> TextOptions:
        lexicon = read_lexicon(self.lexicon) if self.lexicon is not None else EMPTY
        return TextOptions(self.normalize, lexicon, self.scheme)

    def audio(self) -> AudioConfig:
        return AudioConfig(self.sample_rate, self.min_duration_s, self.max_duration_s)

    def corpus_options(self) -> CorpusOptions:
        spec = get_corpus(self.source)
        return CorpusOptions(
            root=storage.absolute(self.root),
            splits=self.splits if self.splits is not None else spec.default_splits,
            languages=None
            if self.languages is None
            else frozenset(resolve_language(tag) for tag in self.languages),
            settings=self.settings,
        )

    def identity(self) -> dict[str, Any]:
        """What determines the output bytes (not OUT, not the worker count)."""
        fields = asdict(self)
        fields.pop("out")
        fields.pop("workers")
        fields.pop("max_error_rate")  # decides COMPLETED, not a byte: a rerun may raise it
        fields["root"] = storage.absolute(self.root)
        fields["schema_version"] = SCHEMA_VERSION
        for name in ("geo", "lexicon"):  # a table's content decides the output, not its path
            path = fields[name]
            if path is not None:
                fields[name] = hashlib.sha256(storage.read_bytes(path)).hexdigest()
        return fields

    def config_hash(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()


def _inside(out: str, root: str) -> bool:
    """OUT is a corpus folder ROOT or below it (adapters scan ROOT), or a manifest's own
    folder (the build's files would land among the user's). Beside a manifest is fine."""
    target = storage.absolute(out)
    base = storage.absolute(root)
    if storage.isfile(root):
        return target == storage.dirname(base)
    return target == base or target.startswith(base.rstrip("/") + "/")


def _reachable(path: str, name: str, problems: list[str]) -> bool | None:
    """Whether ``path`` exists; None (and one problem naming the cause and the fix) when its
    file system cannot be asked: no network, no credentials, a missing package."""
    try:
        return storage.exists(path)
    except Exception as error:  # fsspec back ends raise their own types; keep one line
        cause = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        problems.append(
            f"{name} {path!r} cannot be reached ({type(error).__name__}: {cause}); check the "
            "network and the credentials (gcloud auth application-default login for gs://)"
        )
        return None
