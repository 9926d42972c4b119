"""Shared fixtures: tiny corpora fabricated in tmp_path, in the real codecs and layouts."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
CODECS = {
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "flac": ("FLAC", "PCM_16"),
    "wav": ("WAV", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "sph": ("NIST", "PCM_16"),
}

_V1 = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender"]
CV_HEADERS = {
    "v1": [*_V1, "accent"],
    "v5": [*_V1, "accent", "locale", "segment"],
    "v13": [*_V1, "accents", "variant", "locale", "segment"],
    "v17": [
        *_V1[:2],
        "sentence_id",
        "sentence",
        "sentence_domain",
        *_V1[3:],
        "accents",
        "variant",
        "locale",
        "segment",
    ],
}


def tone(
    freq_hz: float, duration_s: float, rate_hz: int, amplitude: float = 0.4
) -> npt.NDArray[np.float32]:
    """A sine with a short fade in/out (no clicks, so lossy codecs keep it clean)."""
    t = np.arange(round(duration_s * rate_hz)) / rate_hz
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
    wave: npt.NDArray[np.float32] = (amplitude * fade * np.sin(2 * np.pi * freq_hz * t)).astype(
        np.float32
    )
    return wave


def write_audio(path: Path, samples: npt.NDArray[np.float32], rate_hz: int, codec: str) -> Path:
    fmt, subtype = CODECS[codec]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate_hz, format=fmt, subtype=subtype)
    return path


def write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cv_row(header: Sequence[str], **values: str) -> list[str]:
    return [values.get(name, "") for name in header]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file below root, by relative path."""
    digests = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@pytest.fixture
def cv_root(tmp_path: Path) -> Path:
    """A Common Voice tree: en (v17 header, 48 kHz MP3), pl (v13), de (v1, 32 kHz MP3).

    en: 3 train, 1 dev, 1 test, plus validated.tsv listing train + dev clips (a build with
    --splits train,validated must write each clip once). Each clip is a distinct tone.
    """
    root = tmp_path / "cv-corpus-17.0"
    layout = {
        "en": ("v17", 48000, {"train": 3, "dev": 1, "test": 1}),
        "pl": ("v13", 48000, {"train": 2, "dev": 1, "test": 0}),
        "de": ("v1", 32000, {"train": 2, "dev": 0, "test": 1}),
    }
    freq = 300.0
    for locale, (generation, rate, counts) in layout.items():
        header = CV_HEADERS[generation]
        rows: dict[str, list[list[str]]] = {"train": [], "dev": [], "test": [], "validated": []}
        number = 0
        for split, count in counts.items():
            for _ in range(count):
                number += 1
                freq += 50.0
                clip = f"common_voice_{locale}_{number}.mp3"
                write_audio(root / locale / "clips" / clip, tone(freq, 1.0, rate), rate, "mp3")
                row = cv_row(
                    header,
                    client_id=f"{locale}{number % 2}".ljust(128, "0"),
                    path=clip,
                    sentence=f"{locale} sentence {number}",
                    up_votes="2",
                    down_votes="0",
                    age="twenties" if number % 2 else "",
                    gender=("female_feminine" if generation == "v17" else "female")
                    if number % 2
                    else "",
                    locale=locale,
                )
                rows[split].append(row)
                if split in ("train", "dev"):
                    rows["validated"].append(row)
        for split, split_rows in rows.items():
            write_tsv(root / locale / f"{split}.tsv", header, split_rows)
    return root


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m voxshard ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "voxshard", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
