from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_cli, write_tsv
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.demo import speech_like
from voxshard.pipelines.runner import run_build
from voxshard.schemas import ConfigError
from voxshard.training.bestrq import RandomProjectionQuantizer, span_mask
from voxshard.training.config import load_config
from voxshard.training.data import (
    CORRUPT_SAMPLE_ERRORS,
    BatchSampler,
    CorruptCounter,
    LanguageStream,
    decode_sample,
    discover,
    iterate_shard,
)
from voxshard.training.features import STD_FLOOR, LogMel, normalize_per_feature
from voxshard.training.loop import Trainer
from voxshard.training.masr import cosine_distance_matrix, masr_triplet
from voxshard.training.model import build_encoder, count_parameters

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def two_language_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two languages x 24 utterances of speech-like audio (distinct pitch ranges), small
    shards so each language has several."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for lang_index, language in enumerate(("en", "pl")):
        for i in range(24):
            seed = 100 * lang_index + i
            audio = speech_like(1.5 + (i % 4) * 0.5, seed)[::3]  # 48 kHz synthesis -> 16 kHz
            name = f"{language}_{i}.flac"
            sf.write(root / name, audio, 16000)
            rows.append([name, language, f"{language}{i % 3}", "train" if i < 20 else "dev"])
    write_tsv(root / "m.tsv", ["path", "language", "speaker", "split"], rows)
    out = tmp_path_factory.mktemp("build") / "b"
    run_build(BuildConfig("manifest", str(root / "m.tsv"), str(out), shard_size_mb=0.2))
    return out


def config(*overrides: str):  # type: ignore[no-untyped-def]
    base = [  # test sizes live here: the defaults are a real run's (PRESET_DEFAULTS)
        "optim.max_steps=6",
        "optim.warmup_steps=10",
        "run.checkpoint_every=100",
        "data.batch_seconds=16",
        "data.languages_per_batch=2",
        "data.buffer_per_language=8",
        "bestrq.codebook_size=64",
    ]
    return load_config(None, base + list(overrides))


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_logmel_matches_librosa() -> None:
    import librosa

    audio = speech_like(1.0, 3)[::3].astype(np.float32)
    ours = LogMel()(torch.from_numpy(audio)[None])[0].numpy()
    reference = librosa.feature.melspectrogram(
        y=audio,
        sr=16000,
        n_fft=400,
        hop_length=160,
        win_length=400,
        center=False,
        n_mels=80,
        power=2.0,
    )
    np.testing.assert_allclose(ours, np.log(reference.T + 1e-6), atol=1e-3)
    assert ours.shape == (98, 80)


