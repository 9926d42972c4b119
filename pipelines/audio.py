"""Decode, downmix, resample, validate and FLAC-encode one utterance. Plain functions.

Decoding counts the frames actually decoded (libsndfile's header frame count can be wrong for
MP3). Float samples from libsndfile are int16 / 32768, so converting back with 32768 makes a
16-bit source at the build rate round-trip bit-exactly.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from voxshard.schemas import AudioError, storage

FloatArray = npt.NDArray[np.float32]
READ_BLOCK_FRAMES = 1 << 16
MAX_CHANNELS = 2  # speech corpora are mono or stereo; a 6-channel file is not one voice
SHORTEN_MAGIC = b"sample_coding -s"
MIN_AUDIO_BYTES = 44  # the smallest header of the formats read here (a WAV's)


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
    clipped: int = 0  # samples beyond 16-bit full scale, clipped when converted

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


Span = tuple[float | None, float | None]  # (start_s, end_s); None = file start / file end


def _is_shorten_sphere(path: str) -> bool:
    try:
        with storage.open_read(path) as handle:
            head = handle.read(1024)
    except OSError:
        return False
    return head.startswith(b"NIST_1A") and SHORTEN_MAGIC in head and b"shorten" in head


def _open(path: str) -> tuple[Any, IO[bytes] | None]:
    """(soundfile.SoundFile, the remote stream under it or None), or AudioError("decode", ...)
    saying why not. Local files are opened by libsndfile itself; a URL through schemas.storage."""
    import soundfile as sf

    try:
        size = storage.getsize(path)  # one stat (one request on an object store)
    except FileNotFoundError:
        raise AudioError("decode", "missing audio file") from None
    if size == 0:
        raise AudioError("decode", "empty audio file (0 bytes)")
    stream = storage.open_read(path) if storage.is_remote(path) else None
    try:
        return (sf.SoundFile(path) if stream is None else sf.SoundFile(stream)), stream
    except BaseException:
        if stream is not None:
            stream.close()
        raise


def _open_checked(path: str) -> tuple[Any, IO[bytes] | None]:
    import soundfile as sf

    try:
        return _open(path)
    except sf.LibsndfileError as error:
        if _is_shorten_sphere(path):
            raise AudioError(
                "decode", "shorten-compressed SPHERE is not supported; convert it with sph2pipe"
            ) from error
        detail = f"libsndfile: {error.error_string}"
        with suppress(OSError):
            size = storage.getsize(path)
            if size < MIN_AUDIO_BYTES:  # libsndfile says "possibly a pipe?" of a tiny file
                detail = f"{size} bytes: too short to hold a header and audio"
        raise AudioError("decode", "unreadable audio", detail) from error
    except (RuntimeError, ValueError, TypeError, OSError) as error:
        raise AudioError("decode", "unreadable audio", str(error)) from error


# libsndfile 1.2.2 quirks, measured here (tests/test_audio.py keeps them honest):
# - seek is sample-exact for these formats; for Ogg Vorbis and MP3 a seek after a read can land
#   hundreds of samples off, so Vorbis is decoded forward (skipped frames are read).
# - MP3 is decoded correctly only by one read call: a read split into several calls loses
#   samples at every boundary. An MP3 file is therefore decoded whole, once, and spans are
#   served from memory (Common Voice clips are seconds long; long MP3 sessions cost memory).
EXACT_SEEK_FORMATS = frozenset({"FLAC", "WAV", "WAVEX", "NIST", "AIFF", "W64", "RF64", "CAF"})
EXACT_SEEK_SUBTYPES = frozenset({("OGG", "OPUS")})
WHOLE_FILE_FORMATS = frozenset({"MP3"})
# Float sources (and resampling overshoot) can exceed 16-bit full scale: a few clipped samples
# are counted in stats.json; more than this share of an utterance rejects it (a float WAV
# peaking at 2.4 loses ~10 % of its samples to clipping).
MAX_CLIPPED_FRACTION = 0.001
MP3_FRAME = 1152  # samples in an MPEG-1 Layer III frame: the slack of the length check


class SpanReader:
    """Reads spans of one file in any order, sample-exactly, holding one block at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle, self.stream = _open_checked(path)
        self.position = 0
        info = (self.handle.format, self.handle.subtype)
        self.exact_seek = info[0] in EXACT_SEEK_FORMATS or info in EXACT_SEEK_SUBTYPES
        self.buffer = np.empty((READ_BLOCK_FRAMES, self.handle.channels), dtype=np.float32)
        self.whole: FloatArray | None = None
        self.declared_frames = self._declared_frames()
        if info[0] in WHOLE_FILE_FORMATS:
            import soundfile as sf

            try:
                self.whole = self._decode_whole()
            except (sf.LibsndfileError, RuntimeError, ValueError, MemoryError) as error:
                self.close()
                detail = getattr(error, "error_string", None) or str(error)
                raise AudioError("decode", "unreadable audio", detail) from error
            if self.declared_frames and len(self.whole) < self.declared_frames - MP3_FRAME:
                self.close()
                declared, decoded = self.declared_frames, len(self.whole)
                detail = f"its Xing header says {declared} samples, {decoded} decoded"
                raise AudioError("decode", "truncated audio", detail)

    def _declared_frames(self) -> int:
        """The length the container states, where libsndfile reports it (0: none): FLAC's
        STREAMINFO, and an MP3's Xing/Info/VBRI frame count (else libsndfile estimates)."""
        if self.handle.format == "FLAC":
            return int(self.handle.frames)
        if self.handle.format == "MP3" and self.stream is None:
            try:
                head = _mp3_first_frames(self.path)
            except OSError:
                return 0
            if any(tag in head for tag in (b"Xing", b"Info", b"VBRI")):
                return int(self.handle.frames)
        return 0

    def _decode_whole(self) -> FloatArray:
        """One read call for the header's frame count, then whatever follows (the header
        can be wrong); mono."""
        first = self.handle.read(dtype="float32", always_2d=True)
        rest = self._read(None, keep=True, mono=False)
        frames = np.concatenate([first, rest]) if rest.size else first
        return frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]

    @property
    def channels(self) -> int:
        return int(self.handle.channels)

    @property
    def sample_rate(self) -> int:
        return int(self.handle.samplerate)

    @property
    def known_frames(self) -> int:
        """The frame count: decoded for MP3, else the header's (0 when unknown)."""
        if self.whole is not None:
            return len(self.whole)
        return int(self.handle.frames) if self.handle.seekable() else 0

    def close(self) -> None:
        self.handle.close()
        if self.stream is not None:
            self.stream.close()

    def __enter__(self) -> SpanReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _move_to(self, frame: int) -> None:
        if frame == self.position:
            return
        if self.exact_seek:
            self.handle.seek(frame)
            self.position = frame
            return
        if frame < self.position:  # backwards: start over from the top
            self.close()
            self.handle, self.stream = _open_checked(self.path)
            self.position = 0
        self._read(frame - self.position, keep=False)

    def _read(self, count: int | None, keep: bool = True, mono: bool = True) -> FloatArray:
        """Read ``count`` frames (None: to the end); discard them unless ``keep``."""
        blocks = []
        remaining = count
        while remaining is None or remaining > 0:
            want = READ_BLOCK_FRAMES if remaining is None else min(READ_BLOCK_FRAMES, remaining)
            block = self.handle.read(out=self.buffer[:want])
            if len(block) == 0:
                break
            self.position += len(block)
            if remaining is not None:
                remaining -= len(block)
            if keep and not mono:
                blocks.append(block.copy())
            elif keep:
                down = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                blocks.append(down.copy())
        if blocks:
            return np.concatenate(blocks)
        shape = (0,) if mono else (0, self.handle.channels)
        return np.zeros(shape, dtype=np.float32)

    def read_frames(self, start_frame: int, stop_frame: int | None) -> FloatArray:
        """Mono float32 frames [start_frame, stop_frame); counts what is actually decoded
        (the header's frame count can be wrong for MP3)."""
        if self.whole is not None:
            return self.whole[start_frame:stop_frame]  # a view: finish() copies as it resamples
        if 0 < self.known_frames <= start_frame:
            return np.zeros(0, dtype=np.float32)
        self._move_to(start_frame)
        if self.position < start_frame:  # the file ended first
            return np.zeros(0, dtype=np.float32)
        return self._read(None if stop_frame is None else max(0, stop_frame - start_frame))


