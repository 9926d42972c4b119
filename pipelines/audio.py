"""Decode, downmix, resample, validate and FLAC-encode one utterance. Plain functions.

Decoding counts the frames actually decoded (libsndfile's header frame count can be wrong for
MP3). Float samples from libsndfile are int16 / 32768, so converting back with 32768 makes a
16-bit source at the build rate round-trip bit-exactly.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas import AudioError

FloatArray = npt.NDArray[np.float32]
READ_BLOCK_FRAMES = 1 << 16
SHORTEN_MAGIC = b"sample_coding -s"


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000
    min_duration_s: float = 0.2
    max_duration_s: float = 60.0
    resample_quality: str = "HQ"


@dataclass(frozen=True)
class EncodedAudio:
    flac: bytes
    num_samples: int
    sample_rate: int
    source_sample_rate: int
    clipped_samples: int

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def _is_shorten_sphere(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if not head.startswith(b"NIST_1A"):
        return False
    return SHORTEN_MAGIC in head and b"shorten" in head


def decode(
    path: str, start_s: float | None = None, end_s: float | None = None
) -> tuple[FloatArray, int]:
    """Return (mono float32 samples, sample rate) of ``path`` between start_s and end_s.

    Raises AudioError("decode", reason) for missing, empty, unreadable or silent-length files.
    A segment is read with seek + read, so a long file is not loaded whole.
    """
    import soundfile as sf

    if not os.path.isfile(path):
        raise AudioError("decode", "missing audio file")
    if os.path.getsize(path) == 0:
        raise AudioError("decode", "empty audio file (0 bytes)")
    try:
        with sf.SoundFile(path) as handle:
            rate = int(handle.samplerate)
            start_frame = 0 if start_s is None else round(start_s * rate)
            stop_frame = None if end_s is None else round(end_s * rate)
            if start_frame:
                if handle.seekable() and handle.frames > 0 and start_frame >= handle.frames:
                    raise AudioError(
                        "decode", "segment starts after the end of the audio", f"{start_s} s"
                    )
                handle.seek(start_frame)
            blocks = []
            remaining = None if stop_frame is None else max(0, stop_frame - start_frame)
            buffer = np.empty((READ_BLOCK_FRAMES, handle.channels), dtype=np.float32)
            while remaining is None or remaining > 0:
                want = READ_BLOCK_FRAMES if remaining is None else min(READ_BLOCK_FRAMES, remaining)
                block = handle.read(out=buffer[:want])
                if len(block) == 0:
                    break
                blocks.append(
                    block.mean(axis=1, dtype=np.float32)
                    if block.shape[1] > 1
                    else block[:, 0].copy()
                )
                if remaining is not None:
                    remaining -= len(block)
    except AudioError:
        raise
    except sf.LibsndfileError as error:
        if _is_shorten_sphere(path):
            raise AudioError(
                "decode", "shorten-compressed SPHERE is not supported; convert it with sph2pipe"
            ) from error
        raise AudioError("decode", "unreadable audio", error.error_string) from error
    except (RuntimeError, ValueError, TypeError, OSError) as error:
        raise AudioError("decode", "unreadable audio", str(error)) from error
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise AudioError("decode", "no audio samples decoded")
    return samples, rate


def resample(samples: FloatArray, rate_in: int, rate_out: int, quality: str = "HQ") -> FloatArray:
    """Band-limited resampling with soxr (HQ by default); identity when the rates match."""
    if rate_in == rate_out:
        return samples
    import soxr

    out: FloatArray = soxr.resample(samples, rate_in, rate_out, quality=quality).astype(
        np.float32, copy=False
    )
    return out


def to_int16(samples: FloatArray) -> tuple[npt.NDArray[np.int16], int]:
    """Scale by 32768, round, clip to int16. Returns (pcm, number of clipped samples)."""
    scaled = np.rint(samples.astype(np.float64) * 32768.0)
    clipped = int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    return np.clip(scaled, -32768, 32767).astype(np.int16), clipped


def encode_flac(pcm: npt.NDArray[np.int16], sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def process(
    path: str, start_s: float | None, end_s: float | None, config: AudioConfig
) -> EncodedAudio:
    """Decode + resample + validate + encode. Raises AudioError(stage, reason)."""
    samples, rate = decode(path, start_s, end_s)
    if not np.isfinite(samples).all():
        raise AudioError("validate", "non-finite samples (NaN or inf)")
    samples = resample(samples, rate, config.sample_rate, config.resample_quality)
    num_samples = int(samples.shape[0])
    duration_s = num_samples / config.sample_rate
    if duration_s < config.min_duration_s:
        raise AudioError(
            "validate", "too short", f"{duration_s:.3f} s < --min-duration {config.min_duration_s}"
        )
    if duration_s > config.max_duration_s:
        raise AudioError(
            "validate", "too long", f"{duration_s:.3f} s > --max-duration {config.max_duration_s}"
        )
    pcm, clipped = to_int16(samples)
    return EncodedAudio(
        flac=encode_flac(pcm, config.sample_rate),
        num_samples=num_samples,
        sample_rate=config.sample_rate,
        source_sample_rate=rate,
        clipped_samples=clipped,
    )
