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
from typing import Any, TypedDict, cast

import numpy as np
import torch
from torch import nn

from voxshard.encoders import LanguageEncoder
from voxshard.schemas import ConfigError
from voxshard.training.config import TrainConfig, check_resume
from voxshard.training.data import (
    SAMPLE_RATE,
    Batch,
    BatchSampler,
    Prefetcher,
    WorkerBatches,
    discover,
    validation_batches,
)
from voxshard.training.flops import model_flops, peak_flops
from voxshard.training.model import SpeechModel, latest_checkpoint
from voxshard.training.objective import Objective
from voxshard.training.runs import run_folder

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


class ModelCheckpoint(TypedDict):
    """``model.pt`` of a checkpoint folder (written by rank 0)."""

    step: int  # optimizer steps done
    model: dict[str, torch.Tensor]  # SpeechModel.state_dict(): encoder.*, ssl_head.*, heads.*
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    world: int  # ranks that wrote it: a resume needs as many
    config: str  # TrainConfig.to_dict() as JSON: a resume checks it (config.check_resume)
    sample_rate_hz: int  # the builds' audio rate the features were computed at


class RankCheckpoint(TypedDict):
    """``rank<N>.pt`` of a checkpoint folder: what differs per rank."""

    rng: dict[str, Any]  # python, numpy, torch, cuda and the mask generator's states
    data: dict[str, Any] | None  # the batch sampler's position (BatchSampler.state())


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


