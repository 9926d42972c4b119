"""Exports of a finished build into the formats other toolkits read, one registry entry each.

- ``lhotse``: Lhotse Shar, per split ``cuts.NNNNNN.jsonl.gz`` + ``recording.NNNNNN.tar``
  (read with ``CutSet.from_shar(in_dir=...)``).
- ``hf``: Hugging Face Parquet, ``data/<split>-NNNNN-of-NNNNN.parquet`` with an ``audio``
  column of {bytes, path} declared as ``Audio`` in the schema, and a dataset card whose YAML
  names the splits (``datasets.load_dataset(OUT)``).
- ``nemo``: NeMo's tarred audio dataset, per split ``audio_N.tar`` +
  ``tarred_audio_manifest.json`` + ``sharded_manifests/manifest_N.json``, the layout of NeMo's
  ``convert_to_tarred_audio_dataset.py``.

Audio is never re-encoded: every format gets the build's FLAC bytes. One exported shard per
build shard, in shards.jsonl order, so an export is as deterministic as the build: the same
build gives the same bytes. Files are written atomically; ``.voxshard-export.json`` is written
first (an interrupted export is known as ours and replaced by a rerun) and rewritten with
``finished`` last.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from voxshard.pipelines.outdir import is_shard_path
from voxshard.pipelines.plan import SAFE_SPLIT
from voxshard.pipelines.shards import read_samples, write_members
from voxshard.schemas import ConfigError, UnknownLanguageError, resolve_language, storage

EXPORT_MARKER = ".voxshard-export.json"
Progress = Callable[[int, int], None]  # (shards done, shards in all)


@dataclass(frozen=True)
class Shard:
    """A build shard chosen for export, with its place among its split's shards."""

    path: str  # full path or URL
    split: str
    number: int  # 0, 1, ... within the split
    of: int  # shards in the split


@dataclass(frozen=True)
class ExportSpec:
    name: str
    summary: str
    write: Callable[[Sequence[Shard], str, Progress | None], dict[str, Any]]


# ---------------------------------------------------------------------------------- lhotse


def lhotse_cut(metadata: dict[str, Any]) -> dict[str, Any]:
    """A MonoCut (as lhotse's ``Cut.to_dict``) of one sample: the whole recording, one
    supervision with the transcript, language, speaker and gender, everything else voxshard
    knows in ``custom``. The recording is a Shar placeholder filled from the tar."""
    key = metadata["key"]
    rate = metadata["sample_rate"]
    duration_s = metadata["num_samples"] / rate
    transcript = metadata["transcript"]
    supervision: dict[str, Any] = {
        "id": key,
        "recording_id": key,
        "start": 0.0,
        "duration": duration_s,
        "channel": 0,
        "text": transcript["normalized"],
        "language": metadata["language"],
        "speaker": metadata["speaker"],
        "gender": metadata["gender"],
        "custom": {"raw_text": transcript["raw"], "scripts": transcript["scripts"]},
    }
    return {
        "id": key,
        "start": 0.0,
        "duration": duration_s,
        "channel": 0,
        "supervisions": [supervision],
        "recording": lhotse_recording(metadata),
        "custom": {
            name: metadata[name]
            for name in (
                "corpus",
                "split",
                "source_language",
                "license",
                "age",
                "accent",
                "geo",
                "source",
            )
        }
        | {"cmi": transcript["cmi"]},
        "type": "MonoCut",
    }


def lhotse_recording(metadata: dict[str, Any]) -> dict[str, Any]:
    rate = metadata["sample_rate"]
    return {
        "id": metadata["key"],
        "sources": [{"type": "shar", "channels": [0], "source": ""}],
        "sampling_rate": rate,
        "num_samples": metadata["num_samples"],
        "duration": metadata["num_samples"] / rate,
        "channel_ids": [0],
    }


