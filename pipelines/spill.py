"""Spill encoded samples to local files so a local build's GroupByKeys carry references only.

The in-process runner (FnApiRunner) holds every GroupByKey's data in memory, so a build that
shuffles encoded audio grows with the corpus. With a spill folder, MakeSamples appends each
sample's FLAC and JSON bytes to one file per bundle and emits a small SampleRef; WriteShards
reads the payloads back one sample at a time, in key order. Dataflow shuffles on its own
service, so remote runs pass the bytes through and spill nothing.

A bundle's file has a random name: a retried bundle writes a new file and the failed
attempt's references are dropped with it, so the output does not depend on attempts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from voxshard.pipelines.shards import Sample, member_bytes


@dataclass(frozen=True, slots=True)
class SampleRef:
    """A Sample whose payload waits in ``spill_dir/file`` at ``offset``."""

    key: str
    lang: str
    corpus: str
    split: str
    duration_s: float
    file: str
    offset: int
    flac_bytes: int
    json_bytes: int

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.lang, self.corpus, self.split)

    @property
    def tar_bytes(self) -> int:
        return member_bytes(f"{self.key}.flac", self.flac_bytes) + member_bytes(
            f"{self.key}.json", self.json_bytes
        )


class SpillWriter:
    """Appends samples to one new file in ``folder``; opened on the first sample."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.name = f"{uuid.uuid4().hex}.spill"
        self.handle: IO[bytes] | None = None
        self.offset = 0

    def add(self, sample: Sample) -> SampleRef:
        if self.handle is None:
            os.makedirs(self.folder, exist_ok=True)
            self.handle = open(os.path.join(self.folder, self.name), "wb")  # noqa: SIM115
        ref = SampleRef(
            key=sample.key,
            lang=sample.lang,
            corpus=sample.corpus,
            split=sample.split,
            duration_s=sample.duration_s,
            file=self.name,
            offset=self.offset,
            flac_bytes=len(sample.flac),
            json_bytes=len(sample.json),
        )
        self.handle.write(sample.flac)
        self.handle.write(sample.json)
        self.offset += len(sample.flac) + len(sample.json)
        return ref

    def close(self) -> None:
        """Flush the file; it must be complete before the bundle's outputs are consumed."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class SpillReader:
    """Reads SampleRefs back into Samples, keeping the files it touches open."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.handles: dict[str, IO[bytes]] = {}

    def load(self, ref: SampleRef | Sample) -> Sample:
        if isinstance(ref, Sample):
            return ref
        handle = self.handles.get(ref.file)
        if handle is None:
            handle = open(os.path.join(self.folder, ref.file), "rb")  # noqa: SIM115
            self.handles[ref.file] = handle
        handle.seek(ref.offset)
        payload = handle.read(ref.flac_bytes + ref.json_bytes)
        if len(payload) != ref.flac_bytes + ref.json_bytes:
            raise OSError(f"spill file {ref.file} is short at {ref.offset}: rerun the build")
        return Sample(
            key=ref.key,
            lang=ref.lang,
            corpus=ref.corpus,
            split=ref.split,
            flac=payload[: ref.flac_bytes],
            json=payload[ref.flac_bytes :],
            duration_s=ref.duration_s,
        )

    def load_all(self, refs: list[SampleRef | Sample]) -> Iterator[Sample]:
        for ref in refs:
            yield self.load(ref)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()
