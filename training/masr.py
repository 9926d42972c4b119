"""MASR metadata losses: per stream j, q_j = projection_j(mean-pooled h),
p_j = [q_j ; alpha_j e_j] with e_j the fixed external metadata vector (lang2vec for
language, unit-sphere coordinates for geo).

The loss follows the MASR paper's method as issue #16 quotes it (the full text could not be
retrieved here): p_j only chooses the triplets and q_j is scored. For each anchor i with a
same-label and an other-label example in the batch,

    k+ = argmax_{k: y_k = y_i, k != i} d(p_i, p_k)      (hardest positive, by p)
    k- = argmin_{k: y_k != y_i} d(p_i, p_k)             (hardest negative, by p)
    L_i = max(0, d(q_i, q_k+) - d(q_i, q_k-) + gamma)  (scored on q)

and L_META^j = sum_i L_i (the paper sums over anchors; ``reduction="mean"`` divides by the
number of anchors instead). d is the cosine distance, computed in fp32. Scoring on p would let
the fixed alpha*e term do the separating and drive q to zero."""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def cosine_distance_matrix(points: torch.Tensor) -> torch.Tensor:
    unit = nn.functional.normalize(points.float(), dim=-1, eps=1e-8)
    return 1.0 - unit @ unit.T


def masr_triplet(
    q: torch.Tensor,
    p: torch.Tensor,
    labels: torch.Tensor,
    margin: float,
    reduction: str = "sum",
) -> torch.Tensor:
    """The MASR loss of one metadata stream (module docstring): triplets mined on ``p``,
    distances scored on ``q``. A batch with no usable anchor gives 0 with a gradient path."""
    with torch.no_grad():  # mining chooses indices; no gradient flows through the choice
        mined = cosine_distance_matrix(p)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        positive = same & ~eye
        negative = ~same
        hardest_positive = torch.where(positive, mined, torch.full_like(mined, -1.0)).argmax(1)
        hardest_negative = torch.where(negative, mined, torch.full_like(mined, 3.0)).argmin(1)
        usable = positive.any(dim=1) & negative.any(dim=1)
    if not usable.any():
        return q.float().sum() * 0.0
    scored = cosine_distance_matrix(q)
    rows = torch.arange(len(labels), device=labels.device)
    losses = torch.relu(scored[rows, hardest_positive] - scored[rows, hardest_negative] + margin)[
        usable
    ]
    return losses.sum() if reduction == "sum" else losses.mean()


class MetadataHead(nn.Module):
    """q_j = W_j pooled; p_j = [q_j ; alpha_j e_j]. Returns (q_j, p_j)."""

    def __init__(self, d_model: int, projection_dim: int, alpha: float) -> None:
        super().__init__()
        self.projection = nn.Linear(d_model, projection_dim)
        self.alpha = alpha

    def forward(
        self, pooled: torch.Tensor, metadata: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.projection(pooled.float())
        return q, torch.cat([q, self.alpha * metadata.float()], dim=-1)