# A segment whose audio ends early by more than this is rejected, not trimmed: BABEL's last
# segments often end a fraction of a second past their file, which is trimmed.
SEGMENT_SHORTFALL_S = 1.0
SEGMENT_SHORTFALL_FRACTION = 0.2


def read_spans(reader: SpanReader, spans: Sequence[Span]) -> tuple[FloatArray, int]:
    """Concatenate the spans of an open file. Frames are ``int(t * rate)``, as the official
    VoxPopuli cutter does; a span running past the end is trimmed, a span starting after the
    end contributes nothing, and if nothing is left the segment is an AudioError. A whole
    file shorter than its container declares (FLAC, tagged MP3) is AudioError("decode",
    "truncated audio"); a segment missing more than SEGMENT_SHORTFALL_S and
    SEGMENT_SHORTFALL_FRACTION of its timestamps is AudioError("decode", "segment runs past
    the end of the audio") (its file is whole by its header: the timestamps or the file are
    wrong, and which cannot be told from here)."""
    import soundfile as sf

    rate = reader.sample_rate
    pieces = []
    try:
        for start_s, end_s in spans:
            start_frame = 0 if start_s is None else int(start_s * rate)
            if 0 < reader.known_frames <= start_frame:
                continue
            stop_frame = None if end_s is None else int(end_s * rate)
            piece = reader.read_frames(start_frame, stop_frame)
            if piece.size:
                pieces.append(piece)
    except sf.LibsndfileError as error:
        detail = f"libsndfile: {error.error_string}"
        raise AudioError("decode", "unreadable audio", detail) from error
    except (RuntimeError, ValueError) as error:
        raise AudioError("decode", "unreadable audio", str(error)) from error
    if not pieces:
        if spans and spans[0][0]:
            known = reader.known_frames
            length = f"; the audio has {known / rate:.6g} s" if known else ""
            detail = f"starts at {spans[0][0]} s{length}"
            raise AudioError("decode", "segment starts at or after the end of the audio", detail)
        raise AudioError("decode", "no audio samples decoded")
    got = sum(len(piece) for piece in pieces)
    whole = len(spans) == 1 and not spans[0][0] and spans[0][1] is None
    if whole and reader.whole is None and 0 < got < reader.declared_frames:
        detail = f"its header says {reader.declared_frames} samples, {got} decoded"
        raise AudioError("decode", "truncated audio", detail)
    ends = [end_s for _, end_s in spans]
    if all(end_s is not None for end_s in ends):
        expected = sum(
            int(float(end_s or 0.0) * rate) - int((start_s or 0.0) * rate)
            for start_s, end_s in spans
        )
        missing = expected - got
        if missing > SEGMENT_SHORTFALL_S * rate and missing > SEGMENT_SHORTFALL_FRACTION * expected:
            detail = (
                f"the segment is {expected / rate:.3f} s by its timestamps, "
                f"{got / rate:.3f} s decoded"
            )
            raise AudioError("decode", "segment runs past the end of the audio", detail)
    return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), rate


