"""`voxshard export`: lhotse, Hugging Face datasets and NeMo readers load a build's export with
its audio and transcripts intact (lhotse and datasets really installed; NeMo's tarred reader's
own matching rule applied to the files)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from conftest import run_cli
from voxshard.api import open_build
from voxshard.pipelines.export import export
from voxshard.schemas import ConfigError


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished Common Voice build (five languages, three splits) and its samples."""
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.demo import generate_commonvoice_demo
    from voxshard.pipelines.runner import run_build

    root = tmp_path_factory.mktemp("corpus")
    generate_commonvoice_demo(str(root), clips_per_language=8)
    out = tmp_path_factory.mktemp("build") / "cv"
    run_build(
        BuildConfig("commonvoice", str(root), str(out), max_error_rate=1.0),
        progress_interval_s=None,
    )
    return out


def expected(build: Path, split: str | None = None) -> dict[str, dict[str, Any]]:
    """key -> {audio (int16 samples), metadata} of the build, read independently."""
    result = {}
    for sample in open_build(str(build)).samples(split=split, decode=False):
        audio, _ = sf.read(io.BytesIO(sample["audio"]), dtype="int16")
        result[sample["key"]] = {
            "audio": audio,
            "metadata": sample["metadata"],
            "flac": sample["audio"],
        }
    return result


def test_lhotse_loads_the_shar_export(built: Path, tmp_path: Path) -> None:
    from lhotse import CutSet

    out = tmp_path / "lhotse"
    result = export("lhotse", str(built), str(out))
    want = expected(built, "train")
    cuts = list(CutSet.from_shar(in_dir=out / "train"))
    assert [c.id for c in cuts] == list(want)  # every sample, in build order
    for cut in cuts:
        sample = want[cut.id]
        metadata = sample["metadata"]
        audio = cut.load_audio()
        assert audio.shape == (1, metadata["num_samples"])
        assert np.array_equal(np.round(audio[0] * 32768).astype(np.int16), sample["audio"])
        assert cut.sampling_rate == metadata["sample_rate"]
        [supervision] = cut.supervisions
        assert supervision.text == metadata["transcript"]["normalized"]
        assert supervision.language == metadata["language"]
        assert supervision.speaker == metadata["speaker"]
        assert cut.custom["license"] == "CC0-1.0"
    assert result["samples"] == len(expected(built))
    # the FLAC bytes are the build's, not re-encoded
    import tarfile

    with tarfile.open(out / "train" / "recording.000000.tar") as tar:
        first = tar.getmembers()[0]
        payload = tar.extractfile(first).read()  # type: ignore[union-attr]
    assert payload == want[first.name.removesuffix(".flac")]["flac"]


def test_datasets_loads_the_hf_export(built: Path, tmp_path: Path) -> None:
    import datasets

    out = tmp_path / "hf"
    export("hf", str(built), str(out))
    cache = str(tmp_path / "hf-cache")
    loaded = datasets.load_dataset(str(out), cache_dir=cache)
    assert sorted(loaded) == ["dev", "test", "train"]
    assert isinstance(loaded["train"].features["audio"], datasets.Audio)
    assert loaded["train"].features["audio"].sampling_rate == 16000
    raw = loaded.cast_column("audio", datasets.Audio(decode=False))
    for split in ("dev", "test", "train"):
        want = expected(built, split)
        rows = list(raw[split])
        assert [row["key"] for row in rows] == list(want)
        for row in rows:
            sample = want[row["key"]]
            audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="int16")
            assert rate == 16000 and np.array_equal(audio, sample["audio"])
            assert row["text"] == sample["metadata"]["transcript"]["normalized"]
            assert row["raw_text"] == sample["metadata"]["transcript"]["raw"]
            assert row["language"] == sample["metadata"]["language"]
            assert row["license"] == "CC0-1.0"
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "license: cc0-1.0" in card and "- split: train" in card
    # datasets caches a folder under a hash of its card: another export in a folder of the
    # same name must not load the first one's rows (equal cards did)
    other = tmp_path / "elsewhere" / "hf"
    export("hf", str(built), str(other), languages=["pl"])  # the same splits and patterns
    again = datasets.load_dataset(str(other), cache_dir=cache)
    for split in ("dev", "test", "train"):
        assert again[split]["key"] == [k for k in expected(built, split) if "_pl_" in k]


def nemo_reader(split_dir: Path) -> list[tuple[dict[str, Any], bytes]]:
    """NeMo's tarred audio reading, rule for rule: brace-expand tarred_audio_filepaths
    (_OP_/_CL_ for braces), stream the tars with webdataset, take the audio member of each
    sample and match it to the manifest entry whose audio_filepath has the same stem."""
    import braceexpand
    import webdataset as wds

    config = dict(
        line.split(": ", 1) for line in (split_dir / "nemo_dataset.yaml").read_text().splitlines()
    )
    pattern = json.loads(config["tarred_audio_filepaths"])
    urls = list(braceexpand.braceexpand(pattern.replace("_OP_", "{").replace("_CL_", "}")))
    manifest_path = json.loads(config["manifest_filepath"])
    entries = [json.loads(line) for line in Path(manifest_path).read_text().splitlines()]
    by_stem = {Path(e["audio_filepath"]).stem: e for e in entries}
    found = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        audio_key = next(k for k in ("wav", "mp3", "flac") if k in sample)
        found.append((by_stem[Path(sample["__key__"]).name], sample[audio_key]))
    return found