def _json_line(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")


def _gzip(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as handle:
        handle.write(payload)
    return buffer.getvalue()


def write_lhotse(shards: Sequence[Shard], out: str, progress: Progress | None) -> dict[str, Any]:
    samples = 0
    for done, shard in enumerate(shards, 1):
        cuts: list[bytes] = []
        members: list[tuple[str, bytes]] = []
        for key, flac, payload in read_samples(shard.path):
            metadata = json.loads(payload)
            cuts.append(_json_line(lhotse_cut(metadata)))
            members.append((f"{key}.flac", flac))
            members.append((f"{key}.json", _json_line(lhotse_recording(metadata))))
        folder = storage.join(out, shard.split)
        storage.makedirs(folder)
        write_members(storage.join(folder, f"recording.{shard.number:06d}.tar"), members)
        storage.write_atomic(
            storage.join(folder, f"cuts.{shard.number:06d}.jsonl.gz"), _gzip(b"".join(cuts))
        )
        samples += len(cuts)
        if progress is not None:
            progress(done, len(shards))
    return {"samples": samples, "read_with": "lhotse.CutSet.from_shar(in_dir=OUT/<split>)"}


# -------------------------------------------------------------------------- Hugging Face

HF_ROWS_PER_GROUP = 100  # the Hub's advice for audio Parquet: small row groups

HF_COLUMNS: tuple[tuple[str, str], ...] = (  # name, datasets Value dtype (audio apart)
    ("key", "string"),
    ("text", "string"),
    ("raw_text", "string"),
    ("language", "string"),
    ("source_language", "string"),
    ("speaker", "string"),
    ("gender", "string"),
    ("age", "string"),
    ("accent", "string"),
    ("corpus", "string"),
    ("license", "string"),
    ("lat", "float64"),
    ("lon", "float64"),
    ("geo_source", "string"),
    ("scripts", "string"),  # space-separated script codes per token
    ("cmi", "float64"),
    ("duration_s", "float64"),
    ("num_samples", "int64"),
    ("source_path", "string"),
)


def hf_features(sample_rate: int) -> dict[str, Any]:
    """The ``datasets`` Features (as ``Features.to_dict()``), stored in the Parquet schema
    metadata (key ``huggingface``) and in the card's YAML."""
    features: dict[str, Any] = {"audio": {"sampling_rate": sample_rate, "_type": "Audio"}}
    for name, dtype in HF_COLUMNS:
        features[name] = {"dtype": dtype, "_type": "Value"}
    return features


def hf_row(key: str, flac: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    transcript = metadata["transcript"]
    geo = metadata["geo"] or {}
    scripts = transcript["scripts"]
    return {
        "audio": {"bytes": flac, "path": f"{key}.flac"},
        "key": key,
        "text": transcript["normalized"],
        "raw_text": transcript["raw"],
        "language": metadata["language"],
        "source_language": metadata["source_language"],
        "speaker": metadata["speaker"],
        "gender": metadata["gender"],
        "age": metadata["age"],
        "accent": metadata["accent"],
        "corpus": metadata["corpus"],
        "license": metadata.get("license", "unknown"),
        "lat": geo.get("lat"),
        "lon": geo.get("lon"),
        "geo_source": geo.get("source"),
        "scripts": None if scripts is None else " ".join(scripts),
        "cmi": transcript["cmi"],
        "duration_s": metadata["duration_s"],
        "num_samples": metadata["num_samples"],
        "source_path": metadata["source"]["path"],
    }


def _hf_schema(sample_rate: int) -> Any:
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64()}
    audio = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    fields = [pa.field("audio", audio)] + [pa.field(n, types[t]) for n, t in HF_COLUMNS]
    info = {"info": {"features": hf_features(sample_rate)}}
    return pa.schema(fields, metadata={b"huggingface": json.dumps(info).encode()})


def write_hf(shards: Sequence[Shard], out: str, progress: Progress | None) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    samples = 0
    splits: dict[str, int] = {}
    split_bytes: dict[str, int] = {}
    licenses: dict[str, int] = {}
    languages: set[str] = set()
    rates: set[int] = set()
    storage.makedirs(storage.join(out, "data"))
    for done, shard in enumerate(shards, 1):
        rows = []
        for key, flac, payload in read_samples(shard.path):
            metadata = json.loads(payload)
            rates.add(metadata["sample_rate"])
            rows.append(hf_row(key, flac, metadata))
            license_ = rows[-1]["license"]
            licenses[license_] = licenses.get(license_, 0) + 1
            languages.add(metadata["language"])
        rate = next(iter(rates)) if rates else 16000
        if len(rates) > 1:
            raise ConfigError(f"the build mixes sample rates {sorted(rates)}: export it per rate")
        table = pa.Table.from_pylist(rows, schema=_hf_schema(rate))
        name = f"{shard.split}-{shard.number:05d}-of-{shard.of:05d}.parquet"
        path = storage.join(out, "data", name)
        with storage.atomic_writer(path) as handle:
            pq.write_table(table, handle, row_group_size=HF_ROWS_PER_GROUP, compression="zstd")
        split_bytes[shard.split] = split_bytes.get(shard.split, 0) + storage.getsize(path)
        samples += len(rows)
        splits[shard.split] = splits.get(shard.split, 0) + len(rows)
        if progress is not None:
            progress(done, len(shards))
    rate = next(iter(rates)) if rates else 16000
    card = hf_card(splits, sorted(languages), licenses, rate, split_bytes)
    storage.write_atomic(storage.join(out, "README.md"), card.encode("utf-8"))
    return {"samples": samples, "read_with": "datasets.load_dataset(OUT)"}


def hf_card(
    splits: dict[str, int],
    languages: list[str],
    licenses: dict[str, int],
    sample_rate: int,
    split_bytes: dict[str, int] | None = None,
) -> str:
    """README.md with the Hub's YAML: configs (one data_files entry per split), features,
    splits with their sizes, languages (ISO 639-3, as the Hub accepts) and licence.

    The sizes matter beyond information: ``datasets`` caches a local folder's dataset under
    a hash of its card's config, and two exports whose cards were equal (same folder name,
    same patterns) shared one cache entry, so the second loaded the first's rows."""
    sizes = split_bytes or {}
    from voxshard.schemas import language_name

    hub_license = _hub_license(licenses)
    yaml = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in sorted(splits):
        yaml += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    yaml += ["dataset_info:", "  features:"]
    for name, feature in hf_features(sample_rate).items():
        yaml.append(f"  - name: {name}")
        if feature["_type"] == "Audio":
            yaml += ["    dtype:", "      audio:", f"        sampling_rate: {sample_rate}"]
        else:
            yaml.append(f"    dtype: {feature['dtype']}")
    yaml += ["  splits:"]
    for split in sorted(splits):
        yaml += [
            f"  - name: {split}",
            f"    num_bytes: {sizes.get(split, 0)}",
            f"    num_examples: {splits[split]}",
        ]
    total = sum(sizes.values())
    yaml += [f"  download_size: {total}", f"  dataset_size: {total}"]
    yaml += ["language:", *(f"- {lang}" for lang in languages), f"license: {hub_license}"]
    yaml += ["task_categories:", "- automatic-speech-recognition", "---", ""]
    body = [
        "# voxshard export",
        "",
        "Exported by `voxshard export hf` from a voxshard build; audio is the build's FLAC "
        f"({sample_rate} Hz mono), transcripts and metadata as in its samples.",
        "",
        "| split | utterances |",
        "|---|---:|",
        *(f"| {split} | {count:,} |" for split, count in sorted(splits.items())),
        "",
        "| licence | utterances |",
        "|---|---:|",
        *(f"| {name} | {count:,} |" for name, count in sorted(licenses.items())),
        "",
        "Languages: " + ", ".join(f"{lang} ({language_name(lang)})" for lang in languages) + ".",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("path/to/this/folder")',
        "# without torchcodec, read the FLAC bytes yourself:",
        'ds = ds.cast_column("audio", datasets.Audio(decode=False))',
        "```",
        "",
    ]
    return "\n".join(yaml + body)


# The Hub's licence identifiers for the SPDX ones the corpora use (lower case on the Hub)
HUB_LICENSES = {"CC0-1.0": "cc0-1.0", "CC-BY-4.0": "cc-by-4.0", "CC-BY-SA-4.0": "cc-by-sa-4.0"}


def _hub_license(licenses: dict[str, int]) -> str:
    names = {HUB_LICENSES.get(name, "other") for name in licenses}
    if len(names) == 1:
        return names.pop()
    return "other"  # a mix: the card's table says which sample is under which


# ---------------------------------------------------------------------------------- NeMo


def nemo_entry(key: str, metadata: dict[str, Any], shard_id: int) -> dict[str, Any]:
    """One line of NeMo's tarred manifest: ``audio_filepath`` is the member name in
    ``audio_<shard_id>.tar``; every other voxshard field rides along (NeMo keeps them)."""
    transcript = metadata["transcript"]
    return {
        "audio_filepath": f"{key}.flac",
        "duration": metadata["duration_s"],
        "text": transcript["normalized"] or "",
        "lang": metadata["language"],
        "shard_id": shard_id,
        "key": key,
        "speaker": metadata["speaker"],
        "gender": metadata["gender"],
        "corpus": metadata["corpus"],
        "license": metadata.get("license", "unknown"),
        "source_language": metadata["source_language"],
        "raw_text": transcript["raw"],
    }


def write_nemo(shards: Sequence[Shard], out: str, progress: Progress | None) -> dict[str, Any]:
    samples = 0
    manifests: dict[str, list[bytes]] = {}
    for done, shard in enumerate(shards, 1):
        folder = storage.join(out, shard.split)
        storage.makedirs(storage.join(folder, "sharded_manifests"))
        lines: list[bytes] = []
        members: list[tuple[str, bytes]] = []
        for key, flac, payload in read_samples(shard.path):
            metadata = json.loads(payload)
            lines.append(_json_line(nemo_entry(key, metadata, shard.number)))
            members.append((f"{key}.flac", flac))
        write_members(storage.join(folder, f"audio_{shard.number}.tar"), members)
        storage.write_atomic(
            storage.join(folder, "sharded_manifests", f"manifest_{shard.number}.json"),
            b"".join(lines),
        )
        manifests.setdefault(shard.split, []).extend(lines)
        samples += len(lines)
        if progress is not None:
            progress(done, len(shards))
    for split, lines in manifests.items():
        folder = storage.join(out, split)
        storage.write_atomic(storage.join(folder, "tarred_audio_manifest.json"), b"".join(lines))
        last = max(s.number for s in shards if s.split == split)
        config = {
            "is_tarred": True,
            "manifest_filepath": storage.join(folder, "tarred_audio_manifest.json"),
            "tarred_audio_filepaths": storage.join(folder, f"audio__OP_0..{last}_CL_.tar"),
            "shard_manifests": True,
        }
        yaml = "".join(f"{name}: {json.dumps(value)}\n" for name, value in config.items())
        storage.write_atomic(storage.join(folder, "nemo_dataset.yaml"), yaml.encode())
    return {"samples": samples, "read_with": "model.<split>_ds from OUT/<split>/nemo_dataset.yaml"}


EXPORTERS: dict[str, ExportSpec] = {
    spec.name: spec
    for spec in (
        ExportSpec("lhotse", "Lhotse Shar (cuts + recording tars) per split", write_lhotse),
        ExportSpec("hf", "Hugging Face Parquet with an Audio column and a dataset card", write_hf),
        ExportSpec(
            "nemo", "NeMo tarred audio dataset + JSON-lines manifests per split", write_nemo
        ),
    )
}


def choose_shards(
    build: str, splits: Sequence[str] | None, languages: Sequence[str] | None
) -> list[Shard]:
    """The build's shards of the chosen splits and languages, numbered within each split.
    Unknown names are errors that say what the build has."""
    payload = storage.read_bytes(storage.join(build, "shards.jsonl"))
    rows = [json.loads(line) for line in payload.splitlines() if line.strip()]
    for number, row in enumerate(rows, 1):  # split names become folders under OUT
        split, path = str(row.get("split", "")), str(row.get("path", ""))
        if not (is_shard_path(path) and SAFE_SPLIT.match(split) and ".." not in split):
            raise ConfigError(
                f"{build!r}: shards.jsonl line {number} is not a voxshard shard "
                f"(path {path!r}, split {split!r}); check the build with voxshard verify"
            )
    have_splits = sorted({row["split"] for row in rows})
    have_languages = sorted({row["lang"] for row in rows})
    problems = [
        f"--splits: the build has no split {name!r}; it has {', '.join(have_splits)}"
        for name in splits or ()
        if name not in have_splits
    ]
    wanted_languages: set[str] | None = None
    if languages is not None:
        wanted_languages = set()
        for tag in languages:
            try:
                code = resolve_language(tag)
            except UnknownLanguageError as error:
                problems.append(f"--languages: {error}")
                continue
            if code not in have_languages:
                problems.append(
                    f"--languages: the build has no {tag!r} ({code}); it has "
                    f"{', '.join(have_languages)}"
                )
            wanted_languages.add(code)
    if problems:
        raise ConfigError(problems)
    chosen = [
        row
        for row in rows
        if (splits is None or row["split"] in splits)
        and (wanted_languages is None or row["lang"] in wanted_languages)
    ]
    chosen.sort(key=lambda row: (row["split"], row["path"]))
    counts: dict[str, int] = {}
    for row in chosen:
        counts[row["split"]] = counts.get(row["split"], 0) + 1
    numbered: list[Shard] = []
    seen: dict[str, int] = {}
    for row in chosen:
        number = seen.get(row["split"], 0)
        seen[row["split"]] = number + 1
        numbered.append(
            Shard(storage.join(build, row["path"]), row["split"], number, counts[row["split"]])
        )
    return numbered


def export(
    fmt: str,
    build: str,
    out: str,
    splits: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export the finished build at ``build`` as ``fmt`` into ``out``; returns a summary
    (also written to ``out/.voxshard-export.json``, last)."""
    if fmt not in EXPORTERS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORTERS)}")
    if not storage.isfile(storage.join(build, "COMPLETED")):
        raise ConfigError(
            f"{build!r} is not a finished build (no COMPLETED): finish it with voxshard build, "
            "or check it with voxshard verify"
        )
    shards = choose_shards(build, splits, languages)
    request = {
        "format": fmt,
        "build": storage.absolute(build),
        "build_seal": json.loads(storage.read_bytes(storage.join(build, "COMPLETED")))["files"],
        "splits": None if splits is None else sorted(splits),
        "languages": None if languages is None else sorted(languages),
    }
    marker = storage.join(out, EXPORT_MARKER)
    if storage.isdir(out) and storage.listdir(out):
        previous = _read_marker(marker)
        if previous is None:
            raise ConfigError(
                f"export OUT {out!r} is not empty and holds no voxshard export: choose an empty "
                "or new folder"
            )
        finished = previous.get("finished", True)
        if finished and not overwrite:
            if previous.get("request") == request:
                return {**previous, "already_done": True}
            raise ConfigError(
                f"export OUT {out!r} holds an export of other options; pass --overwrite to "
                "replace it, or choose another folder"
            )
        storage.remove_tree(out)  # --overwrite, or an export of ours that did not finish
    # the marker goes first (an interrupted export is known as ours) and is rewritten last
    storage.write_atomic(marker, _marker_bytes({"request": request, "finished": False}))
    summary = EXPORTERS[fmt].write(shards, out, progress)
    result = {"request": request, "shards": len(shards), **summary, "finished": True}
    storage.write_atomic(marker, _marker_bytes(result))
    return result


def _marker_bytes(content: dict[str, Any]) -> bytes:
    return (json.dumps(content, indent=2, sort_keys=True) + "\n").encode()


def _read_marker(path: str) -> dict[str, Any] | None:
    if not storage.isfile(path):
        return None
    try:
        value = json.loads(storage.read_bytes(path))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def iter_formats() -> Iterator[tuple[str, str]]:
    for spec in EXPORTERS.values():
        yield spec.name, spec.summary