def decode(
    path: str, start_s: float | None = None, end_s: float | None = None
) -> tuple[FloatArray, int]:
    """(mono float32 samples, sample rate) of ``path`` between start_s and end_s."""
    with SpanReader(path) as reader:
        return read_spans(reader, [(start_s, end_s)])


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
    """Scale by 32768, round, clip to int16. Returns (pcm, number of clipped samples).
    Raises AudioError("validate", "non-finite samples ...") for NaN or inf."""
    scaled = np.rint(samples * np.float32(32768.0))  # exact in float32 for |x| <= 1
    if not scaled.size:
        return scaled.astype(np.int16), 0
    low, high = float(scaled.min()), float(scaled.max())  # NaN, if any, comes out here
    if not (math.isfinite(low) and math.isfinite(high)):
        raise AudioError("validate", "non-finite samples (NaN or inf)")
    if low >= -32768 and high <= 32767:  # the common case: nothing to clip or count
        return scaled.astype(np.int16), 0
    clipped = int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    return np.clip(scaled, -32768, 32767).astype(np.int16), clipped


def encode_flac(pcm: npt.NDArray[np.int16], sample_rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def _check_duration(duration_s: float, config: AudioConfig) -> None:
    if duration_s < config.min_duration_s:
        raise AudioError(
            "validate", "too short", f"{duration_s:.3f} s < --min-duration {config.min_duration_s}"
        )
    if duration_s > config.max_duration_s:
        raise AudioError(
            "validate", "too long", f"{duration_s:.3f} s > --max-duration {config.max_duration_s}"
        )


def finish(samples: FloatArray, rate: int, config: AudioConfig) -> EncodedAudio:
    """Validate + resample + encode decoded samples. Raises AudioError("validate", ...).

    Non-finite samples are found after resampling, in the scaled 16 kHz samples' extremes: a
    NaN or inf poisons every output whose filter reaches it (NaN * 0 is NaN), so none is
    missed, and the check reads a third of a 48 kHz source's samples, once."""
    samples = resample(samples, rate, config.sample_rate, config.resample_quality)
    num_samples = int(samples.shape[0])
    pcm, clipped = to_int16(samples)
    _check_duration(num_samples / config.sample_rate, config)
    if clipped > MAX_CLIPPED_FRACTION * num_samples:
        peak = float(np.max(np.abs(samples)))
        detail = (
            f"{clipped} of {num_samples} samples ({clipped / num_samples:.2%}) beyond full scale "
            f"(peak {peak:.2f}); at most {MAX_CLIPPED_FRACTION:.1%} may be clipped"
        )
        raise AudioError("validate", "clipped audio", detail)
    return EncodedAudio(
        flac=encode_flac(pcm, config.sample_rate),
        num_samples=num_samples,
        sample_rate=config.sample_rate,
        source_sample_rate=rate,
        clipped=clipped,
    )


@dataclass(frozen=True)
class AudioHeader:
    """What a file's header says, read without decoding (for planning)."""

    format: str  # libsndfile's major format: FLAC, WAV, MP3, OGG, NIST, ...
    subtype: str  # PCM_16, VORBIS, OPUS, MPEG_LAYER_III, ...
    channels: int
    sample_rate: int
    frames: int  # the header's count: an estimate for MP3 (see SpanReader)
    num_bytes: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


MP3_TAG_WINDOW = 4096  # the Xing/Info/VBRI header sits in the first frame


def _mp3_first_frames(path: str) -> bytes:
    """The bytes after an MP3's ID3v2 tag, if any (its size: 4 syncsafe bytes at 6..9)."""
    with open(path, "rb") as handle:
        head = handle.read(10)
        if head[:3] == b"ID3" and len(head) == 10:
            size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
            handle.seek(10 + size)
            return handle.read(MP3_TAG_WINDOW)
        return head + handle.read(MP3_TAG_WINDOW - len(head))


# Truncation. libsndfile reports a cut WAV's or SPHERE's length as what is left and opens a cut
# Ogg stream as if whole, so the container's own claims are read here, in the file's head and
# tail only: a WAV's data chunk size, a SPHERE header's sample_count, an Ogg stream's last page
# (its header_type must carry the end-of-stream flag, 0x04). FLAC (STREAMINFO) and tagged MP3
# (Xing/Info/VBRI frame counts) declare their length through libsndfile: SpanReader compares.
HEAD_BYTES = 1 << 12  # a WAV's chunks before "data", a SPHERE header (1024 bytes)
OGG_TAIL_BYTES = 65_307  # the largest Ogg page: 27 + 255 lacing values + 255 * 255
OGG_END_OF_STREAM = 0x04
UNKNOWN_RIFF_SIZES = (0, 0xFFFFFFFF)  # written by streaming writers that could not seek back


def _head_and_tail(path: str, size: int) -> tuple[bytes, bytes]:
    with storage.open_read(path) as handle:
        head = handle.read(HEAD_BYTES)
        if size <= HEAD_BYTES:
            return head, head
        handle.seek(max(0, size - OGG_TAIL_BYTES))
        return head, handle.read(OGG_TAIL_BYTES)


def _wav_shortfall(head: bytes, size: int) -> str | None:
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset = 12
    while offset + 8 <= len(head):
        chunk, length = (
            head[offset : offset + 4],
            int.from_bytes(head[offset + 4 : offset + 8], "little"),
        )
        if chunk == b"data":
            present = size - (offset + 8)
            if length not in UNKNOWN_RIFF_SIZES and present < length:
                return f"its data chunk says {length} bytes, the file holds {present}"
            return None
        offset += 8 + length + (length & 1)
    return None


def _sphere_shortfall(head: bytes, size: int) -> str | None:
    if not head.startswith(b"NIST_1A"):
        return None
    fields: dict[str, str] = {}
    lines = head.split(b"\n")
    try:
        header_bytes = int(lines[1])
    except (IndexError, ValueError):
        return None
    for line in lines[2:]:
        parts = line.decode("latin-1").split()
        if parts and parts[0] == "end_head":
            break
        if len(parts) >= 3:
            fields[parts[0]] = parts[2]
    if "sample_count" not in fields or "shorten" in fields.get("sample_coding", ""):
        return None
    try:
        expected = (
            int(fields["sample_count"])
            * int(fields.get("channel_count", "1"))
            * int(fields.get("sample_n_bytes", "2"))
        )
    except ValueError:
        return None
    present = size - header_bytes
    if present < expected:
        return f"its header says {expected} bytes of samples, the file holds {present}"
    return None


def _ogg_page_end(data: bytes, at: int) -> int:
    """Where the Ogg page starting at ``at`` ends (past ``len(data)`` if it is cut short)."""
    segments = data[at + 26]
    return at + 27 + segments + sum(data[at + 27 : at + 27 + segments])


def _last_ogg_page(tail: bytes) -> int:
    """Where the file's last Ogg page starts in ``tail`` (its last bytes): the last "OggS"
    with version 0 whose page ends exactly at the end of the file; else the last whose page
    runs past the end (a cut file); else the last "OggS" at all (bytes after the last page);
    else -1. Audio data holds the 4 bytes "OggS" now and then: such a match inside the last
    page's body makes a "page" that ends before the end of the file, and is passed over."""
    at, cut = len(tail), -1
    while (at := tail.rfind(b"OggS", 0, at)) >= 0:
        if at + 27 > len(tail) or tail[at + 4] != 0:
            continue
        end = _ogg_page_end(tail, at)
        if end == len(tail):
            return at
        if end > len(tail) and cut < 0:
            cut = at
    return cut if cut >= 0 else tail.rfind(b"OggS")


def _ogg_shortfall(tail: bytes) -> str | None:
    """An Ogg page (RFC 3533): "OggS", version, header_type (0x04: end of stream), ...,
    page_segments at byte 26, then that many lacing values summing to the body's length. The
    file must end with a whole page that ends the stream."""
    at = _last_ogg_page(tail)
    if at < 0 or at + 27 > len(tail):
        return "no whole Ogg page at its end"
    if _ogg_page_end(tail, at) > len(tail):
        return "its last Ogg page is cut short"
    if not tail[at + 5] & OGG_END_OF_STREAM:
        return "its last Ogg page does not end the stream"
    return None


def truncation(path: str, fmt: str, size: int) -> str | None:
    """Why a WAV, SPHERE or Ogg file is shorter than it says it is, or None."""
    if fmt not in ("WAV", "WAVEX", "RF64", "NIST", "OGG"):
        return None
    head, tail = _head_and_tail(path, size)
    if fmt == "NIST":
        return _sphere_shortfall(head, size)
    if fmt == "OGG":
        return _ogg_shortfall(tail)
    return _wav_shortfall(head, size)


# Ogg Vorbis and Opus headers are read from the container (RFC 3533, RFC 7845, the Vorbis I
# spec): libsndfile's open scans the stream for its length, 0.4 ms a Vorbis file here, a fifth
# of decoding a 4-second clip. The first page's first packet identifies the codec (channels,
# rate; Opus: pre-skip); the last page's granule position is the length (Opus counts 48 kHz
# samples including the pre-skip). Equal to libsndfile's frames (tests compare); anything
# else (another codec, chained or multiplexed streams, no granule) goes through libsndfile.
OGG_PAGE_HEADER = 27
OPUS_GRANULE_RATE = 48000
OPUS_DECODE_RATES = (8000, 12000, 16000, 24000, 48000)
NO_GRANULE = (1 << 64) - 1
OGG_SUFFIXES = (".ogg", ".oga", ".opus")  # another name takes libsndfile's path


def _ogg_header(path: str) -> tuple[AudioHeader, bytes] | None:
    """(the header of an Ogg Vorbis or Opus file from its first and last pages, the file's
    tail), or None. Only files named as Ogg are tried, so no other file is read twice."""
    if not path.lower().endswith(OGG_SUFFIXES):
        return None
    try:
        size = storage.getsize(path)
        if size < OGG_PAGE_HEADER:
            return None
        head, tail = _head_and_tail(path, size)
    except OSError:
        return None
    if not head.startswith(b"OggS") or len(head) < OGG_PAGE_HEADER:
        return None
    segments = head[26]
    lacing = head[OGG_PAGE_HEADER : OGG_PAGE_HEADER + segments]
    first = head[OGG_PAGE_HEADER + segments :]
    first = first[: sum(lacing)]
    last_at = _last_ogg_page(tail)
    if last_at < 0 or last_at + OGG_PAGE_HEADER > len(tail):
        return None
    granule = int.from_bytes(tail[last_at + 6 : last_at + 14], "little")
    if tail[last_at + 14 : last_at + 18] != head[14:18] or granule == NO_GRANULE:
        return None  # another logical stream ends the file, or no packet ends on its page
    if first.startswith(b"\x01vorbis") and len(first) >= 16:
        subtype, channels = "VORBIS", first[11]
        rate = int.from_bytes(first[12:16], "little")
        frames = granule
    elif first.startswith(b"OpusHead") and len(first) >= 19:
        subtype, channels = "OPUS", first[9]
        preskip = int.from_bytes(first[10:12], "little")
        declared = int.from_bytes(first[12:16], "little")
        rate = declared if declared in OPUS_DECODE_RATES else OPUS_GRANULE_RATE
        frames = max(0, granule - preskip) * rate // OPUS_GRANULE_RATE
    else:
        return None
    if not rate or not channels:
        return None
    return AudioHeader("OGG", subtype, channels, rate, frames, size), tail


def read_header(path: str) -> AudioHeader:
    """Read ``path``'s header only. Raises AudioError("decode", ...) for a file that is
    missing, empty, unreadable, truncated (see ``truncation``) or has more than
    MAX_CHANNELS channels."""
    ogg = _ogg_header(path)
    header = _header_by_libsndfile(path) if ogg is None else ogg[0]
    if header.channels > MAX_CHANNELS:
        detail = f"{header.channels} channels; mono and stereo are mixed down, more are not"
        raise AudioError("decode", "too many channels", detail)
    try:
        if ogg is not None:
            short = _ogg_shortfall(ogg[1])
        else:
            short = truncation(path, header.format, header.num_bytes)
    except OSError as error:
        raise AudioError("decode", "unreadable audio", str(error)) from error
    if short is not None:
        raise AudioError("decode", "truncated audio", short)
    return header


def _header_by_libsndfile(path: str) -> AudioHeader:
    handle, stream = _open_checked(path)
    try:
        return AudioHeader(
            format=str(handle.format),
            subtype=str(handle.subtype),
            channels=int(handle.channels),
            sample_rate=int(handle.samplerate),
            frames=max(0, int(handle.frames)),
            num_bytes=storage.getsize(path),
        )
    finally:
        handle.close()
        if stream is not None:
            stream.close()


# FLAC copy-through (https://xiph.org/flac/format.html): "fLaC", then metadata blocks, each a
# 4-byte header (1 bit last-block flag, 7 bits type, 24 bits length) and its data; STREAMINFO
# (type 0, 34 bytes) comes first. Bytes 10..17 of STREAMINFO hold sample rate (20 bits),
# channels - 1 (3), bits per sample - 1 (5) and the total sample count (36; 0 = unknown).
FLAC_MARKER = b"fLaC"
FLAC_STREAMINFO, FLAC_SEEKTABLE = 0, 3
FLAC_COUNT_BLOCK_FRAMES = 4096  # a failed read loses one block: count in FLAC-frame steps
FLAC_VERIFY_BLOCK_FRAMES = 1 << 20  # 65 s at 16 kHz, 2 MiB: one read for a typical file
FLAC_KEPT_BLOCKS = frozenset({FLAC_STREAMINFO, FLAC_SEEKTABLE})  # tags, pictures, padding go


@dataclass(frozen=True)
class FlacStreamInfo:
    sample_rate: int
    channels: int
    bits_per_sample: int
    total_samples: int  # 0 when the encoder did not record it


def flac_metadata(data: bytes) -> tuple[FlacStreamInfo, bytes, int]:
    """(STREAMINFO, the kept metadata blocks re-chained, offset of the first audio frame).
    Raises AudioError("decode", "unreadable audio") when the metadata chain is malformed."""
    if not data.startswith(FLAC_MARKER):
        raise AudioError("decode", "unreadable audio", "FLAC: no fLaC marker at the start")
    offset, blocks, info = len(FLAC_MARKER), [], None
    last = False
    while not last:
        if offset + 4 > len(data):
            raise AudioError("decode", "unreadable audio", "FLAC: metadata runs past the end")
        last = bool(data[offset] & 0x80)
        kind = data[offset] & 0x7F
        length = int.from_bytes(data[offset + 1 : offset + 4], "big")
        body = data[offset + 4 : offset + 4 + length]
        if len(body) != length or kind == 127:
            raise AudioError("decode", "unreadable audio", "FLAC: malformed metadata block")
        if kind == FLAC_STREAMINFO and length >= 34:
            bits = int.from_bytes(body[10:18], "big")
            info = FlacStreamInfo(
                sample_rate=bits >> 44,
                channels=((bits >> 41) & 0x7) + 1,
                bits_per_sample=((bits >> 36) & 0x1F) + 1,
                total_samples=bits & ((1 << 36) - 1),
            )
        if kind in FLAC_KEPT_BLOCKS:
            blocks.append((kind, body))
        offset += 4 + length
    if info is None or blocks[0][0] != FLAC_STREAMINFO:
        raise AudioError("decode", "unreadable audio", "FLAC: STREAMINFO is not the first block")
    chain = b"".join(
        bytes([kind | (0x80 if i == len(blocks) - 1 else 0)]) + len(body).to_bytes(3, "big") + body
        for i, (kind, body) in enumerate(blocks)
    )
    return info, chain, offset


def _count_decoded_frames(
    data: bytes, block_frames: int = FLAC_COUNT_BLOCK_FRAMES
) -> tuple[int, str | None]:
    """Decode a FLAC in reads of ``block_frames``: (frames decoded, libsndfile's error or
    None). Small reads count what really decodes where one large read fails outright on a
    short file; a read costs a few microseconds of soundfile bookkeeping, so the clean case
    is decoded in large reads first (``_verified_frames``)."""
    import soundfile as sf

    decoded = 0
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            buffer = np.empty((block_frames, handle.channels), dtype=np.int16)
            while count := len(handle.read(out=buffer)):
                decoded += count
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        return decoded, str(error)
    return decoded, None


def _verified_frames(data: bytes, declared: int) -> tuple[int, str | None]:
    """The frames a full decode of ``data`` yields and the error that stopped it, if any:
    large reads when all is well (the decode equals ``declared``, STREAMINFO's count); any
    other outcome is counted again in FLAC-frame steps, so a bad file's numbers are exact."""
    if declared:
        decoded, failure = _count_decoded_frames(data, FLAC_VERIFY_BLOCK_FRAMES)
        if failure is None and decoded == declared:
            return decoded, None
    return _count_decoded_frames(data)


def copy_flac(data: bytes, config: AudioConfig, verify: bool = True) -> EncodedAudio:
    """A FLAC file that is already mono, 16-bit at the build rate, as its own frames with only
    STREAMINFO and SEEKTABLE kept. With ``verify`` it is fully decoded first: that validates
    every frame and gives the exact sample count, which must equal STREAMINFO's when that is
    recorded. Without, the count is STREAMINFO's. Raises AudioError for bad or odd files."""
    info, chain, frames_at = flac_metadata(data)
    if (info.channels, info.bits_per_sample, info.sample_rate) != (1, 16, config.sample_rate):
        detail = f"{info.channels} ch, {info.bits_per_sample} bit, {info.sample_rate} Hz"
        raise AudioError("decode", "not a copyable FLAC", detail)
    num_samples = info.total_samples
    if verify or not num_samples:
        decoded, failure = _verified_frames(data, num_samples)
        if num_samples and decoded < num_samples:
            detail = f"STREAMINFO says {num_samples} samples, {decoded} decoded"
            raise AudioError("decode", "truncated audio", detail)
        if failure is not None:
            raise AudioError("decode", "unreadable audio", failure)
        if num_samples and decoded != num_samples:
            detail = f"STREAMINFO says {num_samples} samples, {decoded} decoded"
            raise AudioError("decode", "length mismatch", detail)
        num_samples = decoded
    _check_duration(num_samples / config.sample_rate, config)
    return EncodedAudio(
        flac=FLAC_MARKER + chain + data[frames_at:],
        num_samples=num_samples,
        sample_rate=config.sample_rate,
        source_sample_rate=info.sample_rate,
    )


def process_file(
    path: str, requests: Sequence[Sequence[Span]], config: AudioConfig
) -> Iterator[EncodedAudio | AudioError]:
    """Cut every request (a list of spans) from one file, opened and decoded once.

    Yields one result per request, in order, as soon as it is encoded (a file cut into many
    segments is never held encoded at once); a file that cannot be opened fails them all.
    """
    try:
        reader = SpanReader(path)
    except AudioError as error:
        yield from [error] * len(requests)
        return
    if reader.channels > MAX_CHANNELS:
        reader.close()
        detail = f"{reader.channels} channels; mono and stereo are mixed down, more are not"
        yield from [AudioError("decode", "too many channels", detail)] * len(requests)
        return
    with reader:
        for spans in requests:
            try:
                samples, rate = read_spans(reader, spans)
                yield finish(samples, rate, config)
            except AudioError as error:
                yield error


def process(
    path: str, start_s: float | None, end_s: float | None, config: AudioConfig
) -> EncodedAudio:
    """Decode + resample + validate + encode one span. Raises AudioError(stage, reason)."""
    [result] = process_file(path, [[(start_s, end_s)]], config)
    if isinstance(result, AudioError):
        raise result
    return result
