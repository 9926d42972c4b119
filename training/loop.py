"""The training loop: BEST-RQ + MASR on streamed shards, single process or DDP (torchrun).

L = L_SSL + sum_j lambda_j L_META_j. Checkpoints (RUN/checkpoints/step_NNNNNNNN/) hold the
model, optimizer, scheduler, step, every RNG state and each rank's data position; a rerun of
the same command resumes from ``latest`` and continues exactly (on CPU: the same next batch
and loss). Metrics go to RUN/metrics.jsonl.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from voxshard.encoders import LanguageEncoder, language_coordinates, unit_vectors
from voxshard.schemas import ConfigError
from voxshard.training.bestrq import (
    STACK,
    RandomProjectionQuantizer,
    label_mask,
    span_mask,
    stack_and_normalize,
)
from voxshard.training.config import PRESETS, TrainConfig, check_resume
from voxshard.training.data import (
    SAMPLE_RATE,
    Batch,
    BatchSampler,
    Prefetcher,
    discover,
    validation_batches,
)
from voxshard.training.features import HOP_S, LogMel, normalize_per_feature
from voxshard.training.masr import MetadataHead, masr_triplet, mean_pool
from voxshard.training.model import build_encoder, latest_checkpoint

LOG = logging.getLogger("voxshard")


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> tuple[Distributed, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Distributed(rank, world, local), device


class SpeechModel(nn.Module):
    """Encoder + BEST-RQ prediction heads + MASR metadata heads."""

    def __init__(self, config: TrainConfig, language_dim: int) -> None:
        super().__init__()
        model, bestrq, masr = config.model, config.bestrq, config.masr
        self.encoder = build_encoder(model.preset, model.n_mels, model.dropout)
        d_model = PRESETS[model.preset]["d_model"]
        self.ssl_head = nn.Linear(d_model, bestrq.codebook_size * bestrq.num_codebooks)
        self.heads = nn.ModuleDict()
        if masr.language:
            self.heads["language"] = MetadataHead(d_model, masr.projection_dim, masr.language_alpha)
        if masr.geo:
            self.heads["geo"] = MetadataHead(d_model, masr.projection_dim, masr.geo_alpha)
        self.language_dim = language_dim

    def forward(
        self, features: torch.Tensor, frames: torch.Tensor, metadata: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, tuple[torch.Tensor, ...]]]:
        """Encoder, BEST-RQ logits and every metadata head in one forward, so DDP (which
        wraps this module) sees and reduces every trainable parameter. ``metadata`` holds
        each head's fixed vectors e (B, dim); the heads run in fp32 on the mean-pooled
        frames. Returns (hidden, frame mask, logits, {stream: (q, p)})."""
        hidden, mask = self.encoder(features, frames)
        logits = self.ssl_head(hidden)
        outputs: dict[str, tuple[torch.Tensor, ...]] = {}
        if self.heads:
            with torch.autocast(hidden.device.type, enabled=False):
                pooled = mean_pool(hidden.float(), mask)
                for name, head in self.heads.items():
                    if name in metadata:  # validation passes none
                        outputs[name] = head(pooled, metadata[name])
        return hidden, mask, logits, outputs


@dataclass
class MaskedInputs:
    features: torch.Tensor  # (B, T, n_mels) normalized log-mel
    frames: torch.Tensor  # (B,) real frames
    valid: torch.Tensor  # (B, T) real frame
    masked: torch.Tensor  # (B, T) masked frame
    inputs: torch.Tensor  # features with masked frames replaced by N(0, 0.1) noise


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10 % at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    python = random.getstate()
    numpy_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    return {
        "python": [python[0], list(python[1]), python[2]],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "mask": generator.get_state(),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:])
    )
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["mask"])


def geo_labels(lat_lon: np.ndarray) -> torch.Tensor:
    """Positives for the geo stream: the same place to 0.1 degree (~11 km)."""
    keys = [f"{a:.1f},{b:.1f}" for a, b in np.nan_to_num(lat_lon, nan=999.0)]
    index = {key: i for i, key in enumerate(sorted(set(keys)))}
    return torch.tensor([index[key] for key in keys])


class Trainer:
    def __init__(
        self,
        builds: list[str],
        sim: str | None,
        out: str,
        config: TrainConfig,
        init_from: str | None = None,
    ) -> None:
        self.config = config
        self.out = out
        self.dist, self.device = setup_distributed()
        if self.device.type == "cpu":
            torch.set_num_threads(config.run.threads)
        seed = config.run.seed
        random.seed(seed + self.dist.rank)
        np.random.seed(seed + self.dist.rank)
        torch.manual_seed(seed + self.dist.rank)
        self.mask_generator = torch.Generator().manual_seed(seed + 1000 + self.dist.rank)
        shard_set = discover(builds, config.data.splits)
        self.languages = sorted(shard_set.shards)
        if sim is not None:
            try:
                with open(os.path.join(sim, "languages.json"), encoding="utf-8") as handle:
                    known = json.load(handle)
            except (OSError, ValueError) as error:
                raise ConfigError(
                    f"--sim {sim!r} is not a voxshard similarity folder ({error}); "
                    "make one with: voxshard similarity BUILD... --out FOLDER"
                ) from error
            missing = sorted(set(self.languages) - set(known))
            if missing:
                raise ConfigError(
                    f"--sim {sim} lacks languages {missing}: rerun voxshard similarity"
                )
        self.language_index = {lang: i for i, lang in enumerate(self.languages)}
        encoder = LanguageEncoder(config.masr.feature_set)
        self.language_vectors = torch.from_numpy(encoder.vectors(self.languages)).float()
        self.sampler = BatchSampler(shard_set, config.data, seed, self.dist.rank, self.dist.world)
        self.sample_rate = shard_set.sample_rate  # the builds' rate: features follow it
        self.logmel = LogMel(self.sample_rate, config.model.n_mels).to(self.device)
        self.quantizer = RandomProjectionQuantizer(
            STACK * config.model.n_mels,
            config.bestrq.codebook_dim,
            config.bestrq.codebook_size,
            config.bestrq.num_codebooks,
            seed=seed,
        ).to(self.device)
        self.model = SpeechModel(config, encoder.dim).to(self.device)
        if init_from is not None and latest_checkpoint(out) is None:  # a resume takes the run's own
            self.init_weights(init_from)
        self.ddp: nn.Module = self.model
        if self.dist.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False,
            )
        if config.run.compile:
            self.ddp = torch.compile(self.ddp)  # type: ignore[assignment]
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=optim.lr,
            betas=optim.betas,
            weight_decay=optim.weight_decay,
            fused=self.device.type == "cuda",
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, optim.warmup_steps, optim.max_steps)
        )
        self.step = 0
        self.data_state: dict[str, Any] | None = None
        self.autocast = self.device.type == "cuda" and config.run.bf16
        self.validation: list[Batch] = []
        if config.run.validate_every and self.dist.main:
            self.validation = validation_batches(
                builds,
                config.run.validation_split,
                config.run.validation_utterances,
                config.data.max_duration_s,
            )
            if not self.validation:
                LOG.info("no %s split in the builds: no validation", config.run.validation_split)
            elif config.run.validation_split in config.data.splits:
                LOG.warning(
                    "validating on %s, which data.splits also trains on: not held out",
                    config.run.validation_split,
                )

    # ------------------------------------------------------------------ one step
    def masked_inputs(self, batch: Batch, generator: torch.Generator) -> MaskedInputs:
        """Normalized log-mel, BEST-RQ span masks and the masked encoder input."""
        config = self.config
        audio = batch.audio.to(self.device, non_blocking=True)
        lengths = batch.lengths.to(self.device)
        raw = self.logmel(audio)
        frames = self.logmel.frames(lengths).clamp(max=raw.shape[1])
        features = normalize_per_feature(raw, frames)
        time_steps = features.shape[1]
        valid = torch.arange(time_steps, device=self.device)[None, :] < frames[:, None]
        span = max(1, round(config.bestrq.mask_span_ms / 1000.0 / HOP_S))
        masked = span_mask(frames.cpu(), time_steps, config.bestrq.mask_prob, span, generator)
        noise = torch.randn(features.shape, generator=generator) * 0.1
        masked = masked.to(self.device)
        inputs = torch.where(masked[..., None], noise.to(self.device), features)
        return MaskedInputs(features, frames, valid, masked, inputs)

    def ssl_targets(
        self, masked: MaskedInputs, hidden: torch.Tensor, enc_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BEST-RQ labels (B, T', codebooks) and which encoder frames are scored."""
        frames_out = hidden.shape[1]
        targets = self.quantizer(stack_and_normalize(masked.features, masked.valid, frames_out))
        return targets, label_mask(masked.masked, frames_out) & enc_mask

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The held-out BEST-RQ pass: SSL loss, masked-prediction accuracy and the
        prediction's codebook perplexity (exp of the entropy of the mean predicted
        distribution over masked frames, as wav2vec 2.0 reports it) on the fixed
        validation set, with the same masks every time (its own seeded generator)."""
        if not self.validation:
            return {}
        generator = torch.Generator().manual_seed(self.config.run.seed + 7919)
        codebooks = self.config.bestrq.num_codebooks
        self.model.eval()
        loss_sum, correct, scored = 0.0, 0, 0
        mean_probability: torch.Tensor | None = None
        try:
            for batch in self.validation:
                masked = self.masked_inputs(batch, generator)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    hidden, enc_mask, logits, _ = self.model(masked.inputs, masked.frames, {})
                targets, target_mask = self.ssl_targets(masked, hidden, enc_mask)
                logits = logits.float().view(logits.shape[0], hidden.shape[1], codebooks, -1)
                chosen = logits[target_mask]  # (N, codebooks, size)
                labels = targets[target_mask]  # (N, codebooks)
                loss_sum += float(
                    nn.functional.cross_entropy(
                        chosen.reshape(-1, chosen.shape[-1]), labels.reshape(-1), reduction="sum"
                    )
                )
                correct += int((chosen.argmax(dim=-1) == labels).sum())
                scored += labels.numel()
                probability = chosen.softmax(dim=-1).sum(dim=0)  # (codebooks, size)
                mean_probability = (
                    probability if mean_probability is None else mean_probability + probability
                )
        finally:
            self.model.train()
        if not scored or mean_probability is None:
            return {}
        mean_probability = mean_probability / mean_probability.sum(dim=-1, keepdim=True)
        entropy = -(mean_probability * torch.log(mean_probability.clamp(min=1e-12))).sum(-1)
        return {
            "val_loss_ssl": round(loss_sum / scored, 6),
            "val_accuracy": round(correct / scored, 6),
            "val_perplexity": round(float(torch.exp(entropy).mean()), 3),
            "val_utterances": sum(len(batch.keys) for batch in self.validation),
        }

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        config = self.config
        masked = self.masked_inputs(batch, self.mask_generator)
        inputs, frames = masked.inputs, masked.frames
        metadata, labels, geo_from_language = self.metadata(batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            hidden, enc_mask, logits, heads = self.ddp(inputs, frames, metadata)
        frames_out = hidden.shape[1]
        targets, target_mask = self.ssl_targets(masked, hidden, enc_mask)
        codebooks = config.bestrq.num_codebooks
        logits = logits.float().view(logits.shape[0], frames_out, codebooks, -1)
        ssl = nn.functional.cross_entropy(
            logits[target_mask].reshape(-1, logits.shape[-1]), targets[target_mask].reshape(-1)
        )
        result = {"ssl": ssl}
        for name, (q, p) in heads.items():
            result[name] = masr_triplet(
                q, p, labels[name], config.masr.margin, config.masr.reduction
            )
        total = ssl
        if "language" in result:
            total = total + config.masr.language_weight * result["language"]
        if "geo" in result:
            total = total + config.masr.geo_weight * result["geo"]
        result["total"] = total
        result["masked_fraction"] = target_mask.float().sum() / enc_mask.float().sum()
        if "geo" in heads:
            result["geo_from_language"] = torch.tensor(geo_from_language)
        return result

    def metadata(
        self, batch: Batch
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
        """Each enabled stream's fixed vectors e and triplet labels for this batch, and the
        share of utterances whose location is their language's.

        language: the lang2vec vector, labelled by language. geo: the unit-sphere location,
        labelled by place; utterances without one take their language's coordinates (so
        without per-speaker locations the geo stream is a second language stream: the
        metrics' ``geo_from_language_fraction`` says how much; ``masr.geo=false`` turns it
        off)."""
        vectors: dict[str, torch.Tensor] = {}
        labels: dict[str, torch.Tensor] = {}
        from_language = 0
        heads = self.model.heads
        if "language" in heads:
            ids = torch.tensor(
                [self.language_index[lang] for lang in batch.languages], device=self.device
            )
            vectors["language"] = self.language_vectors.to(self.device)[ids]
            labels["language"] = ids
        if "geo" in heads:
            lat_lon = batch.lat_lon.copy()
            from_language = sum(batch.geo_from_language)
            for row, lang in enumerate(batch.languages):
                if np.isnan(lat_lon[row]).any():
                    from_language += 1
                    place = language_coordinates(lang)
                    lat_lon[row] = place if place is not None else (0.0, 0.0)
            vectors["geo"] = torch.from_numpy(unit_vectors(lat_lon)).float().to(self.device)
            labels["geo"] = geo_labels(lat_lon).to(self.device)
        return vectors, labels, from_language / max(1, len(batch.languages))

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> str:
        return os.path.join(self.out, "checkpoints")

    def save(self) -> None:
        folder = os.path.join(self.checkpoints, f"step_{self.step:08d}")
        temp = f"{folder}.tmp"
        if self.dist.main:
            shutil.rmtree(temp, ignore_errors=True)
            os.makedirs(temp)
        self._barrier()
        torch.save(
            {"rng": rng_state(self.mask_generator), "data": self.data_state},
            os.path.join(temp, f"rank{self.dist.rank}.pt"),
        )
        if self.dist.main:
            torch.save(
                {
                    "step": self.step,
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "world": self.dist.world,
                    "config": json.dumps(self.config.to_dict()),
                    "sample_rate_hz": self.sample_rate,
                },
                os.path.join(temp, "model.pt"),
            )
        self._barrier()
        if self.dist.main:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(temp, folder)
            pointer = os.path.join(self.checkpoints, "latest.json")
            with open(f"{pointer}.tmp", "w", encoding="utf-8") as handle:
                json.dump({"step": self.step, "path": os.path.basename(folder)}, handle)
            os.replace(f"{pointer}.tmp", pointer)
            prune_checkpoints(self.checkpoints, self.config.run.keep_checkpoints)
        self._barrier()

    def init_weights(self, run: str) -> None:
        """Stage two of the MASR recipe: the model weights of ``run``'s latest checkpoint
        (a BEST-RQ run), with a fresh optimizer and schedule. Only the MASR heads may be
        missing from it (or extra); the encoder and BEST-RQ head must match this config."""
        try:
            folder = latest_checkpoint(run)
            if folder is None:
                raise FileNotFoundError(os.path.join(run, "checkpoints", "latest.json"))
            state = torch.load(
                os.path.join(folder, "model.pt"), map_location=self.device, weights_only=True
            )
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(
                f"--init-from {run!r} holds no checkpoint ({error}); train that run first"
            ) from error
        self.check_sample_rate(state, f"--init-from {run!r}")
        try:
            result = self.model.load_state_dict(state["model"], strict=False)
        except RuntimeError as error:  # a shape differs: another preset or codebook
            raise ConfigError(
                f"--init-from {run!r}: its model does not fit these settings "
                f"({str(error).splitlines()[0]}); use its model.* and bestrq.* settings"
            ) from error
        unexpected = [k for k in result.unexpected_keys if not k.startswith("heads.")]
        missing = [k for k in result.missing_keys if not k.startswith("heads.")]
        if unexpected or missing:
            raise ConfigError(
                f"--init-from {run!r}: its model does not fit these settings "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        LOG.info("initialized from %s (step %d): weights only", folder, int(state["step"]))

    def resume(self) -> bool:
        folder = latest_checkpoint(self.out)
        if folder is None:
            return False
        state = torch.load(
            os.path.join(folder, "model.pt"), map_location=self.device, weights_only=True
        )
        if state["world"] != self.dist.world:
            raise ConfigError(
                f"checkpoint was written by {state['world']} ranks; run with the same world size"
            )
        check_resume(json.loads(state["config"]), self.config.to_dict())
        self.check_sample_rate(state, f"resuming {self.out!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        mine = torch.load(os.path.join(folder, f"rank{self.dist.rank}.pt"), weights_only=True)
        restore_rng(mine["rng"], self.mask_generator)
        self.data_state = mine["data"]
        if self.data_state is not None:
            self.sampler.restore(self.data_state)
        if self.dist.main:
            truncate_metrics(os.path.join(self.out, "metrics.jsonl"), self.step)
        LOG.info("resumed from %s (step %d)", folder, self.step)
        return True

    def check_sample_rate(self, state: dict[str, Any], what: str) -> None:
        """A model's features are at its training rate: a checkpoint continues only on
        builds of that rate (checkpoints from before the rate was recorded are 16 kHz)."""
        theirs = int(state.get("sample_rate_hz", SAMPLE_RATE))
        if theirs != self.sample_rate:
            raise ConfigError(
                f"{what}: that model was trained on {theirs} Hz audio and these builds are "
                f"{self.sample_rate} Hz; use builds made with voxshard build --sample-rate {theirs}"
            )

    def _barrier(self) -> None:
        if self.dist.world > 1:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any]:
        config = self.config
        self.resume()
        if self.dist.main:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, "config.json"), "w", encoding="utf-8") as handle:
                json.dump(config.to_dict(), handle, indent=2)
        prefetcher = Prefetcher(self.sampler, config.data.prefetch_batches)
        metrics_path = os.path.join(self.out, "metrics.jsonl")
        last: dict[str, Any] = {}
        progress = _progress(self.dist.main, config.optim.max_steps, self.step)
        try:
            self.model.train()
            while self.step < config.optim.max_steps:
                started = time.perf_counter()
                wait = 0.0
                seconds = 0.0
                totals: dict[str, float] = {}
                self.optimizer.zero_grad(set_to_none=True)
                for micro in range(config.optim.grad_accumulation):
                    waited = time.perf_counter()
                    batch = prefetcher.next()
                    wait += time.perf_counter() - waited
                    seconds += batch.seconds
                    last_micro = micro == config.optim.grad_accumulation - 1
                    skip_sync = self.dist.world > 1 and not last_micro
                    context = cast(Any, self.ddp).no_sync() if skip_sync else nullcontext()
                    with context:
                        losses = self.losses(batch)
                        scaled = losses["total"] / config.optim.grad_accumulation
                        scaled.backward()  # type: ignore[no-untyped-call]
                    for name, value in losses.items():
                        totals[name] = (
                            totals.get(name, 0.0)
                            + float(value.detach()) / config.optim.grad_accumulation
                        )
                    self.data_state = batch.state
                grad_norm = float(
                    nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.clip_norm)
                )
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                elapsed = time.perf_counter() - started
                last = {
                    "step": self.step,
                    "loss": round(totals["total"], 6),
                    **{
                        f"loss_{k}": round(v, 6)
                        for k, v in totals.items()
                        if k not in ("total", "masked_fraction", "geo_from_language")
                    },
                    "masked_fraction": round(totals["masked_fraction"], 4),
                    **(
                        {"geo_from_language_fraction": round(totals["geo_from_language"], 4)}
                        if "geo_from_language" in totals
                        else {}
                    ),
                    "grad_norm": round(grad_norm, 4),
                    "lr": self.scheduler.get_last_lr()[0],
                    "audio_seconds": round(seconds, 3),
                    "audio_s_per_s": round(seconds * self.dist.world / elapsed, 2),
                    "data_wait_fraction": round(wait / elapsed, 4),
                    "corrupt_samples": int(batch.state["corrupt"]),
                    "memory_mb": _memory_mb(self.device),
                }
                every = config.run.validate_every
                if self.dist.main and every and self.step % every == 0:
                    last.update(self.validate())
                if self.dist.main and self.step % config.run.log_every == 0:
                    with open(metrics_path, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(last) + "\n")
                progress(self.step, last["loss"])
                pause = 0 < config.run.stop_at_step <= self.step
                if (
                    self.step % config.run.checkpoint_every == 0
                    or self.step == config.optim.max_steps
                    or pause
                ):
                    self.save()
                if pause:
                    break
        finally:
            prefetcher.close()
        return last


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


PROGRESS_LINE_EVERY_S = 10.0  # off a terminal: one whole line at most this often


def _progress(enabled: bool, total: int, start: int) -> Any:
    """Progress on stderr (rank 0): redrawn in place on a terminal; in a log file (no
    terminal) a whole line every PROGRESS_LINE_EVERY_S seconds and at the last step."""
    import sys

    began = time.perf_counter()
    tty = sys.stderr.isatty()
    last_line = [began]

    def show(step: int, loss: float) -> None:
        if not enabled:
            return
        now = time.perf_counter()
        rate = (step - start) / max(1e-9, now - began)
        remaining = (total - step) / rate if rate > 0 else float("inf")
        line = f"step {step}/{total}  loss {loss:.4f}  {rate:.2f} steps/s  eta {remaining:.0f} s"
        if tty:
            sys.stderr.write(f"\r{line} " + ("\n" if step >= total else ""))
        elif step >= total or now - last_line[0] >= PROGRESS_LINE_EVERY_S:
            last_line[0] = now
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return show


def train(
    builds: list[str],
    sim: str | None,
    out: str,
    config: TrainConfig,
    init_from: str | None = None,
) -> dict[str, Any]:
    trainer = Trainer(builds, sim, out, config, init_from)
    try:
        return trainer.train()
    finally:
        if trainer.dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def truncate_metrics(path: str, step: int) -> None:
    """Drop the metrics of steps after ``step`` (a resumed run repeats them)."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        kept = [line for line in handle if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        handle.writelines(kept)
    os.replace(f"{path}.tmp", path)


def prune_checkpoints(folder: str, keep: int) -> None:
    """Remove all but the newest ``keep`` step_* checkpoint folders."""
    steps = sorted(
        name
        for name in os.listdir(folder)
        if name.startswith("step_") and not name.endswith(".tmp")
    )
    for name in steps[:-keep]:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
