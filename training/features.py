"""Log-mel features on the training device: torch.stft and librosa's mel filterbank.

80 bins, 25 ms Hann window, 10 ms hop at 16 kHz (n_fft 400, hop 160): no torchaudio.
The encoder reads them normalized per feature (``normalize_per_feature``), as NeMo's
``normalize="per_feature"`` preprocessor does, so BEST-RQ's N(0, 0.1) mask noise lives
in the same space as the frames it replaces.
"""

from __future__ import annotations

import torch
from torch import nn

WINDOW_S = 0.025
HOP_S = 0.010
STD_FLOOR = 1e-5  # NeMo's CONSTANT, added to each feature's standard deviation


class LogMel(nn.Module):
    mel: torch.Tensor
    window: torch.Tensor

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80) -> None:
        super().__init__()
        import librosa

        self.n_fft = round(WINDOW_S * sample_rate)
        self.hop = round(HOP_S * sample_rate)
        mel = librosa.filters.mel(sr=sample_rate, n_fft=self.n_fft, n_mels=n_mels)
        self.register_buffer("mel", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frame count for waveforms of these lengths (center=False)."""
        return torch.clamp((num_samples - self.n_fft) // self.hop + 1, min=1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:  # (B, S) -> (B, T, n_mels)
        spectrum = torch.stft(
            audio.float(),
            self.n_fft,
            self.hop,
            window=self.window,
            center=False,
            return_complex=True,
        )
        power = spectrum.real.square() + spectrum.imag.square()  # (B, F, T)
        return torch.log(torch.matmul(self.mel, power) + 1e-6).transpose(1, 2)


def normalize_per_feature(features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(B, T, F) features and (B,) real frame counts -> each utterance's every feature at
    mean 0 and standard deviation 1 over its real frames; padded frames set to 0.

    As NeMo's per-feature normalization: the unbiased standard deviation plus
    ``STD_FLOOR``; statistics never read padding, so the result is the same whether an
    utterance is alone or padded in a batch.
    """
    time = features.shape[1]
    valid = (torch.arange(time, device=features.device)[None, :] < frames[:, None])[..., None]
    count = valid.sum(dim=1, keepdim=True).to(features.dtype)
    mean = torch.where(valid, features, 0.0).sum(dim=1, keepdim=True) / count.clamp(min=1.0)
    squares = torch.where(valid, (features - mean).square(), 0.0).sum(dim=1, keepdim=True)
    std = torch.sqrt(squares / (count - 1.0).clamp(min=1.0)) + STD_FLOOR
    return torch.where(valid, (features - mean) / std, 0.0)