def test_features_normalized_per_feature_over_real_frames_only() -> None:
    rng = np.random.default_rng(5)
    features = rng.normal(-8.3, 4.1, (2, 30, 4)).astype(np.float32)
    features[1, 20:] = 123.0  # padding: must not move the statistics
    frames = np.array([30, 20])
    ours = normalize_per_feature(torch.from_numpy(features), torch.from_numpy(frames)).numpy()
    for row, count in enumerate(frames):
        real = features[row, :count].astype(np.float64)
        std = real.std(axis=0, ddof=1) + STD_FLOOR  # NeMo: unbiased std plus CONSTANT
        expected = (real - real.mean(axis=0)) / std
        np.testing.assert_allclose(ours[row, :count], expected, atol=1e-5)
        np.testing.assert_allclose(ours[row, :count].mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(ours[row, :count].std(axis=0, ddof=1), 1.0, atol=1e-4)
    assert (ours[1, 20:] == 0.0).all()
    one = normalize_per_feature(torch.ones(1, 5, 2), torch.tensor([1]))  # no spread: finite
    assert torch.isfinite(one).all() and (one == 0.0).all()


def test_an_utterance_embeds_the_same_alone_or_padded_in_a_batch() -> None:
    """The path training and the probe take (audio -> log-mel -> per-feature
    normalization -> encoder): 1 s of batch padding changes no real frame's output."""
    torch.manual_seed(0)
    encoder = build_encoder("tiny", dropout=0.0).eval()
    logmel = LogMel()
    short = torch.from_numpy(speech_like(1.0, 7)[::3].astype(np.float32))
    long = torch.from_numpy(speech_like(2.0, 8)[::3].astype(np.float32))

    def encode(audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = logmel(audio)
        frames = logmel.frames(lengths).clamp(max=raw.shape[1])
        hidden, mask = encoder(normalize_per_feature(raw, frames), frames)
        return hidden, mask

    with torch.no_grad():
        alone, alone_mask = encode(short[None], torch.tensor([len(short)]))
        batch = torch.zeros(2, len(long))
        batch[0, : len(short)] = short
        batch[1] = long
        padded, padded_mask = encode(batch, torch.tensor([len(short), len(long)]))
    real = int(alone_mask.sum())
    assert alone.shape[1] == real and int(padded_mask[0].sum()) == real
    assert padded.shape[1] > real + 20  # the batch really adds padding after it
    torch.testing.assert_close(padded[0, :real], alone[0], atol=1e-5, rtol=1e-5)


def test_encoder_shapes_masks_and_presets() -> None:
    encoder = build_encoder("tiny")
    features = torch.randn(3, 301, 80)
    hidden, mask = encoder(features, torch.tensor([301, 200, 50]))
    assert hidden.shape == (3, 74, 64)
    assert mask.sum(dim=1).tolist() == [74, 49, 11]
    with torch.device("meta"):
        assert 90e6 < count_parameters(build_encoder("base")) < 110e6
        assert 550e6 < count_parameters(build_encoder("large")) < 650e6


def test_span_mask_spans_and_minimum() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = span_mask(torch.tensor([500, 30]), 500, 0.01, 40, generator)
    assert mask[1, 30:].sum() == 0 and mask[1].any()  # padding never masked, one span at least
    runs = np.diff(np.concatenate([[0], mask[0].int().numpy(), [0]]))
    starts, ends = np.flatnonzero(runs == 1), np.flatnonzero(runs == -1)
    assert len(starts) > 0
    for start, end in zip(starts, ends, strict=True):  # a span is cut only by the valid end
        assert end - start >= 40 or end == 500
    # the masked share is what p and the span imply: a frame is masked when any of the
    # span frames up to it starts a span, 1 - (1 - p)^span (0.0956 for p 0.01, span 10)
    many = span_mask(torch.full((400,), 1000), 1000, 0.01, 10, generator)
    expected = 1.0 - (1.0 - 0.01) ** 10
    assert abs(float(many.float().mean()) - expected) < 0.006
    lengths = torch.randint(50, 1000, (400,), generator=generator)
    ragged = span_mask(lengths, 1000, 0.01, 10, generator)
    assert not ragged[torch.arange(1000)[None, :] >= lengths[:, None]].any()


def brute_force_masr(q: np.ndarray, p: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """The MASR equations, written out: hardest positive and negative chosen by d(p_i, p_k),
    the hinge scored with d(q_i, q_k), summed over anchors."""

    def distances(points: np.ndarray) -> np.ndarray:
        unit = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-8)
        result: np.ndarray = 1.0 - unit @ unit.T
        return result

    d_p, d_q = distances(p), distances(q)
    total = 0.0
    for a in range(len(q)):
        positives = [k for k in range(len(q)) if k != a and labels[k] == labels[a]]
        negatives = [k for k in range(len(q)) if labels[k] != labels[a]]
        if positives and negatives:
            k_pos = max(positives, key=lambda k: d_p[a, k])
            k_neg = min(negatives, key=lambda k: d_p[a, k])
            total += max(0.0, d_q[a, k_pos] - d_q[a, k_neg] + margin)
    return total


def test_masr_loss_mines_on_p_and_scores_on_q() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.standard_normal((10, 6))
        e = rng.standard_normal((10, 4))
        labels = rng.integers(0, 3, 10)
        p = np.concatenate([q, 2.0 * e], axis=1)
        ours = masr_triplet(torch.from_numpy(q), torch.from_numpy(p), torch.from_numpy(labels), 0.3)
        assert float(ours) == pytest.approx(brute_force_masr(q, p, labels, 0.3), abs=1e-5)
    # the fixed metadata only steers the mining: the loss's gradient is q's, and a huge
    # alpha * e (which would separate p on its own) does not make the loss vanish
    learned = torch.randn(8, 5, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    separated = torch.cat([learned, 100.0 * nn.functional.one_hot(ids).float()], dim=1)
    loss = masr_triplet(learned, separated, ids, 0.2)
    assert float(loss.detach()) > 0.0
    on_p = masr_triplet(separated, separated, ids, 0.2)  # the old bug: scored on p
    assert float(on_p.detach()) == 0.0
    loss.backward()  # type: ignore[no-untyped-call]
    assert learned.grad is not None and float(learned.grad.abs().sum()) > 0.0
    for tensor in (torch.ones(4, 5, requires_grad=True), torch.zeros(4, 5, requires_grad=True)):
        loss = masr_triplet(tensor, tensor, torch.tensor([0, 0, 1, 1]), 0.2)
        loss.backward()  # type: ignore[no-untyped-call]
        assert tensor.grad is not None
        assert torch.isfinite(loss) and torch.isfinite(tensor.grad).all()
    lone = torch.randn(3, 4)
    assert float(masr_triplet(lone, lone, torch.tensor([0, 0, 0]), 0.2)) == 0.0
    points = torch.randn(6, 3)
    pairs = torch.tensor([0, 0, 1, 1, 2, 2])
    summed = masr_triplet(points, points, pairs, 0.5, "sum")
    assert float(masr_triplet(points, points, pairs, 0.5, "mean")) == pytest.approx(
        float(summed) / 6
    )
    assert torch.allclose(cosine_distance_matrix(torch.eye(3)).diagonal(), torch.zeros(3))


def test_quantizer_is_frozen_and_training_reduces_the_loss(
    two_language_build: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    trainer = Trainer(
        [str(two_language_build)],
        None,
        str(run),
        config("optim.max_steps=50", "optim.warmup_steps=5"),
    )
    before = [t.clone() for t in trainer.objective.quantizer.buffers()]
    assert not list(trainer.objective.quantizer.parameters())
    last = trainer.train()
    assert last["step"] == 50
    for old, new in zip(before, trainer.objective.quantizer.buffers(), strict=True):
        assert torch.equal(old, new)
    ssl = [m["loss_ssl"] for m in metrics(run)]
    assert np.mean(ssl[-10:]) < np.mean(ssl[:5]) - 0.3
    row = metrics(run)[-1]
    for name in (
        "loss",
        "loss_language",
        "loss_geo",
        "lr",
        "audio_s_per_s",
        "data_wait_fraction",
        "memory_mb",
    ):
        assert name in row and np.isfinite(row[name])
    # the fixture has no locations: every geo label is its language's, and the metrics say so
    assert {m["geo_from_language_fraction"] for m in metrics(run)} == {1.0}


def test_resumed_run_continues_exactly(two_language_build: Path, tmp_path: Path) -> None:
    whole, paused = tmp_path / "whole", tmp_path / "paused"
    Trainer([str(two_language_build)], None, str(whole), config()).train()
    Trainer([str(two_language_build)], None, str(paused), config("run.stop_at_step=3")).train()
    assert [m["step"] for m in metrics(paused)] == [1, 2, 3]
    Trainer(
        [str(two_language_build)], None, str(paused), config()
    ).train()  # a new process would do the same
    assert metrics(paused) == [
        {
            **m,
            "audio_s_per_s": p["audio_s_per_s"],
            "data_wait_fraction": p["data_wait_fraction"],
            "memory_mb": p["memory_mb"],
            "model_tflops_per_s": p["model_tflops_per_s"],  # timings: the rest is exact
            "rss_mb": p["rss_mb"],
        }
        for m, p in zip(metrics(whole), metrics(paused), strict=True)
    ]


def test_resume_in_a_new_process_via_the_cli(two_language_build: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = [
        "optim.max_steps=4",
        "run.checkpoint_every=100",
        "data.batch_seconds=16",
        "data.buffer_per_language=8",
        "bestrq.codebook_size=64",
    ]
    build = str(two_language_build)
    first = run_cli("train", build, "--out", str(run), *settings, "run.stop_at_step=2")
    assert first.returncode == 0, first.stderr
    second = run_cli("train", build, "--out", str(run), *settings)
    assert second.returncode == 0, second.stderr
    straight = tmp_path / "straight"
    third = run_cli("train", build, "--out", str(straight), *settings)
    assert third.returncode == 0, third.stderr
    assert [m["loss"] for m in metrics(run)] == [m["loss"] for m in metrics(straight)]
    checkpoint = json.loads((run / "checkpoints" / "latest.json").read_text())
    state = torch.load(run / "checkpoints" / checkpoint["path"] / "model.pt", weights_only=True)
    assert state["step"] == 4


def test_two_process_gloo_ddp(two_language_build: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "voxshard",
        "train",
        str(two_language_build),
        "--out",
        str(run),
        "optim.max_steps=3",
        "run.checkpoint_every=3",
        "data.batch_seconds=16",
        "data.buffer_per_language=4",
        "bestrq.codebook_size=64",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m["step"] for m in metrics(run)] == [1, 2, 3]
    folder = run / "checkpoints" / "step_00000003"
    states = [torch.load(folder / f"rank{r}.pt", weights_only=True)["data"] for r in (0, 1)]
    refs = [{tuple(ref) for refs in s["buffers"].values() for ref in refs} for s in states]
    assert refs[0] and refs[1] and not refs[0] & refs[1]  # ranks read different samples


DDP_PARAMETERS_SCRIPT = """
import sys, torch
from voxshard.training.config import load_config
from voxshard.training.loop import Trainer
build, out = sys.argv[1], sys.argv[2]
overrides = ["optim.max_steps=3", "run.checkpoint_every=100", "data.batch_seconds=16",
             "data.buffer_per_language=4", "bestrq.codebook_size=64", "run.threads=1"]
trainer = Trainer([build], None, out, load_config(None, overrides))
trainer.train()
rank = torch.distributed.get_rank()
torch.save(trainer.model.state_dict(), f"{out}/parameters_rank{rank}.pt")
"""


def test_ddp_keeps_every_parameter_equal_across_ranks_heads_included(
    two_language_build: Path, tmp_path: Path
) -> None:
    """Each rank sees other utterances, so the MASR heads' gradients differ per rank: only
    a DDP that reduces them (heads inside its forward) keeps the ranks' models equal."""
    script = tmp_path / "ddp_parameters.py"
    script.write_text(DDP_PARAMETERS_SCRIPT)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(script), str(two_language_build), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / f"parameters_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert any(name.startswith("heads.language.") for name in ranks[0])
    assert any(name.startswith("heads.geo.") for name in ranks[0])
    for name, tensor in ranks[0].items():
        torch.testing.assert_close(ranks[1][name], tensor, rtol=0, atol=0, msg=name)
    # the heads had something to learn on every step (not an equality of untouched weights)
    steps = metrics(out)
    assert any(m["loss_language"] > 0.0 for m in steps) and any(m["loss_geo"] > 0.0 for m in steps)


def test_corrupt_member_is_skipped_and_counted(two_language_build: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(two_language_build, copy)
    listing = [json.loads(line) for line in (copy / "shards.jsonl").read_text().splitlines()]
    for entry in listing:  # the first sample of every train shard gets undecodable audio
        if entry["split"] != "train":
            continue
        shard = copy / entry["path"]
        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
        with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tar:
            for index, (member, payload) in enumerate(members):
                if index == 0:
                    payload = b"fLaC" + bytes(range(200))
                    member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
    train = [copy / entry["path"] for entry in listing if entry["split"] == "train"]
    counter = CorruptCounter()
    decoded = 0
    for shard in train:  # every sample once: each corrupted one fails to decode
        for index, sample in iterate_shard(str(shard), counter):
            try:
                decode_sample(sample, (str(shard), index))
                decoded += 1
            except CORRUPT_SAMPLE_ERRORS as error:
                counter(error)
    assert counter.count == len(train) and decoded > 0
    shard_set = discover([str(copy)], ("train",))
    sampler = BatchSampler(shard_set, config().data, seed=0)
    batches = [sampler.next_batch() for _ in range(6)]
    # every shard a stream has opened had its corrupt first sample read: finished epochs,
    # shards passed in this epoch, and the current one once its sample 0 is consumed
    per_language: dict[str, int] = {}
    for entry in listing:
        if entry["split"] == "train":
            per_language[entry["lang"]] = per_language.get(entry["lang"], 0) + 1
    streams = batches[-1].state["streams"]
    opened = sum(
        state["epoch"] * per_language[lang] + state["position"] + (state["sample"] > 0)
        for lang, state in streams.items()
    )
    assert opened >= 4 and sampler.corrupt.count == opened  # skipped, counted, run goes on
    assert batches[-1].state["corrupt"] == sampler.corrupt.count


def test_broken_shards_are_skipped_and_counted(two_language_build: Path, tmp_path: Path) -> None:
    """A listed shard that is missing, a folder, empty, or has an absurd member size: each is
    counted once per pass and the stream goes on with the readable shards."""
    good = [str(p) for p in sorted((two_language_build / "shards").rglob("*-train-*.tar"))][:1]
    (tmp_path / "folder.tar").mkdir()
    (tmp_path / "empty.tar").write_bytes(b"")
    info = tarfile.TarInfo("k.flac")
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[124:136] = b"\x80" + (1 << 62).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    (tmp_path / "huge.tar").write_bytes(bytes(header) + bytes(1024))
    broken = [
        str(tmp_path / name) for name in ("missing.tar", "folder.tar", "empty.tar", "huge.tar")
    ]
    counter = CorruptCounter()
    for path in broken:
        assert list(iterate_shard(path, counter)) == []
    assert counter.count == 4  # once each
    language = Path(good[0]).parent.name
    stream = LanguageStream(language, good + broken, 0, 1, 0, CorruptCounter())
    assert all(stream.next().language == language for _ in range(8))  # goes on past them


def test_config_errors_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["optim.lr=fast", "model.preset=huge", "data.nope=1", "nonsense"])
    problems = " | ".join(info.value.problems)
    assert "optim.lr" in problems and "data.nope" in problems and "nonsense" in problems
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("optim:\n  max_steps: 7\nmodel:\n  preset: base\n")
    loaded = load_config(str(yaml_path), ["optim.max_steps=9"])
    assert (loaded.optim.max_steps, loaded.model.preset) == (9, "base")
    # the preset's schedule fills what the file and overrides leave unset
    assert (loaded.optim.warmup_steps, loaded.optim.lr, loaded.run.checkpoint_every) == (
        25000,
        2e-3,
        5000,
    )
    large = load_config(None, ["model.preset=large", "optim.warmup_steps=500"])
    assert (large.optim.warmup_steps, large.optim.max_steps, large.optim.lr) == (500, 10**6, 1e-3)
    tiny = load_config(None, [])
    assert (tiny.optim.warmup_steps, tiny.optim.max_steps) == (1000, 20000)
    with pytest.raises(ConfigError, match=r"model\.preset"):
        load_config(None, ["model.preset=huge"])


def test_probe_cli(two_language_build: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer([str(two_language_build)], None, str(run), config("optim.max_steps=2")).train()
    result = subprocess.run(
        [sys.executable, "-m", "voxshard", "probe", str(run), str(two_language_build)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "probe" / "report.json").read_text())
    assert report["languages"] == ["eng", "pol"] and report["eval_utterances"] == 8
    assert report["train_utterances"] == 40 and report["evaluated_on"] == "dev/test"
    confusion = np.array(report["confusion"])
    assert confusion.sum(axis=1).tolist() == [4, 4]  # the fixture's dev utterances
    # every figure is the confusion matrix's own: accuracy, recall, precision, macro-F1
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 8)
    f1s = []
    for index, language in enumerate(report["languages"]):
        row = report["per_language"][language]
        recall = confusion[index, index] / 4
        predicted = confusion[:, index].sum()
        precision = confusion[index, index] / predicted if predicted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert (row["recall"], row["support"]) == (pytest.approx(recall), 4)
        assert row["precision"] == pytest.approx(precision) and row["f1"] == pytest.approx(f1)
        f1s.append(f1)
    assert report["macro_f1"] == pytest.approx(float(np.mean(f1s)))
    assert (run / "probe" / "confusion.png").stat().st_size > 1000
    assert report["layer"] == 2 == report["layers_in_model"] and len(report["layers"]) == 1
    # every block, each with its own probe; the last one is the report's
    every = run_cli(
        "probe", str(run), str(two_language_build), "--layer", "all", "--batch-seconds", "5"
    )
    assert every.returncode == 0, every.stderr
    layers = json.loads((run / "probe" / "report.json").read_text())["layers"]
    assert [row["layer"] for row in layers] == [1, 2]
    assert layers[1]["accuracy"] == pytest.approx(report["accuracy"])
    assert "layer  1: accuracy" in every.stdout
    bad = run_cli("probe", str(run), str(two_language_build), "--layer", "7")
    assert bad.returncode == 2 and "block number 1..2" in bad.stderr


def test_batched_embeddings_equal_one_clip_at_a_time() -> None:
    from voxshard.training.model import build_encoder
    from voxshard.training.probe import embed

    torch.manual_seed(0)
    encoder = build_encoder("tiny", 80, 0.0).eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 24000, 16400, 4000)]
    batched = embed(encoder, clips, 80, batch_seconds=10.0)
    single = np.stack([embed(encoder, [clip], 80)[0] for clip in clips])
    assert batched.shape == (4, 2, 64)  # clips x blocks x d_model
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_probe_skips_a_corrupt_sample(two_language_build: Path, tmp_path: Path) -> None:
    from voxshard.training.probe import read_build

    copy = tmp_path / "copy"
    shutil.copytree(two_language_build, copy)
    listing = [json.loads(line) for line in (copy / "shards.jsonl").read_text().splitlines()]
    shard = copy / next(entry["path"] for entry in listing if entry["split"] == "dev")
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    broken = next(m.name for m, _ in members if m.name.endswith(".flac"))
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tar:
        for member, payload in members:
            if member.name == broken:
                payload = b"fLaC" + bytes(range(200))
                member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    whole = read_build(str(two_language_build), 100, 16000)
    rows = read_build(str(copy), 100, 16000)
    assert len(rows) == len(whole) - 1 == 47
    assert broken.split(".")[0] not in {key for key, *_ in rows}


def test_quantizer_labels_are_deterministic() -> None:
    a = RandomProjectionQuantizer(320, 16, 64, 2, seed=5)
    b = RandomProjectionQuantizer(320, 16, 64, 2, seed=5)
    x = torch.randn(2, 7, 320)
    labels = a(x)
    assert torch.equal(labels, b(x)) and labels.shape == (2, 7, 2)
    # BEST-RQ: the nearest L2-normalized codebook vector to the L2-normalized projection,
    # computed here by Euclidean distance, one codebook at a time
    projection, codebooks = a.get_buffer("projection"), a.get_buffer("codebooks")
    for book in range(2):
        projected = nn.functional.normalize(x @ projection[book], dim=-1)
        distance = torch.cdist(projected.reshape(-1, 16), codebooks[book])
        assert torch.equal(labels[..., book].reshape(-1), distance.argmin(dim=-1))
    assert len(torch.unique(labels)) > 4  # random frames spread over the codebook
    other = RandomProjectionQuantizer(320, 16, 64, 2, seed=6)
    assert not torch.equal(other(x), labels)


def test_resume_checks_settings_truncates_metrics_and_keeps_the_last_checkpoints(
    two_language_build: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    build = [str(two_language_build)]
    Trainer(
        build,
        None,
        str(run),
        config("run.stop_at_step=3", "run.checkpoint_every=1", "run.keep_checkpoints=2"),
    ).train()
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [
        "step_00000002",
        "step_00000003",
    ]
    with pytest.raises(ConfigError, match=r"other settings \(bestrq\.codebook_size\)"):
        Trainer(build, None, str(run), config("bestrq.codebook_size=32")).train()
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:  # a kill after step 5
        handle.write(json.dumps({"step": 4, "loss": 1.0}) + "\n")
        handle.write(json.dumps({"step": 5, "loss": 1.0}) + "\n")
    # max_steps may change on resume; the metrics past the checkpoint are dropped, not repeated
    Trainer(build, None, str(run), config("optim.max_steps=5", "run.checkpoint_every=1")).train()
    assert [m["step"] for m in metrics(run)] == [1, 2, 3, 4, 5]
    assert metrics(run)[3]["loss"] != 1.0
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a finite number"):
        load_config(None, ["optim.lr=inf"])


def test_two_stage_recipe_starts_masr_from_best_rq_weights(
    two_language_build: Path, tmp_path: Path
) -> None:
    """Stage one trains BEST-RQ alone; stage two starts from its weights with a fresh
    optimizer and schedule and the MASR heads on. Only the heads may be new."""
    build = [str(two_language_build)]
    stage_one = tmp_path / "bestrq"
    no_masr = ("masr.language=false", "masr.geo=false", "optim.max_steps=3")
    Trainer(build, None, str(stage_one), config(*no_masr, "run.checkpoint_every=3")).train()
    saved = torch.load(stage_one / "checkpoints" / "step_00000003" / "model.pt", weights_only=True)
    assert not any(key.startswith("heads.") for key in saved["model"])
    stage_two = Trainer(build, None, str(tmp_path / "masr"), config(), init_from=str(stage_one))
    state = stage_two.model.state_dict()
    for key, value in saved["model"].items():
        assert torch.equal(state[key], value), key
    assert {key.split(".")[1] for key in state if key.startswith("heads.")} == {"language", "geo"}
    assert stage_two.step == 0 and not stage_two.optimizer.state
    assert stage_two.train()["step"] == 6
    with pytest.raises(ConfigError, match=r"--init-from .* does not fit these settings"):
        Trainer(
            build,
            None,
            str(tmp_path / "other"),
            config("bestrq.codebook_size=32"),
            init_from=str(stage_one),
        )
    with pytest.raises(ConfigError, match=r"holds no checkpoint"):
        Trainer(build, None, str(tmp_path / "x"), config(), init_from=str(tmp_path / "nothing"))


def test_the_sample_rate_comes_from_the_build(two_language_build: Path, tmp_path: Path) -> None:
    """An 8 kHz build trains with 8 kHz features (25 ms = 200 samples), the checkpoint
    records the rate, and a 16 kHz build is refused wherever the rates would mix."""
    import soundfile as sf

    root = tmp_path / "corpus"
    root.mkdir()
    rows = []
    for lang_index, language in enumerate(("en", "pl")):
        for i in range(10):
            name = f"{language}_{i}.flac"
            sf.write(root / name, speech_like(2.0, 50 * lang_index + i)[::3], 16000)
            rows.append([name, language, "train" if i < 8 else "dev"])
    write_tsv(root / "m.tsv", ["path", "language", "split"], rows)
    narrow = tmp_path / "narrow"
    run_build(BuildConfig("manifest", str(root / "m.tsv"), str(narrow), sample_rate=8000))
    run = tmp_path / "run"
    trainer = Trainer([str(narrow)], None, str(run), config("optim.max_steps=2"))
    assert (
        trainer.sample_rate == 8000
        and trainer.objective.logmel.n_fft == 200
        and trainer.objective.logmel.hop == 80
    )
    batch = trainer.sampler.next_batch()
    assert batch.seconds == pytest.approx(float(batch.lengths.sum()) / 8000)
    assert all(batch.geo_from_language)  # the build placed them at their languages
    batch.lat_lon[:] = np.nan
    batch.geo_from_language[:] = [False] * len(batch.keys)
    batch.lat_lon[0] = (52.23, 21.01)  # one utterance with its own location
    vectors, labels, from_language = trainer.objective.metadata(batch)
    assert from_language == pytest.approx((len(batch.keys) - 1) / len(batch.keys))
    assert vectors["geo"].shape == (len(batch.keys), 3) and labels["language"].shape[0] == len(
        batch.keys
    )
    trainer.train()
    model = torch.load(run / "checkpoints" / "step_00000002" / "model.pt", weights_only=True)
    assert model["sample_rate_hz"] == 8000
    assert run_cli("probe", str(run), str(narrow)).returncode == 0
    refused = run_cli("probe", str(run), str(two_language_build))
    assert refused.returncode != 0
    assert "trained on 8000 Hz" in refused.stderr and "--sample-rate 8000" in refused.stderr
    with pytest.raises(ConfigError, match=r"different sample rates .*--sample-rate"):
        Trainer([str(narrow), str(two_language_build)], None, str(tmp_path / "mixed"), config())
    with pytest.raises(ConfigError, match="trained on 8000 Hz audio and these builds are 16000"):
        Trainer([str(two_language_build)], None, str(run), config("optim.max_steps=4")).train()
    with pytest.raises(ConfigError, match=r"--init-from .* trained on 8000 Hz"):
        Trainer([str(two_language_build)], None, str(tmp_path / "b"), config(), init_from=str(run))


def test_validation_pass_on_the_dev_split(two_language_build: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from voxshard.training.data import validation_batches

    index = pq.read_table(two_language_build / "utterances.parquet").to_pylist()
    dev = sorted(row["key"] for row in index if row["split"] == "dev")
    batches = validation_batches([str(two_language_build)], "dev", 8, 6.0, batch_size=3)
    assert sorted(key for batch in batches for key in batch.keys) == dev  # 4 per language
    assert [len(batch.keys) for batch in batches] == [3, 3, 2]
    assert validation_batches([str(two_language_build)], "test", 8, 6.0) == []

    plain, checked = tmp_path / "plain", tmp_path / "checked"
    Trainer([str(two_language_build)], None, str(plain), config("optim.max_steps=4")).train()
    trainer = Trainer(
        [str(two_language_build)],
        None,
        str(checked),
        config("optim.max_steps=4", "run.validate_every=2", "run.validation_utterances=8"),
    )
    trainer.train()
    rows = metrics(checked)
    # validating changes nothing in training: same losses as the run without it
    assert [m["loss"] for m in rows] == [m["loss"] for m in metrics(plain)]
    validated = [m for m in rows if "val_loss_ssl" in m]
    assert [m["step"] for m in validated] == [2, 4]
    for m in validated:
        assert m["val_utterances"] == 8 and 0.0 <= m["val_accuracy"] <= 1.0
        assert 1.0 <= m["val_perplexity"] <= 64.0 and m["val_loss_ssl"] > 0.0
    assert validated[0]["val_loss_ssl"] != validated[1]["val_loss_ssl"]  # the model moved
    again = trainer.validate()  # the same masks every time: a fixed model scores the same
    assert again == trainer.validate()
    assert again["val_loss_ssl"] == validated[1]["val_loss_ssl"]


def test_flop_count_matches_torch_flop_counter() -> None:
    """The analytic count (training/flops.py) against PyTorch's own FlopCounterMode on a real
    forward and backward of the SpeechModel, padded batch included."""
    from torch.utils.flop_counter import FlopCounterMode

    from voxshard.training.flops import mfu, model_flops, peak_flops
    from voxshard.training.model import SpeechModel

    for preset, batch, frames in [("tiny", 3, 403), ("tiny", 1, 1203)]:
        settings = load_config(None, [f"model.preset={preset}"])
        model = SpeechModel(settings, 16)
        lengths = torch.tensor([frames] + [frames // 2] * (batch - 1))
        metadata = {"language": torch.randn(batch, 16), "geo": torch.randn(batch, 3)}
        with FlopCounterMode(display=False) as counter:
            _hidden, _mask, logits, heads = model(torch.randn(batch, frames, 80), lengths, metadata)
            forward = counter.get_total_flops()
            loss = logits.square().mean() + sum(q.square().mean() for q, _p in heads.values())
            loss.backward()
        counted = counter.get_total_flops()
        ssl = settings.bestrq.codebook_size * settings.bestrq.num_codebooks
        estimate = model_flops(
            preset, 80, batch, frames, ssl, tuple((64, settings.masr.projection_dim) for _ in heads)
        )
        assert estimate.forward == forward  # every matmul and convolution, exactly
        # the counter charges a strided convolution's input gradient over the input's size
        assert estimate.total == pytest.approx(counted, rel=0.05)
    # GFLOP per audio-second of the base preset (attention makes longer clips dearer)
    four = model_flops("base", 80, 2, 398, 8192).total / 8.0 / 1e9  # 2 x 4 s: 398 frames
    ten = model_flops("base", 80, 1, 998, 8192).total / 10.0 / 1e9
    assert four == pytest.approx(22.43, abs=0.01) and ten == pytest.approx(23.07, abs=0.01)
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12 and peak_flops("cpu") is None
    assert mfu(989.4e12 * 0.4, 1.0, 989.4e12) == pytest.approx(0.4)


def test_bench_train_on_cpu_and_mfu_and_tensorboard_in_metrics(
    two_language_build: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "bench-train",
        str(two_language_build),
        "--mode",
        "both",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--peak-tflops",
        "1.5",
        "--json",
        str(tmp_path / "bench.json"),
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "bench.json").read_text())
    model = figures["model"]
    assert model["preset"] == "tiny" and model["steps_timed"] == 2 and model["precision"] == "fp32"
    assert model["audio_s_per_s"] == pytest.approx(16.0 / model["step_s_median"], rel=0.01)
    assert model["mfu"] == pytest.approx(model["model_tflops_per_s"] / 1.5, rel=0.01)
    assert figures["loader"]["audio_s_per_s"] > 0 and figures["loader"]["batches"] == 2
    assert figures["loader"]["workers"] == "one thread"
    assert 0.0 <= figures["data_wait_estimate"] <= 1.0
    assert "model: device cpu" in result.stdout
    bad = run_cli("bench-train", "--mode", "loader")
    assert bad.returncode == 2 and "needs build folders" in bad.stderr

    run = tmp_path / "run"
    Trainer(
        [str(two_language_build)],
        None,
        str(run),
        config("optim.max_steps=3", "run.peak_tflops=2", "run.tensorboard=true"),
    ).train()
    rows = metrics(run)
    assert all(r["mfu"] == pytest.approx(r["model_tflops_per_s"] / 2, abs=1e-4) for r in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = [event.value for event in events.Scalars("loss")]
    assert losses == pytest.approx([r["loss"] for r in rows], rel=1e-5)
    assert [event.step for event in events.Scalars("mfu")] == [1, 2, 3]


TIMINGS = ("audio_s_per_s", "data_wait_fraction", "memory_mb", "model_tflops_per_s", "rss_mb")


def test_worker_processes_feed_and_resume_exactly(two_language_build: Path, tmp_path: Path) -> None:
    """data.workers=2: two DataLoader processes, each its own shards, batches in turn, padded
    to the bucket length; a paused and resumed run equals an uninterrupted one."""
    from voxshard.training.data import WorkerBatches, discover

    settings = config("data.workers=2", "data.prefetch_batches=2")
    shard_set = discover([str(two_language_build)], ("train",))
    loader = WorkerBatches(shard_set, settings.data, 0, 0, 1)
    batches = [loader.next() for _ in range(4)]
    loader.close()
    assert [b.state["turn"] for b in batches] == [1, 0, 1, 0]
    assert set(batches[-1].state["positions"]) == {"0", "1"}
    for batch in batches:  # every batch padded to its bucket: 2, 4 or 6 s
        assert batch.audio.shape[1] in (32000, 64000, 96000)
    worker_keys = [{k for b in batches[w::2] for k in b.keys} for w in (0, 1)]
    assert not worker_keys[0] & worker_keys[1]  # the workers read different samples

    whole, paused = tmp_path / "whole", tmp_path / "paused"
    Trainer([str(two_language_build)], None, str(whole), settings).train()
    paused_settings = config("data.workers=2", "data.prefetch_batches=2", "run.stop_at_step=3")
    Trainer([str(two_language_build)], None, str(paused), paused_settings).train()
    Trainer([str(two_language_build)], None, str(paused), settings).train()
    strip = [{k: v for k, v in m.items() if k not in TIMINGS} for m in metrics(whole)]
    assert [{k: v for k, v in m.items() if k not in TIMINGS} for m in metrics(paused)] == strip
    with pytest.raises(ConfigError, match=r"same data\.workers"):
        WorkerBatches(shard_set, config("data.workers=3").data, 0, 0, 1, batches[-1].state)


def test_a_run_at_a_url_resumes_on_another_machine_and_probes_there(
    two_language_build: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run folder at a URL (memory:// here, gs:// alike): checkpoints and metrics are
    published there; a second machine (another local mirror) resumes from the URL and ends
    with the same metrics as an uninterrupted local run; the probe reads it and writes there."""
    import uuid

    from voxshard.schemas import storage
    from voxshard.training.probe import run_probe

    url = f"memory://voxshard-run-{uuid.uuid4().hex}/run"
    local = tmp_path / "local"
    Trainer([str(two_language_build)], None, str(local), config("optim.max_steps=4")).train()
    monkeypatch.setenv("VOXSHARD_RUN_CACHE", str(tmp_path / "machine-a"))
    settings = config("optim.max_steps=4", "run.checkpoint_every=2")
    Trainer(
        [str(two_language_build)],
        None,
        url,
        config("optim.max_steps=4", "run.checkpoint_every=2", "run.stop_at_step=2"),
    ).train()
    pointer = json.loads(storage.read_bytes(f"{url}/checkpoints/latest.json"))
    assert pointer == {"step": 2, "path": "step_00000002"}
    assert storage.isfile(f"{url}/checkpoints/step_00000002/model.pt")
    monkeypatch.setenv("VOXSHARD_RUN_CACHE", str(tmp_path / "machine-b"))
    with caplog.at_level("INFO", logger="voxshard"):
        Trainer([str(two_language_build)], None, url, settings).train()
    assert "resumed from" in caplog.text and "(step 2)" in caplog.text  # not from scratch
    remote = [json.loads(line) for line in storage.read_bytes(f"{url}/metrics.jsonl").splitlines()]
    strip = [{k: v for k, v in m.items() if k not in TIMINGS} for m in metrics(local)]
    assert [{k: v for k, v in m.items() if k not in TIMINGS} for m in remote] == strip
    report = run_probe(url, str(two_language_build), per_language=100)
    assert json.loads(storage.read_bytes(f"{url}/probe/report.json")) == report
    assert storage.getsize(f"{url}/probe/confusion.png") > 1000
    # the run deleted at the URL and started again: machine-b's mirror still holds the old
    # one, but the URL is the truth, so this is a new run from step 0
    storage.remove_tree(url)
    caplog.clear()
    with caplog.at_level("INFO", logger="voxshard"):
        Trainer([str(two_language_build)], None, url, config("optim.max_steps=1")).train()
    assert "resumed from" not in caplog.text
    rows = storage.read_bytes(f"{url}/metrics.jsonl").splitlines()
    assert [json.loads(row)["step"] for row in rows] == [1]
    storage.remove_tree(url.rsplit("/", 1)[0])


def test_logging_every_n_steps_reads_the_device_only_then(
    two_language_build: Path, tmp_path: Path
) -> None:
    """With run.log_every=3 the rows are steps 3 and 6, with the same losses as a run that
    logs every step, and their rates cover the three steps since the previous row."""
    every, sparse = tmp_path / "every", tmp_path / "sparse"
    Trainer([str(two_language_build)], None, str(every), config()).train()
    Trainer([str(two_language_build)], None, str(sparse), config("run.log_every=3")).train()
    dense, rows = metrics(every), metrics(sparse)
    assert [r["step"] for r in rows] == [3, 6]
    for row in rows:
        same = dense[row["step"] - 1]
        assert (row["loss"], row["grad_norm"], row["lr"]) == (
            same["loss"],
            same["grad_norm"],
            same["lr"],
        )
        covered = dense[row["step"] - 3 : row["step"]]
        assert row["audio_seconds"] == pytest.approx(sum(r["audio_seconds"] for r in covered))


def test_a_setting_added_later_does_not_block_a_resume_at_its_default() -> None:
    from voxshard.training.config import TrainConfig, changed_settings, check_resume

    current = TrainConfig().to_dict()
    older = json.loads(json.dumps(current))
    del older["data"]["workers"], older["data"]["pad_to_bucket"]  # a run from before them
    check_resume(older, current)  # unchanged: the new settings are at their defaults
    current["data"]["workers"] = 2
    assert changed_settings(older, current) == ["data.workers"]
    with pytest.raises(ConfigError, match=r"other settings \(data\.workers\)"):
        check_resume(older, current)
