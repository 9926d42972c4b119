"""MASR metadata losses: per stream j, q_j = projection_j(mean-pooled h),
p_j = [q_j ; alpha_j e_j] with e_j the fixed external metadata vector (lang2vec for
language, unit-sphere coordinates for geo), and a batch-hard triplet loss on cosine distance
(farthest positive, nearest negative, margin gamma), computed in fp32."""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def cosine_distance_matrix(points: torch.Tensor) -> torch.Tensor:
    unit = nn.functional.normalize(points.float(), dim=-1, eps=1e-8)
    return 1.0 - unit @ unit.T


def batch_hard_triplet(points: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """mean over anchors with a positive and a negative of relu(d(a, p+) - d(a, n-) + margin),
    p+ the farthest same-label example, n- the nearest other-label one. fp32. A batch with
    no usable anchor gives 0 (with a gradient path, so DDP ranks stay in step)."""
    distance = cosine_distance_matrix(points)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    negative = ~same
    hardest_positive = torch.where(positive, distance, torch.full_like(distance, -1.0)).amax(dim=1)
    hardest_negative = torch.where(negative, distance, torch.full_like(distance, 3.0)).amin(dim=1)
    usable = positive.any(dim=1) & negative.any(dim=1)
    losses = torch.relu(hardest_positive - hardest_negative + margin)
    if not usable.any():
        return points.float().sum() * 0.0
    return losses[usable].mean()


class MetadataHead(nn.Module):
    """q_j = W_j pooled; p_j = [q_j ; alpha_j e_j]."""

    def __init__(self, d_model: int, projection_dim: int, alpha: float) -> None:
        super().__init__()
        self.projection = nn.Linear(d_model, projection_dim)
        self.alpha = alpha

    def forward(self, pooled: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        q = self.projection(pooled.float())
        return torch.cat([q, self.alpha * metadata.float()], dim=-1)
