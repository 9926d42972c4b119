"""What one training step computes: log-mel features, BEST-RQ masks and targets, and every
loss term (L = L_SSL + sum_j lambda_j L_META_j), apart from where batches come from and where
state goes. The trainer, the validation pass and ``voxshard bench-train`` share it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from voxshard.encoders import language_coordinates, unit_vectors
from voxshard.training.bestrq import (
    STACK,
    RandomProjectionQuantizer,
    label_mask,
    span_mask,
    stack_and_normalize,
)
from voxshard.training.config import TrainConfig
from voxshard.training.data import Batch
from voxshard.training.features import HOP_S, LogMel, normalize_per_feature
from voxshard.training.masr import masr_triplet
from voxshard.training.model import SpeechModel


@dataclass
class MaskedInputs:
    features: torch.Tensor  # (B, T, n_mels) normalized log-mel
    frames: torch.Tensor  # (B,) real frames
    valid: torch.Tensor  # (B, T) real frame
    masked: torch.Tensor  # (B, T) masked frame
    inputs: torch.Tensor  # features with masked frames replaced by N(0, 0.1) noise


def geo_labels(lat_lon: np.ndarray) -> torch.Tensor:
    """Positives for the geo stream: the same place to 0.1 degree (~11 km)."""
    keys = [f"{a:.1f},{b:.1f}" for a, b in np.nan_to_num(lat_lon, nan=999.0)]
    index = {key: i for i, key in enumerate(sorted(set(keys)))}
    return torch.tensor([index[key] for key in keys])


class Objective:
    """The model's step on a batch. ``model`` is the SpeechModel; ``ddp`` what the forward
    goes through (the model itself, its DistributedDataParallel or compiled wrapper)."""

    def __init__(
        self,
        config: TrainConfig,
        device: torch.device,
        sample_rate: int,
        languages: list[str],
        language_vectors: torch.Tensor,
        model: SpeechModel,
        ddp: nn.Module | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.sample_rate = sample_rate
        self.logmel = LogMel(sample_rate, config.model.n_mels).to(device)
        self.quantizer = RandomProjectionQuantizer(
            STACK * config.model.n_mels,
            config.bestrq.codebook_dim,
            config.bestrq.codebook_size,
            config.bestrq.num_codebooks,
            seed=config.run.seed,
        ).to(device)
        self.model = model
        self.ddp = ddp if ddp is not None else model
        self.language_index = {lang: i for i, lang in enumerate(languages)}
        self.language_vectors = language_vectors.to(device)
        self.autocast = device.type == "cuda" and config.run.bf16

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
        # masks and noise are made on the device from a generator there: no host round trip
        masked = span_mask(frames, time_steps, config.bestrq.mask_prob, span, generator)
        noise = torch.randn(features.shape, generator=generator, device=self.device) * 0.1
        inputs = torch.where(masked[..., None], noise, features)
        return MaskedInputs(features, frames, valid, masked, inputs)

    def ssl_targets(
        self, masked: MaskedInputs, hidden: torch.Tensor, enc_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BEST-RQ labels (B, T', codebooks) and which encoder frames are scored."""
        frames_out = hidden.shape[1]
        targets = self.quantizer(stack_and_normalize(masked.features, masked.valid, frames_out))
        return targets, label_mask(masked.masked, frames_out) & enc_mask

    @torch.no_grad()
    def validate(self, batches: list[Batch]) -> dict[str, float]:
        """The held-out BEST-RQ pass: SSL loss, masked-prediction accuracy and the
        prediction's codebook perplexity (exp of the entropy of the mean predicted
        distribution over masked frames, as wav2vec 2.0 reports it) on the fixed
        validation set, with the same masks every time (its own seeded generator)."""
        if not batches:
            return {}
        generator = torch.Generator(self.device).manual_seed(self.config.run.seed + 7919)
        codebooks = self.config.bestrq.num_codebooks
        self.model.eval()
        loss_sum, correct, scored = 0.0, 0, 0
        mean_probability: torch.Tensor | None = None
        try:
            for batch in batches:
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
            "val_utterances": sum(len(batch.keys) for batch in batches),
        }

    def losses(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Every loss term of one (micro-)batch, the total, and two diagnostics."""
        config = self.config
        masked = self.masked_inputs(batch, generator)
        inputs, frames = masked.inputs, masked.frames
        metadata, labels, geo_from_language = self.metadata(batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            hidden, enc_mask, logits, heads = self.ddp(inputs, frames, metadata)
        frames_out = hidden.shape[1]
        targets, target_mask = self.ssl_targets(masked, hidden, enc_mask)
        codebooks = config.bestrq.num_codebooks
        logits = logits.float().view(logits.shape[0], frames_out, codebooks, -1)
        # the mean over masked frames and codebooks, by weights rather than boolean indexing
        # (whose data-dependent shape makes the host wait for the device every step)
        per_frame = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).view(targets.shape)
        weights = target_mask[..., None].float()
        ssl = (per_frame * weights).sum() / (weights.sum() * codebooks).clamp(min=1.0)
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
