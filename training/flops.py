"""Model FLOPs of a training step, counted from the shapes, and MFU.

The count is the matmul and convolution work of the SpeechModel (a multiply-add is 2 FLOPs),
as MFU is conventionally defined (PaLM, Megatron): elementwise ops, normalization, the
log-mel front end and the frozen quantizer are left out. Backward is twice forward, except
that the first convolution needs no gradient for its input (the features). Checked against
``torch.utils.flop_counter.FlopCounterMode`` on real steps (tests/test_training.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from voxshard.training.config import PRESETS

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, matched against the CUDA device name.
# Vendor data sheets: H100 SXM / H200 989.4 TF, H100 PCIe 756 TF, A100 312 TF, L4 121 TF.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.4e12),
    ("A100", 312.0e12),
    ("L40S", 362.05e12),
    ("L4", 121.0e12),
)


@dataclass(frozen=True)
class StepFlops:
    forward: float
    backward: float

    @property
    def total(self) -> float:
        return self.forward + self.backward


def subsampled(frames: int) -> int:
    return ((frames - 1) // 2 - 1) // 2


def model_flops(
    preset: str,
    n_mels: int,
    batch: int,
    frames: int,
    ssl_outputs: int,
    head_dims: tuple[tuple[int, int], ...] = (),
) -> StepFlops:
    """FLOPs of one forward and backward of the SpeechModel on a (batch, frames, n_mels)
    input (padded shapes: what the hardware computes). ``ssl_outputs`` is codebooks x
    codebook size; ``head_dims`` the (input, output) sizes of each MASR head's projection."""
    p = PRESETS[preset]
    d, layers, ff, kernel = p["d_model"], p["layers"], p["ff"], p["conv_kernel"]
    t1, f1 = (frames - 3) // 2 + 1, (n_mels - 3) // 2 + 1
    t2, f2 = (t1 - 3) // 2 + 1, (f1 - 3) // 2 + 1
    first_conv = batch * t1 * f1 * d * 9
    rest = batch * t2 * f2 * d * d * 9 + batch * t2 * f2 * d * d  # second conv, projection
    tokens = batch * t2
    block = (
        4 * tokens * d * ff  # two feed-forward modules, two matmuls each
        + 4 * tokens * d * d  # q, k, v and output projections
        + 2 * batch * t2 * t2 * d  # scores and the weighted sum over every head
        + 3 * tokens * d * d  # the convolution module's pointwise convolutions (d->2d, d->d)
        + tokens * d * kernel  # its depthwise convolution
    )
    heads = tokens * d * ssl_outputs + sum(batch * i * o for i, o in head_dims)
    macs_rest = rest + layers * block + heads
    forward = 2.0 * (first_conv + macs_rest)
    # backward: gradients for weights and inputs (2x), but the features need none
    backward = 2.0 * (first_conv + 2 * macs_rest)
    return StepFlops(forward, backward)


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU, else None (CPUs: give run.peak_tflops)."""
    for marker, peak in PEAK_BF16_FLOPS:
        if marker in device_name:
            return peak
    return None


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilization: achieved model FLOP/s over the hardware's peak."""
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / peak
