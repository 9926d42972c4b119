"""Training configuration: dataclasses, YAML files, dotted command-line overrides, and one
validation pass that reports every problem at once."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from voxshard.schemas import ConfigError

PRESETS: dict[str, dict[str, int]] = {
    # d_model, layers, heads, ff: tiny for CPU tests; base ~100M and large ~600M parameters
    "tiny": {"d_model": 64, "layers": 2, "heads": 4, "ff": 256, "conv_kernel": 15},
    "base": {"d_model": 512, "layers": 16, "heads": 8, "ff": 2048, "conv_kernel": 31},
    "large": {"d_model": 1024, "layers": 24, "heads": 16, "ff": 4096, "conv_kernel": 31},
}

# Schedule defaults of a real run, by preset; a YAML file or override still wins. Warmup
# in the tens of thousands of steps as BEST-RQ-style pretraining uses (NEST/NeMo's Noam
# schedule: 25k); the MASR paper's first stage is 1M BEST-RQ steps. Peak lr 2e-3 for base
# (near NeMo's Noam peak for d_model 512), halved for the 3x deeper, 2x wider large. These
# are published starting points, not tuned here. Tests and the demo set their own sizes.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "optim.lr": 2e-3,
        "optim.warmup_steps": 1000,
        "optim.max_steps": 20000,
        "run.checkpoint_every": 1000,
    },
    "base": {
        "optim.lr": 2e-3,
        "optim.warmup_steps": 25000,
        "optim.max_steps": 500000,
        "run.checkpoint_every": 5000,
    },
    "large": {
        "optim.lr": 1e-3,
        "optim.warmup_steps": 25000,
        "optim.max_steps": 1000000,
        "run.checkpoint_every": 5000,
    },
}


@dataclass
class DataConfig:
    max_duration_s: float = 6.0  # random crop to at most this
    min_duration_s: float = 0.5
    batch_seconds: float = 48.0  # audio per batch; sets K per batch with the bucket length
    languages_per_batch: int = 4  # P: drawn with replacement, p ~ hours ** alpha
    min_per_language: int = 2  # K is never below this (positives for the triplet losses)
    alpha: float = 0.5  # language sampling temperature
    buckets_s: tuple[float, ...] = (2.0, 4.0, 6.0)  # duration bucket edges
    buffer_per_language: int = 32  # utterances held per language to pick similar durations
    prefetch_batches: int = 4
    splits: tuple[str, ...] = ("train",)
    # 0: one loader thread (exactly the sampler's order); N: N worker processes, each its own
    # shards and sampler (training/data.py WorkerBatches), batches in turn, resumable
    workers: int = 0
    pad_to_bucket: bool = True  # pad every batch to its bucket's length: shapes repeat


@dataclass
class ModelConfig:
    preset: str = "tiny"
    n_mels: int = 80
    dropout: float = 0.1


@dataclass
class BestRqConfig:
    codebook_size: int = 8192
    codebook_dim: int = 16
    num_codebooks: int = 1
    mask_prob: float = 0.01  # span start probability per frame
    mask_span_ms: float = 400.0


@dataclass
class MasrConfig:
    language: bool = True
    geo: bool = True
    language_weight: float = 16.0  # lambda for the language stream (the MASR paper's value)
    geo_weight: float = 1.0
    language_alpha: float = 1.0  # scale of the lang2vec vector e in p = [q ; alpha e]
    geo_alpha: float = 1.0
    margin: float = 0.2  # gamma
    reduction: str = "sum"  # over anchors: "sum" as the MASR paper, or "mean"
    projection_dim: int = 128
    feature_set: str = "syntax_knn"


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 1000  # the tiny preset's; see PRESET_DEFAULTS
    max_steps: int = 20000
    grad_accumulation: int = 1
    clip_norm: float = 5.0


@dataclass
class RunConfig:
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 1000
    bf16: bool = True  # on CUDA only; CPU runs fp32
    compile: bool = False
    threads: int = 1  # CPU threads (tests: 1)
    stop_at_step: int = 0  # pause after this step (checkpointed; rerun to continue); 0: never
    keep_checkpoints: int = 3  # the newest N step_* folders are kept; older ones removed
    validate_every: int = 1000  # held-out pass on the builds' validation split; 0: never
    validation_split: str = "dev"
    validation_utterances: int = 128  # spread evenly over the split's languages
    # MFU's denominator in TFLOP/s; 0: the GPU's dense bf16 peak from training/flops.py
    # (CPUs have none: MFU is then left out of the metrics)
    peak_tflops: float = 0.0
    tensorboard: bool = False  # also write the metrics as TensorBoard scalars (RUN/tensorboard)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bestrq: BestRqConfig = field(default_factory=BestRqConfig)
    masr: MasrConfig = field(default_factory=MasrConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        problems = []
        d, m, b, o = self.data, self.model, self.bestrq, self.optim
        if m.preset not in PRESETS:
            problems.append(f"model.preset {m.preset!r}: choose one of {', '.join(PRESETS)}")
        if not 0 < d.min_duration_s < d.max_duration_s:
            problems.append("data: need 0 < min_duration_s < max_duration_s")
        if d.workers < 0:
            problems.append("data.workers must be >= 0 (0: one loader thread)")
        if d.languages_per_batch < 1 or d.min_per_language < 2:
            problems.append("data: languages_per_batch >= 1 and min_per_language >= 2")
        if d.batch_seconds <= 0 or d.alpha < 0:
            problems.append("data: batch_seconds > 0 and alpha >= 0")
        if list(d.buckets_s) != sorted(d.buckets_s) or not d.buckets_s:
            problems.append("data.buckets_s must be a non-empty increasing list")
        if not 0 <= b.mask_prob < 1 or b.mask_span_ms <= 0:
            problems.append("bestrq: 0 <= mask_prob < 1 and mask_span_ms > 0")
        if b.codebook_size < 2 or b.codebook_dim < 1 or b.num_codebooks < 1:
            problems.append("bestrq: codebook_size >= 2, codebook_dim >= 1, num_codebooks >= 1")
        if o.lr <= 0 or o.max_steps < 1 or o.warmup_steps < 0 or o.grad_accumulation < 1:
            problems.append(
                "optim: lr > 0, max_steps >= 1, warmup_steps >= 0, grad_accumulation >= 1"
            )
        if self.masr.reduction not in ("sum", "mean"):
            problems.append(f"masr.reduction {self.masr.reduction!r}: choose sum or mean")
        if self.run.keep_checkpoints < 1:
            problems.append("run.keep_checkpoints must be >= 1")
        if self.run.validate_every < 0 or self.run.validation_utterances < 1:
            problems.append("run: validate_every >= 0 and validation_utterances >= 1")
        if self.run.peak_tflops < 0:
            problems.append("run.peak_tflops must be >= 0 (0: from the GPU's name)")
        if self.run.checkpoint_every < 1 or self.run.log_every < 1 or self.run.threads < 1:
            problems.append("run: checkpoint_every, log_every and threads must be >= 1")
        if problems:
            raise ConfigError(problems)


def _convert(current: Any, text: str, name: str) -> Any:
    import yaml

    value = yaml.safe_load(text) if isinstance(text, str) else text
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {text!r}")
        return value
    if isinstance(current, int) and not isinstance(current, bool):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {text!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {text!r}") from None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {text!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {text!r}")
        return float(value)
    if isinstance(current, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {text!r}")
        return tuple(value)
    if isinstance(current, str):
        return str(value)
    return value


def apply(
    config: TrainConfig, values: dict[str, Any], problems: list[str], prefix: str = ""
) -> None:
    """Set nested fields from a dict (YAML) or dotted keys; unknown keys are problems."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        parts = dotted.split(".")
        target: Any = config
        try:
            for part in parts[:-1]:
                target = getattr(target, part)
            if not dataclasses.is_dataclass(target) or parts[-1] not in {
                f.name for f in dataclasses.fields(target)
            }:
                raise AttributeError(dotted)
        except AttributeError:
            problems.append(f"unknown setting {dotted!r}")
            continue
        current = getattr(target, parts[-1])
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                problems.append(f"{dotted}: expected a mapping")
                continue
            apply(config, value, problems, prefix=f"{dotted}.")
            continue
        try:
            setattr(target, parts[-1], _convert(current, value, dotted))
        except ConfigError as error:
            problems.extend(error.problems)


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    """Defaults, the chosen preset's schedule (``PRESET_DEFAULTS``), then the YAML file,
    then ``key.sub=value`` overrides; validated."""
    chosen = _load(path, overrides, {})  # first pass: which preset
    return _load(path, overrides, PRESET_DEFAULTS.get(chosen.model.preset, {}))


