"""``voxshard bench-train``: how fast the model steps and how fast the loader feeds it.

- ``model``: synthetic batches of one padded shape (the bucket length), the real step
  (log-mel, masks, quantizer, SpeechModel forward and backward, MASR losses, AdamW) timed
  after warm-up steps. Reports audio-s/s, step time, encoder tokens/s, model TFLOP/s and MFU
  (training/flops.py; MFU needs a known GPU or --peak-tflops), peak memory.
- ``loader``: the training loader alone over real builds (shard streaming, FLAC decode,
  bucketing, collation), one thread as in training. Reports audio-s/s and batch time.
- ``both``: both, and the share of each step the model would wait for data with this
  loader (1 - loader rate / model rate, floored at 0).

The same command runs on CPU (tests, CI: the tiny preset) and on a GPU unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from voxshard.schemas import ConfigError
from voxshard.training.config import TrainConfig
from voxshard.training.data import Batch, BatchSampler, WorkerBatches, discover
from voxshard.training.flops import model_flops, peak_flops
from voxshard.training.model import SpeechModel
from voxshard.training.objective import Objective

LANGUAGES = ["eng", "fra", "deu", "pol"]  # synthetic batches: lang2vec-known, located
LANGUAGE_DIM = 16


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device here; use --device cpu")
    return torch.device(name)


def synthetic_batch(utterances: int, seconds: float, sample_rate: int, seed: int) -> Batch:
    """``utterances`` clips of exactly ``seconds`` (no padding: the bucket shape), speech-
    level noise, languages in turn, locations unknown (the languages' are used)."""
    generator = np.random.default_rng(seed)
    samples = round(seconds * sample_rate)
    audio = (0.1 * generator.standard_normal((utterances, samples))).astype(np.float32)
    return Batch(
        audio=torch.from_numpy(audio),
        lengths=torch.full((utterances,), samples, dtype=torch.long),
        languages=[LANGUAGES[i % len(LANGUAGES)] for i in range(utterances)],
        keys=[f"synthetic_{i}" for i in range(utterances)],
        lat_lon=np.full((utterances, 2), np.nan),
        geo_from_language=[False] * utterances,
        seconds=utterances * samples / sample_rate,
        state={},
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(
    config: TrainConfig,
    device: torch.device,
    batch_seconds: float,
    utterance_seconds: float,
    steps: int,
    warmup: int,
    peak_tflops: float = 0.0,
    sample_rate: int = 16000,
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps on synthetic batches after ``warmup`` untimed ones."""
    if utterance_seconds <= 0 or batch_seconds < utterance_seconds or steps < 1 or warmup < 0:
        raise ConfigError(
            "bench-train: need 0 < --utterance-seconds <= --batch-seconds, --steps >= 1 "
            "and --warmup >= 0"
        )
    torch.manual_seed(config.run.seed)
    utterances = max(2, int(batch_seconds // utterance_seconds))
    vectors = torch.randn(len(LANGUAGES), LANGUAGE_DIM)
    model = SpeechModel(config, LANGUAGE_DIM).to(device)
    forward: torch.nn.Module = torch.compile(model) if config.run.compile else model  # type: ignore[assignment]
    objective = Objective(config, device, sample_rate, LANGUAGES, vectors, model, forward)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optim.lr, fused=device.type == "cuda"
    )
    generator = torch.Generator(device).manual_seed(config.run.seed)
    batch = synthetic_batch(utterances, utterance_seconds, sample_rate, config.run.seed)
    frames = int(objective.logmel.frames(torch.tensor(batch.audio.shape[1])))
    heads = tuple((model.encoder.d_model, config.masr.projection_dim) for _ in model.heads)
    flops = model_flops(
        config.model.preset,
        config.model.n_mels,
        utterances,
        frames,
        config.bestrq.codebook_size * config.bestrq.num_codebooks,
        heads,
    ).total
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    timings = []
    for index in range(warmup + steps):
        _sync(device)
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        losses = objective.losses(batch, generator)
        losses["total"].backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_norm)
        optimizer.step()
        _sync(device)
        if index >= warmup:
            timings.append(time.perf_counter() - started)
        if not torch.isfinite(losses["total"].detach()).item():
            raise RuntimeError(f"bench-train: the loss is not finite at step {index}")
    step_s = float(np.median(timings))
    peak = peak_tflops * 1e12 if peak_tflops > 0 else None
    if peak is None and device.type == "cuda":
        peak = peak_flops(torch.cuda.get_device_name(device))
    tokens = utterances * (((frames - 1) // 2 - 1) // 2)
    return {
        "mode": "model",
        "device": _device_name(device),
        "preset": config.model.preset,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "batch_utterances": utterances,
        "utterance_seconds": utterance_seconds,
        "precision": "bf16 autocast" if objective.autocast else "fp32",
        "compiled": config.run.compile,
        "steps_timed": steps,
        "step_s_median": round(step_s, 5),
        "step_s_min": round(float(np.min(timings)), 5),
        "audio_s_per_s": round(batch.seconds / step_s, 2),
        "encoder_tokens_per_s": round(tokens / step_s, 1),
        "model_gflop_per_audio_s": round(flops / batch.seconds / 1e9, 3),
        "model_tflops_per_s": round(flops / step_s / 1e12, 4),
        "mfu": None if peak is None else round(flops / step_s / peak, 4),
        "peak_tflops": None if peak is None else round(peak / 1e12, 1),
        "peak_memory_mb": _peak_memory_mb(device),
    }


def bench_loader(builds: list[str], config: TrainConfig, batches: int) -> dict[str, Any]:
    """The training loader alone: ``batches`` batches from the builds' train split, timed
    after one untimed batch (shard opening, worker start-up): one thread as in training, or
    ``data.workers`` processes."""
    if not builds:
        raise ConfigError("bench-train --mode loader needs build folders")
    shard_set = discover(builds, config.data.splits)
    loader: Any
    if config.data.workers:
        loader = WorkerBatches(shard_set, config.data, config.run.seed, 0, 1)
        fetch = loader.next
    else:
        loader = BatchSampler(shard_set, config.data, config.run.seed)
        fetch = loader.next_batch
    fetch()
    seconds = 0.0
    timings = []
    for _ in range(batches):
        started = time.perf_counter()
        batch = fetch()
        timings.append(time.perf_counter() - started)
        seconds += batch.seconds
    if isinstance(loader, WorkerBatches):
        loader.close()
    total = sum(timings)
    return {
        "mode": "loader",
        "batches": batches,
        "audio_seconds": round(seconds, 2),
        "batch_s_median": round(float(np.median(timings)), 5),
        "audio_s_per_s": round(seconds / total, 2) if total > 0 else None,
        "workers": config.data.workers or "one thread",
    }


def data_wait_estimate(model_rate: float, loader_rate: float) -> float:
    """Share of a step spent waiting when one loader thread supplies ``loader_rate`` audio-s/s
    to a model consuming ``model_rate`` (prefetching hides the rest)."""
    if model_rate <= 0:
        return 0.0
    return max(0.0, 1.0 - loader_rate / model_rate)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
