"""BEST-RQ (Chiu et al. 2022): a frozen random-projection quantizer gives each stacked,
normalized feature frame a codebook label; span-masked inputs are encoded and the model is
trained with cross-entropy to predict the labels of masked frames."""

from __future__ import annotations

import torch
from torch import nn

STACK = 4  # frames stacked per label: the encoder's subsampling factor


class RandomProjectionQuantizer(nn.Module):
    """Frozen: Xavier-initialized projection and L2-normalized random codebooks (buffers,
    not parameters, so no optimizer ever touches them)."""

    def __init__(
        self, input_dim: int, codebook_dim: int, codebook_size: int, num_codebooks: int, seed: int
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        projection = torch.empty(num_codebooks, input_dim, codebook_dim)
        bound = (6.0 / (input_dim + codebook_dim)) ** 0.5
        projection.uniform_(-bound, bound, generator=generator)
        codebooks = torch.randn(num_codebooks, codebook_size, codebook_dim, generator=generator)
        self.register_buffer("projection", projection)
        self.register_buffer("codebooks", nn.functional.normalize(codebooks, dim=-1))

    @torch.no_grad()
    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """(B, T', input_dim) -> labels (B, T', num_codebooks)."""
        projected = torch.einsum("btd,cde->btce", stacked.float(), self.projection)
        projected = nn.functional.normalize(projected, dim=-1)
        # nearest codebook vector: on the unit sphere, the largest dot product
        scores = torch.einsum("btce,cke->btck", projected, self.codebooks)
        return scores.argmax(dim=-1)


def stack_and_normalize(
    features: torch.Tensor, frame_mask: torch.Tensor, frames_out: int
) -> torch.Tensor:
    """Per-utterance mean/variance normalization, then STACK frames per subsampled frame."""
    mask = frame_mask[..., None].float()
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (features * mask).sum(dim=1, keepdim=True) / count
    variance = (((features - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    normalized = (features - mean) / torch.sqrt(variance + 1e-5)
    batch, time, dim = normalized.shape
    needed = frames_out * STACK
    if time < needed:
        normalized = nn.functional.pad(normalized, (0, 0, 0, needed - time))
    return normalized[:, :needed].reshape(batch, frames_out, STACK * dim)


def span_mask(
    lengths: torch.Tensor, time: int, probability: float, span: int, generator: torch.Generator
) -> torch.Tensor:
    """(B, T) boolean: each real frame starts a masked span of ``span`` frames with
    ``probability``; at least one span per utterance so every example has targets.

    Made where ``lengths`` is (the generator must be on that device), without a host
    round trip: no Python loop over rows, no ``.item()``."""
    device = lengths.device
    batch = lengths.shape[0]
    valid = torch.arange(time, device=device)[None, :] < lengths[:, None]
    starts = (torch.rand(batch, time, generator=generator, device=device) < probability) & valid
    # a row without a start gets one, uniform over the positions a whole span fits
    limit = (lengths - span).clamp(min=1)
    forced = (torch.rand(batch, generator=generator, device=device) * limit).long()
    forced = torch.minimum(forced, limit - 1)
    rows = torch.arange(batch, device=device)
    starts[rows, forced] |= ~starts.any(dim=1)
    # frame t is masked when a span starts within the ``span`` frames up to it
    padded = nn.functional.pad(starts.float()[:, None, :], (span - 1, 0))
    masked = nn.functional.max_pool1d(padded, kernel_size=span, stride=1)[:, 0, :] > 0
    return masked & valid


def label_mask(frame_mask: torch.Tensor, frames_out: int) -> torch.Tensor:
    """A subsampled frame is a target when any of its STACK input frames was masked."""
    needed = frames_out * STACK
    padded = frame_mask
    if padded.shape[1] < needed:
        padded = nn.functional.pad(padded, (0, needed - padded.shape[1]))
    return padded[:, :needed].reshape(frame_mask.shape[0], frames_out, STACK).any(dim=-1)