def _load(path: str | None, overrides: list[str], preset: dict[str, Any]) -> TrainConfig:
    import yaml

    config = TrainConfig()
    problems: list[str] = []
    apply(config, preset, problems)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                values = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"--config {path}: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"--config {path}: expected a mapping at the top")
        apply(config, values, problems)
    parsed = {}
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r} is not key.sub=value")
            continue
        key, _, value = item.partition("=")
        parsed[key.strip()] = value
    apply(config, parsed, problems)
    if problems:
        raise ConfigError(problems)
    config.validate()
    return config


# What a resumed run may change: how long it runs and how it logs, checkpoints and loads.
RESUMABLE_CHANGES = ("optim.max_steps", "run.", "data.prefetch_batches")


def changed_settings(
    saved: dict[str, Any],
    current: dict[str, Any],
    prefix: str = "",
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """Dotted names whose values differ between two ``to_dict()`` configs. A setting the
    saved config lacks (added by a later voxshard) counts as unchanged at its default."""
    defaults = TrainConfig().to_dict() if defaults is None and not prefix else (defaults or {})
    changed = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed.extend(changed_settings(old, new, f"{name}.", defaults.get(key) or {}))
        elif key not in saved and key in defaults and new == defaults[key]:
            continue
        elif old != new and not (isinstance(old, list | tuple) and list(old) == list(new or [])):
            changed.append(name)
    return changed


def check_resume(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise ConfigError when a resumed run's settings differ beyond RESUMABLE_CHANGES."""
    refused = [
        name
        for name in changed_settings(saved, current)
        if not any(name == allowed or name.startswith(allowed) for allowed in RESUMABLE_CHANGES)
    ]
    if refused:
        raise ConfigError(
            f"the run folder was started with other settings ({', '.join(refused)}); resume "
            "with the same ones (only optim.max_steps, run.* and data.prefetch_batches may "
            "change), or start a new run folder"
        )
