"""The Python API: build, open, verify and compare builds from a notebook or a script.

    import voxshard

    stats = voxshard.build("commonvoice", "cv-corpus-17.0", "shards/cv", languages=["en"])
    built = voxshard.open_build("shards/cv")
    built.index                      # pyarrow.Table: one row per utterance
    for sample in built.samples(split="train"):
        sample["audio"], sample["sample_rate"], sample["metadata"]["transcript"]

Everything here calls the same functions as the CLI; paths may be local folders or URLs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from voxshard.schemas import ConfigError, storage


def build(
    source: str,
    root: str,
    out: str,
    *,
    languages: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    beam_args: Sequence[str] = (),
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Build ``source`` (a registered corpus: commonvoice, voxpopuli, mls, babel, manifest)
    at ``root`` into ``out``; returns stats.json's content (or the plan, with ``dry_run``).

    ``options`` are BuildConfig's fields (``sample_rate=16000``, ``shard_size_mb=256``,
    ``workers=2``, ``normalize="to-latin"``, ...) and the corpus's own settings by name
    (``subset="10hr"`` for mls). ``beam_args`` go to Beam untouched (``["--runner", ...]``).
    Raises ConfigError for bad options (every problem at once) and BuildError when the
    build cannot complete.
    """
    from voxshard.corpora import get_corpus
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.runner import run_build

    known = {f.name for f in fields(BuildConfig)} - {"source", "root", "out", "settings"}
    corpus_settings = set(get_corpus(source).settings) if _registered(source) else set()
    unknown = sorted(set(options) - known - corpus_settings)
    if unknown:
        raise ConfigError(
            [
                f"unknown option {name!r}; BuildConfig takes {', '.join(sorted(known))}"
                for name in unknown
            ]
        )
    config = BuildConfig(
        source=source,
        root=root,
        out=out,
        languages=None if languages is None else tuple(languages),
        splits=None if splits is None else tuple(splits),
        settings=tuple((k, str(v)) for k, v in sorted(options.items()) if k in corpus_settings),
        **{k: v for k, v in options.items() if k in known},
    )
    return run_build(
        config,
        beam_args,
        overwrite=overwrite,
        dry_run_only=dry_run,
        progress_interval_s=10.0 if progress else None,
    )


def _registered(source: str) -> bool:
    from voxshard.corpora import REGISTRY

    return source in REGISTRY


@dataclass
class Build:
    """A finished build, read lazily: its index, shards, stats and samples."""

    path: str
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def completed(self) -> bool:
        return storage.isfile(storage.join(self.path, "COMPLETED"))

    @cached_property
    def stats(self) -> dict[str, Any]:
        """stats.json: discovered / written / rejected, hours by language, ..."""
        value: dict[str, Any] = json.loads(
            storage.read_bytes(storage.join(self.path, "stats.json"))
        )
        return value

    @cached_property
    def shards(self) -> list[dict[str, Any]]:
        """shards.jsonl: path, lang, corpus, split, num_samples, num_bytes, duration_s, sha256."""
        return _jsonl(storage.join(self.path, "shards.jsonl"))

    @cached_property
    def rejects(self) -> list[dict[str, Any]]:
        """rejects.jsonl: key, source, stage, reason, detail."""
        return _jsonl(storage.join(self.path, "rejects.jsonl"))

    @cached_property
    def index(self) -> Any:
        """utterances.parquet as a pyarrow.Table (every sample's JSON fields + its shard)."""
        import pyarrow.parquet as pq

        with storage.open_read(storage.join(self.path, "utterances.parquet")) as handle:
            return pq.read_table(handle)

    def shard_paths(self, split: str | None = None, language: str | None = None) -> list[str]:
        """Full paths (or URLs) of the shards of a split and/or language."""
        return [
            storage.join(self.path, row["path"])
            for row in self.shards
            if (split is None or row["split"] == split)
            and (language is None or row["lang"] == language)
        ]

    def samples(
        self, split: str | None = None, language: str | None = None, decode: bool = True
    ) -> Iterator[dict[str, Any]]:
        """Every sample of the chosen shards, in shard order: ``key``, ``metadata`` (the sample
        JSON), ``sample_rate`` and ``audio`` (float32 mono, or the FLAC bytes when not
        ``decode``)."""
        for path in self.shard_paths(split, language):
            yield from read_shard(path, decode)

    def torch_dataset(self, split: str | None = None, language: str | None = None) -> Any:
        """A torch IterableDataset of ``samples()`` (audio as float32 tensors); with a
        DataLoader's workers, each worker reads its own shards."""
        return _torch_dataset(self.shard_paths(split, language))

    def verify(self, decode: bool = True) -> list[str]:
        """The problems ``voxshard verify`` would name (an empty list: consistent)."""
        return verify(self.path, decode)[0]


def open_build(path: str) -> Build:
    """Open a build folder (or URL) written by ``voxshard build``."""
    if not storage.isfile(storage.join(path, "shards.jsonl")):
        raise ConfigError(f"{path!r} holds no shards.jsonl: is it a voxshard build folder?")
    return Build(path)


def verify(path: str, decode: bool = True) -> tuple[list[str], dict[str, Any]]:
    """(problems, summary) of ``voxshard verify``: no problems means complete and consistent."""
    from voxshard.pipelines.verify import verify as verify_build

    return verify_build(path, decode)


def similarity(builds: Sequence[str], out: str, **options: Any) -> dict[str, Any]:
    """``voxshard similarity``: language-similarity matrices and speaker distances of the
    builds' languages and speakers into ``out``; options are SimilarityConfig's fields."""
    from voxshard.pipelines.similarity import SimilarityConfig, run_similarity

    return run_similarity(SimilarityConfig(builds=tuple(builds), out=out, **options))


def export(
    fmt: str,
    build: str,
    out: str,
    *,
    splits: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``voxshard export``: write the finished build at ``build`` into ``out`` as ``fmt``
    ("lhotse": Shar, "hf": Hugging Face Parquet + card, "nemo": tarred audio + manifests).
    Returns a summary (samples, shards, how to read it)."""
    from voxshard.pipelines.export import export as run_export

    return run_export(fmt, build, out, splits, languages, overwrite)


def read_shard(path: str, decode: bool = True) -> Iterator[dict[str, Any]]:
    """The samples of one shard, as ``Build.samples`` gives them."""
    import soundfile as sf

    from voxshard.pipelines.shards import read_samples

    for key, flac, payload in read_samples(path):
        metadata = json.loads(payload)
        sample: dict[str, Any] = {
            "key": key,
            "metadata": metadata,
            "sample_rate": metadata["sample_rate"],
        }
        if decode:
            sample["audio"], _rate = sf.read(io.BytesIO(flac), dtype="float32")
        else:
            sample["audio"] = flac
        yield sample


def _jsonl(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in storage.read_bytes(path).splitlines() if line.strip()]


def _torch_dataset(paths: list[str]) -> Any:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    class ShardDataset(IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[dict[str, Any]]:
            worker = get_worker_info()
            mine = paths if worker is None else paths[worker.id :: worker.num_workers]
            for path in mine:
                for sample in read_shard(path):
                    yield {**sample, "audio": torch.from_numpy(sample["audio"])}

    return ShardDataset()