def test_nemo_tarred_export_matches_its_manifest(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "nemo"
    export("nemo", str(built), str(out), splits=["train", "dev"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["dev", "train"]
    for split in ("train", "dev"):
        want = expected(built, split)
        found = nemo_reader(out / split)
        assert [entry["key"] for entry, _ in found] == list(want)
        for entry, flac in found:
            sample = want[entry["key"]]
            audio, _ = sf.read(io.BytesIO(flac), dtype="int16")
            assert np.array_equal(audio, sample["audio"])
            assert entry["text"] == (sample["metadata"]["transcript"]["normalized"] or "")
            assert entry["duration"] == sample["metadata"]["duration_s"]
            assert entry["lang"] == sample["metadata"]["language"]
            # shard_id names the tar that holds it; sharded manifests agree
            shard = out / split / f"audio_{entry['shard_id']}.tar"
            assert shard.exists()
            sharded = out / split / "sharded_manifests" / f"manifest_{entry['shard_id']}.json"
            assert json.dumps(entry, ensure_ascii=False) in sharded.read_text(encoding="utf-8")


def test_language_filter_rerun_and_mistakes(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    first = export("nemo", str(built), str(out), languages=["pl"])
    entries = [
        json.loads(line)
        for split in ("dev", "test", "train")
        for line in (out / split / "tarred_audio_manifest.json").read_text().splitlines()
    ]
    assert {e["lang"] for e in entries} == {"pol"} and first["samples"] == len(entries)
    again = export("nemo", str(built), str(out), languages=["pl"])
    assert again["already_done"] is True
    with pytest.raises(ConfigError, match="other options; pass --overwrite"):
        export("nemo", str(built), str(out), languages=["en"])
    assert export("nemo", str(built), str(out), languages=["en"], overwrite=True)["samples"] > 0
    with pytest.raises(ConfigError, match=r"no split 'tset'; it has dev, test, train"):
        export("hf", str(built), str(tmp_path / "y"), splits=["tset"])
    with pytest.raises(ConfigError, match=r"no 'fr' \(fra\); it has cmn, eng, hin, pol, rus"):
        export("hf", str(built), str(tmp_path / "y"), languages=["fr"])
    with pytest.raises(ConfigError, match="unknown export format 'kaldi'"):
        export("kaldi", str(built), str(tmp_path / "y"))
    tampered = tmp_path / "tampered"
    shutil.copytree(built, tampered)
    rows = (tampered / "shards.jsonl").read_text().splitlines()
    rows[0] = rows[0].replace('"split":"dev"', '"split":"../../escaped"')
    (tampered / "shards.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=r"shards.jsonl line 1 is not a voxshard shard"):
        export("nemo", str(tampered), str(tmp_path / "t" / "out"))
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "t" / "out").exists()
    # an export killed part-way (its marker says unfinished) is replaced by a rerun
    killed = tmp_path / "killed"
    (killed / "dev").mkdir(parents=True)
    (killed / "dev" / "audio_0.tar").write_bytes(b"partial")
    (killed / ".voxshard-export.json").write_text('{"finished": false, "request": {}}')
    assert export("nemo", str(built), str(killed), splits=["dev"])["finished"] is True
    assert (killed / "dev" / "audio_0.tar").read_bytes() != b"partial"
    assert json.loads((killed / ".voxshard-export.json").read_text())["finished"] is True
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not empty and holds no voxshard export"):
        export("hf", str(built), str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_export_is_deterministic_and_the_cli_says_how_to_read_it(
    built: Path, tmp_path: Path
) -> None:
    run = run_cli("export", "lhotse", str(built), str(tmp_path / "a"))
    assert run.returncode == 0, run.stderr
    assert re.search(r"^\d+ samples in 15 shard\(s\) -> .*CutSet.from_shar", run.stdout, re.M)
    export("lhotse", str(built), str(tmp_path / "b"))
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
            if path.name != ".voxshard-export.json":
                assert path.read_bytes() == twin.read_bytes(), path
    bad = run_cli("export", "hf", str(tmp_path / "nowhere"), str(tmp_path / "c"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a finished build" in bad.stderr


def test_an_export_into_a_url_holds_the_same_bytes(built: Path, tmp_path: Path) -> None:
    import uuid

    from voxshard.schemas import storage

    url = f"memory://voxshard-export-{uuid.uuid4().hex}/nemo"
    export("nemo", str(built), url, splits=["dev"])
    export("nemo", str(built), str(tmp_path / "nemo"), splits=["dev"])
    local = sorted(
        str(p.relative_to(tmp_path / "nemo")) for p in (tmp_path / "nemo").rglob("*") if p.is_file()
    )
    assert sorted(storage.walk_files(url)) == local
    for name in local:
        if name != ".voxshard-export.json" and not name.endswith("nemo_dataset.yaml"):
            assert storage.read_bytes(f"{url}/{name}") == (tmp_path / "nemo" / name).read_bytes()
    assert export("nemo", str(built), url, splits=["dev"])["already_done"] is True
    storage.remove_tree(url.rsplit("/", 1)[0])
