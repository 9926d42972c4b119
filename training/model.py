"""Conformer encoder with 4x convolutional subsampling (Gulati et al. 2020), BEST-RQ heads.

Padding-aware: a boolean mask (True = real frame) follows the sequence through
subsampling; attention ignores padded keys and the convolution module zeroes padded
frames right before its depthwise convolution (after the biased pointwise convolution
and GLU, which would otherwise turn zeros into a constant that leaks into the last real
frames), so an utterance's frames do not depend on how much padding its batch adds.
Positions are sinusoidal and added after subsampling (not Transformer-XL relative
attention, to keep the block small and compile-friendly).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from voxshard.training.config import PRESETS, TrainConfig
from voxshard.training.masr import MetadataHead, mean_pool


class ConvSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions over (time, mel): 4x fewer frames."""

    def __init__(self, n_mels: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, d_model, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(d_model, d_model, 3, stride=2),
            nn.ReLU(),
        )
        frequencies = ((n_mels - 1) // 2 - 1) // 2
        self.out = nn.Linear(d_model * frequencies, d_model)

    @staticmethod
    def lengths(lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, T', D)
        x = self.conv(features.unsqueeze(1))
        batch, channels, time, frequency = x.shape
        out: torch.Tensor = self.out(x.transpose(1, 2).reshape(batch, time, channels * frequency))
        return out


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ff),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ff, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class ConvModule(nn.Module):
    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.depth_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.norm(x).transpose(1, 2)
        y = nn.functional.glu(self.pointwise_in(y), dim=1)
        y = self.depthwise(y.masked_fill(~mask[:, None, :], 0.0)).transpose(1, 2)
        y = nn.functional.silu(self.depth_norm(y)).transpose(1, 2)
        out: torch.Tensor = self.dropout(self.pointwise_out(y).transpose(1, 2))
        return out


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``, so PyTorch picks
    a fused kernel (memory-efficient attention on GPU: it takes the padding mask; flash
    attention would not) instead of materializing (B, H, T, T) scores in Python ops.
    Padded keys are masked; a query always has at least one real key."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        nn.init.xavier_uniform_(self.qkv.weight)  # as nn.MultiheadAttention initializes
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, time, d_model = x.shape
        qkv = self.qkv(x).view(batch, time, 3, self.heads, d_model // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, d_head)
        y = nn.functional.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        out: torch.Tensor = self.out(y.transpose(1, 2).reshape(batch, time, d_model))
        return out


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, ff: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff, dropout)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = SelfAttention(d_model, heads, dropout)
        self.attention_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, kernel, dropout)
        self.ff2 = FeedForward(d_model, ff, dropout)
        self.out_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        y = self.attention_norm(x)
        y = self.attention(y, mask)
        x = x + self.attention_dropout(y)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        out: torch.Tensor = self.out_norm(x)
        return out


def sinusoidal(length: int, dim: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    scale = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * scale)
    table[:, 1::2] = torch.cos(position * scale[: dim // 2])
    return table


class ConformerEncoder(nn.Module):
    def __init__(
        self,
        n_mels: int,
        d_model: int,
        layers: int,
        heads: int,
        ff: int,
        conv_kernel: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.subsampling = ConvSubsampling(n_mels, d_model)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            ConformerBlock(d_model, heads, ff, conv_kernel, dropout) for _ in range(layers)
        )

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) log-mel and frame lengths -> (B, T/4, D) and the frame mask."""
        layers, mask = self.layer_outputs(features, lengths)
        return layers[-1], mask

    def layer_outputs(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every block's output (layer 1 .. L, each (B, T/4, D)) and the frame mask."""
        x = self.subsampling(features)
        out_lengths = ConvSubsampling.lengths(lengths).clamp(min=1, max=x.shape[1])
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < out_lengths[:, None]
        x = self.input_dropout(x + sinusoidal(x.shape[1], self.d_model, x.device)[None])
        outputs = []
        for block in self.blocks:
            x = block(x, mask)
            outputs.append(x)
        return outputs, mask


def build_encoder(preset: str, n_mels: int = 80, dropout: float = 0.1) -> ConformerEncoder:
    return ConformerEncoder(n_mels=n_mels, dropout=dropout, **PRESETS[preset])


def latest_checkpoint(run: str) -> str | None:
    """RUN/checkpoints/<step folder> that RUN/checkpoints/latest.json names, or None when
    the run has none yet (the layout ``Trainer.save`` writes)."""
    import json
    import os

    pointer = os.path.join(run, "checkpoints", "latest.json")
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as handle:
        return os.path.join(run, "checkpoints", str(json.load(handle)["path"]))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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
