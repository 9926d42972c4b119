"""The Python API (voxshard/api.py), and the README's example run exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import voxshard
from voxshard.schemas import ConfigError

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return str(code)


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", readme_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    written = int(lines[0].split()[0])
    assert written > 0 and lines[1].startswith(f"{written} index rows;")
    assert lines[2].startswith("commonvoice_en_") and " 16000 (" in lines[2]
    assert lines[3].endswith("shards planned; nothing written")
    train = int(lines[4].split()[0])
    assert 0 < train < written and lines[4].endswith("train samples as Lhotse Shar")
    assert (tmp_path / "lhotse" / "cv" / "train" / "cuts.000000.jsonl.gz").exists()
    assert not (tmp_path / "shards" / "cv-8k").exists()


def test_import_voxshard_is_light() -> None:
    code = "import sys, voxshard, voxshard.schemas; print(sorted(m for m in ('apache_beam', 'pyarrow', 'torch', 'soundfile') if m in sys.modules))"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert probe.stdout.strip() == "[]"
    assert voxshard.__version__ == "0.1.0"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        voxshard.nope  # noqa: B018


def test_build_reports_unknown_options_and_open_build_its_samples(
    cv_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'shard_size'"):
        voxshard.build("commonvoice", str(cv_root), str(tmp_path / "o"), shard_size=3)
    out = tmp_path / "out"
    stats = voxshard.build("commonvoice", str(cv_root), str(out), progress=False)
    built = voxshard.open_build(str(out))
    assert built.completed and built.stats == stats
    samples = list(built.samples())
    assert len(samples) == stats["written"] == built.index.num_rows
    assert {s["key"] for s in samples} == set(built.index.column("key").to_pylist())
    assert all(len(s["audio"]) == s["metadata"]["num_samples"] for s in samples)
    raw = next(built.samples(decode=False))
    assert raw["audio"][:4] == b"fLaC"
    assert built.verify() == []
    with pytest.raises(ConfigError, match=r"holds no shards\.jsonl"):
        voxshard.open_build(str(tmp_path))


def test_torch_dataset_splits_shards_between_workers(cv_root: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    out = tmp_path / "out"
    voxshard.build("commonvoice", str(cv_root), str(out), shard_size_mb=0.03, progress=False)
    built = voxshard.open_build(str(out))
    dataset = built.torch_dataset(split="train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    keys = [sample["key"] for sample in loader]
    expected = [s["key"] for s in built.samples(split="train", decode=False)]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))
    assert os.cpu_count() is not None