class Trainer:
    """One training run, set up in the order a reader follows: distributed and seeds, data,
    model (and its DDP / compiled wrapper), optimizer and schedule, the step (Objective),
    validation. ``train()`` resumes from the run's latest checkpoint when it has one."""

    def __init__(
        self,
        builds: list[str],
        sim: str | None,
        out: str,
        config: TrainConfig,
        init_from: str | None = None,
    ) -> None:
        self.config = config
        self.run_folder = run_folder(out)  # a URL run is written in a local mirror
        self.out = self.run_folder.local
        self.step = 0
        self.data_state: dict[str, Any] | None = None
        self.setup_distributed_and_seeds()
        self.setup_data(builds, sim)
        self.setup_model(init_from)
        self.setup_optimizer()
        self.objective = Objective(
            config,
            self.device,
            self.sample_rate,
            self.languages,
            self.language_vectors,
            self.model,
            self.ddp,
        )
        self.validation = self.setup_validation(builds)

    # ------------------------------------------------------------------ setup
    def setup_distributed_and_seeds(self) -> None:
        """Rank and device (torchrun's environment), CPU threads, every RNG per rank, and the
        generator of masks and mask noise (on the device: no host round trip per step)."""
        self.dist, self.device = setup_distributed()
        if self.device.type == "cpu":
            torch.set_num_threads(self.config.run.threads)
        seed = self.config.run.seed + self.dist.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.mask_generator = torch.Generator(self.device).manual_seed(seed + 1000)
        if self.dist.main:
            self.run_folder.fetch()  # a run at a URL: its latest checkpoint, for a resume
        self._barrier()

    def setup_data(self, builds: list[str], sim: str | None) -> None:
        """The builds' training shards, languages and rate, the batch sampler of this rank,
        and each language's fixed lang2vec vector (the MASR language stream's e)."""
        config = self.config
        shard_set = discover(builds, config.data.splits)
        self.languages = sorted(shard_set.shards)
        if sim is not None:
            check_similarity_folder(sim, self.languages)
        language_encoder = LanguageEncoder(config.masr.feature_set)
        self.language_dim = language_encoder.dim
        self.language_vectors = torch.from_numpy(language_encoder.vectors(self.languages)).float()
        self.shard_set = shard_set
        self.sampler = BatchSampler(
            shard_set, config.data, config.run.seed, self.dist.rank, self.dist.world
        )
        self.sample_rate = shard_set.sample_rate  # the builds' rate: features follow it

    def setup_model(self, init_from: str | None) -> None:
        """The SpeechModel (encoder, BEST-RQ head, MASR heads), stage two's weights when
        asked (a resume takes the run's own instead), then DDP and torch.compile."""
        self.model = SpeechModel(self.config, self.language_dim).to(self.device)
        if init_from is not None and latest_checkpoint(self.out) is None:
            self.init_weights(init_from)
        self.ddp: nn.Module = self.model
        if self.dist.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False,
            )
        if self.config.run.compile:
            self.ddp = torch.compile(self.ddp)  # type: ignore[assignment]

    def setup_optimizer(self) -> None:
        """AdamW (fused on GPU) and the warmup + cosine schedule."""
        optim = self.config.optim
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

    def setup_validation(self, builds: list[str]) -> list[Batch]:
        """The fixed held-out batches (rank 0 only; none when validation is off)."""
        config = self.config
        if not (config.run.validate_every and self.dist.main):
            return []
        batches = validation_batches(
            builds,
            config.run.validation_split,
            config.run.validation_utterances,
            config.data.max_duration_s,
        )
        if not batches:
            LOG.info("no %s split in the builds: no validation", config.run.validation_split)
        elif config.run.validation_split in config.data.splits:
            LOG.warning(
                "validating on %s, which data.splits also trains on: not held out",
                config.run.validation_split,
            )
        return batches

    def validate(self) -> dict[str, float]:
        return self.objective.validate(self.validation)

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
        mine = RankCheckpoint(rng=rng_state(self.mask_generator), data=self.data_state)
        torch.save(mine, os.path.join(temp, f"rank{self.dist.rank}.pt"))
        if self.dist.main:
            state = ModelCheckpoint(
                step=self.step,
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                world=self.dist.world,
                config=json.dumps(self.config.to_dict()),
                sample_rate_hz=self.sample_rate,
            )
            torch.save(state, os.path.join(temp, "model.pt"))
        self._barrier()
        if self.dist.main:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(temp, folder)
            pointer = os.path.join(self.checkpoints, "latest.json")
            with open(f"{pointer}.tmp", "w", encoding="utf-8") as handle:
                json.dump({"step": self.step, "path": os.path.basename(folder)}, handle)
            os.replace(f"{pointer}.tmp", pointer)
            prune_checkpoints(self.checkpoints, self.config.run.keep_checkpoints)
            self.run_folder.publish(os.path.basename(folder))
        self._barrier()

    def init_weights(self, run: str) -> None:
        """Stage two of the MASR recipe: the model weights of ``run``'s latest checkpoint
        (a BEST-RQ run), with a fresh optimizer and schedule. Only the MASR heads may be
        missing from it (or extra); the encoder and BEST-RQ head must match this config."""
        try:
            source = run_folder(run, reader=True)
            source.fetch()
            folder = latest_checkpoint(source.local)
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
        if self.data_state is not None and not self.config.data.workers:
            self.sampler.restore(self.data_state)  # worker processes restore themselves
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
        prefetcher = self.open_loader()
        metrics_path = os.path.join(self.out, "metrics.jsonl")
        tensorboard = self.open_tensorboard()
        peak = self.peak_flops()
        last: dict[str, Any] = {}
        progress = _progress(self.dist.main, config.optim.max_steps, self.step)
        try:
            self.model.train()
            interval = _new_interval()
            while self.step < config.optim.max_steps:
                # the step stays on the device: losses and the gradient norm are read back
                # (a host sync) only on the steps that log, validate or checkpoint
                step_totals: dict[str, torch.Tensor] = {}
                self.optimizer.zero_grad(set_to_none=True)
                for micro in range(config.optim.grad_accumulation):
                    waited = time.perf_counter()
                    batch = prefetcher.next()
                    interval["wait"] += time.perf_counter() - waited
                    interval["seconds"] += batch.seconds
                    interval["flops"] += self.step_flops(batch)
                    last_micro = micro == config.optim.grad_accumulation - 1
                    skip_sync = self.dist.world > 1 and not last_micro
                    context = cast(Any, self.ddp).no_sync() if skip_sync else nullcontext()
                    with context:
                        losses = self.objective.losses(batch, self.mask_generator)
                        scaled = losses["total"] / config.optim.grad_accumulation
                        scaled.backward()  # type: ignore[no-untyped-call]
                    for name, value in losses.items():
                        share = value.detach() / config.optim.grad_accumulation
                        step_totals[name] = (
                            step_totals[name] + share if name in step_totals else share
                        )
                    self.data_state = batch.state
                grad_norm = nn.utils.clip_grad_norm_(
                    self.model.parameters(), config.optim.clip_norm
                )
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                pause = 0 < config.run.stop_at_step <= self.step
                checkpoint = (
                    self.step % config.run.checkpoint_every == 0
                    or self.step == config.optim.max_steps
                    or pause
                )
                every = config.run.validate_every
                validate = self.dist.main and every and self.step % every == 0
                logged = self.step % config.run.log_every == 0
                if logged or validate or checkpoint:
                    last = self.metrics_row(step_totals, grad_norm, interval, peak, batch.state)
                    interval = _new_interval()
                    if validate:
                        last.update(self.validate())
                    if self.dist.main and logged:
                        with open(metrics_path, "a", encoding="utf-8") as handle:
                            handle.write(json.dumps(last) + "\n")
                        if tensorboard is not None:
                            for name, value in last.items():
                                if name != "step" and isinstance(value, int | float):
                                    tensorboard.add_scalar(name, value, self.step)
                    progress(self.step, last["loss"])
                if checkpoint:
                    self.save()
                if pause:
                    break
        finally:
            prefetcher.close()
            if tensorboard is not None:
                tensorboard.close()
        if self.dist.main:
            self.run_folder.publish()  # the metrics since the last checkpoint
        return last

    def metrics_row(
        self,
        totals: dict[str, torch.Tensor],
        grad_norm: torch.Tensor,
        interval: dict[str, float],
        peak: float | None,
        data_state: dict[str, Any],
    ) -> dict[str, Any]:
        """One metrics.jsonl row: this step's losses (read back from the device here) and
        the rates over the steps since the last row."""
        values = {name: float(value) for name, value in totals.items()}
        elapsed = max(1e-9, time.perf_counter() - interval["started"])
        flops = interval["flops"]
        return {
            "step": self.step,
            "loss": round(values["total"], 6),
            **{
                f"loss_{k}": round(v, 6)
                for k, v in values.items()
                if k not in ("total", "masked_fraction", "geo_from_language")
            },
            "masked_fraction": round(values["masked_fraction"], 4),
            **(
                {"geo_from_language_fraction": round(values["geo_from_language"], 4)}
                if "geo_from_language" in values
                else {}
            ),
            "grad_norm": round(float(grad_norm), 4),
            "lr": self.scheduler.get_last_lr()[0],
            "audio_seconds": round(interval["seconds"], 3),
            "audio_s_per_s": round(interval["seconds"] * self.dist.world / elapsed, 2),
            "data_wait_fraction": round(interval["wait"] / elapsed, 4),
            "model_tflops_per_s": round(flops / elapsed / 1e12, 4),
            **({} if peak is None else {"mfu": round(flops / elapsed / peak, 4)}),
            "corrupt_samples": int(data_state["corrupt"]),
            "memory_mb": _memory_mb(self.device),
            "rss_mb": _rss_mb(),
        }

    def open_loader(self) -> Prefetcher | WorkerBatches:
        """One loader thread (data.workers 0), or worker processes from the resumed
        position; pinned host memory when the device is a GPU."""
        pin = self.device.type == "cuda"
        data = self.config.data
        if not data.workers:
            return Prefetcher(self.sampler, data.prefetch_batches, pin)
        return WorkerBatches(
            self.shard_set,
            data,
            self.config.run.seed,
            self.dist.rank,
            self.dist.world,
            self.data_state,
            pin,
        )

    def step_flops(self, batch: Batch) -> float:
        """Model FLOPs of a forward and backward on this batch's padded shape."""
        config = self.config
        frames = int(self.objective.logmel.frames(torch.tensor(batch.audio.shape[1])))
        d_model = self.model.encoder.d_model
        heads = tuple((d_model, config.masr.projection_dim) for _ in self.model.heads)
        return model_flops(
            config.model.preset,
            config.model.n_mels,
            batch.audio.shape[0],
            frames,
            config.bestrq.codebook_size * config.bestrq.num_codebooks,
            heads,
        ).total

    def peak_flops(self) -> float | None:
        if self.config.run.peak_tflops > 0:
            return self.config.run.peak_tflops * 1e12
        if self.device.type == "cuda":
            return peak_flops(torch.cuda.get_device_name(self.device))
        return None

    def open_tensorboard(self) -> Any:
        """A SummaryWriter into RUN/tensorboard (rank 0, with run.tensorboard)."""
        if not (self.config.run.tensorboard and self.dist.main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ConfigError(
                f"run.tensorboard needs the tensorboard package ({error}): "
                "pip install tensorboard, or leave run.tensorboard off"
            ) from error
        return SummaryWriter(os.path.join(self.out, "tensorboard"), purge_step=self.step + 1)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _new_interval() -> dict[str, float]:
    """What the steps since the last metrics row add up: start time, audio, data wait, FLOPs."""
    return {"started": time.perf_counter(), "seconds": 0.0, "wait": 0.0, "flops": 0.0}


def _rss_mb() -> float | None:
    """This process's resident memory now (memory_mb is a peak: it cannot show a leak's
    shape); None where /proc is missing."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


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


def check_similarity_folder(sim: str, languages: list[str]) -> None:
    """``--sim`` must be a voxshard similarity folder that covers the builds' languages."""
    try:
        with open(os.path.join(sim, "languages.json"), encoding="utf-8") as handle:
            known = json.load(handle)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"--sim {sim!r} is not a voxshard similarity folder ({error}); "
            "make one with: voxshard similarity BUILD... --out FOLDER"
        ) from error
    missing = sorted(set(languages) - set(known))
    if missing:
        raise ConfigError(f"--sim {sim} lacks languages {missing}: rerun voxshard similarity")


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
