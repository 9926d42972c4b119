"""The OUT folder's lifecycle: claim it (or resume in it), clear it, tidy it when done."""

from __future__ import annotations

import json
import logging

from voxshard.pipelines.config import BuildConfig
from voxshard.schemas import BuildError, ConfigError, storage
from voxshard.schemas.storage import TEMP_MARKER

LOG = logging.getLogger("voxshard")
WORK_DIR = ".work"  # fragments, plan summaries and shard receipts while a build runs
MARKER = ".voxshard-build.json"  # says OUT holds this config's build until COMPLETED
OUTPUT_ENTRIES = (
    "shards",
    "utterances.parquet",
    "shards.jsonl",
    "rejects.jsonl",
    "stats.json",
    "COMPLETED",
    WORK_DIR,
    MARKER,
)


def _marker_bytes(config: BuildConfig) -> bytes:
    marker = {"config_hash": config.config_hash(), "config": config.identity()}
    return (json.dumps(marker, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def prepare_output(config: BuildConfig, overwrite: bool) -> None:
    """Check OUT and claim it; an interrupted build of the same config resumes in place."""
    out = config.out
    marker_path = storage.join(out, MARKER)
    if storage.isdir(out) and storage.listdir(out):
        if overwrite:
            clear_outputs(out)
        elif storage.exists(storage.join(out, "COMPLETED")):
            raise ConfigError(
                f"OUT {out!r} already holds a completed build; pass --overwrite to replace it"
            )
        elif not storage.exists(marker_path):
            raise ConfigError(
                f"OUT {out!r} is not empty and holds no voxshard build; "
                "choose an empty folder or pass --overwrite"
            )
        else:
            previous = json.loads(storage.read_bytes(marker_path)).get("config_hash")
            if previous != config.config_hash():
                raise ConfigError(
                    f"OUT {out!r} holds an unfinished build with other options; "
                    "rerun with the same options or pass --overwrite"
                )
            LOG.info("resuming the unfinished build in %s", out)
            remove_temporaries(out)
    elif storage.exists(out) and not storage.isdir(out):
        raise ConfigError(f"OUT {out!r} exists and is not a folder")
    try:
        storage.makedirs(out)
        storage.write_atomic(marker_path, _marker_bytes(config))
    except OSError as error:
        raise BuildError(
            f"cannot write to OUT {out!r}: {error}; choose a writable location"
        ) from error


def clear_outputs(out: str) -> None:
    """Remove everything a build writes in OUT (and nothing else)."""
    for name in OUTPUT_ENTRIES:
        storage.remove_tree(storage.join(out, name))


def remove_temporaries(out: str) -> None:
    """Delete temp files a killed build left behind (they never carry a final name)."""
    for relative in storage.walk_files(out):
        if TEMP_MARKER in storage.basename(relative):
            storage.remove(storage.join(out, relative))


def remove_work_dir(out: str) -> None:
    """Drop the build's scratch folder once COMPLETED is written (and the marker with it)."""
    storage.remove_tree(storage.join(out, WORK_DIR))
    storage.remove(storage.join(out, MARKER))
