from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from conftest import tone, write_audio
from voxshard.pipelines.audio import AudioConfig, SpanReader, decode, process, resample, to_int16
from voxshard.schemas import AudioError

CONFIG = AudioConfig(sample_rate=16000, min_duration_s=0.2, max_duration_s=30.0)


def decode_flac(payload: bytes) -> tuple[np.ndarray, int]:
    data, rate = sf.read(io.BytesIO(payload), dtype="int16")
    return data, rate


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def test_flac_at_build_rate_round_trips_bit_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(16000) * 6000).clip(-32768, 32767).astype(np.int16)
    pcm[:3] = [-32768, 32767, 0]  # extremes survive too
    path = tmp_path / "a.flac"
    sf.write(path, pcm, 16000, subtype="PCM_16")
    encoded = process(str(path), None, None, CONFIG)
    data, rate = decode_flac(encoded.flac)
    assert rate == 16000 and encoded.num_samples == 16000
    np.testing.assert_array_equal(data, pcm)
    info = sf.info(io.BytesIO(encoded.flac))
    assert (info.format, info.subtype, info.channels) == ("FLAC", "PCM_16", 1)


def test_wav_44k_resampled_matches_an_independent_resampler(tmp_path: Path) -> None:
    source = tone(440.0, 1.0, 44100)
    path = write_audio(tmp_path / "a.wav", source, 44100, "wav")
    encoded = process(str(path), None, None, CONFIG)
    data, _ = decode_flac(encoded.flac)
    assert encoded.num_samples == 16000
    assert encoded.source_sample_rate == 44100
    reference = resample_poly(sf.read(path, dtype="float32")[0], 160, 441)
    # the same signal to within 16-bit rounding and filter differences
    assert np.max(np.abs(data / 32768.0 - reference[: len(data)])) < 2e-3
    assert correlation(data, reference) > 0.9999


@pytest.mark.parametrize(
    ("codec", "rate"),
    [
        ("mp3", 48000),
        ("mp3", 32000),
        ("ogg", 48000),
        ("opus", 48000),
        ("opus", 16000),
        ("flac", 22050),
        ("sph", 8000),
    ],
)
def test_codecs_decode_at_their_true_rate(tmp_path: Path, codec: str, rate: int) -> None:
    source = tone(500.0, 1.0, rate)
    path = write_audio(tmp_path / f"a.{codec}", source, rate, codec)
    samples, decoded_rate = decode(str(path))
    assert decoded_rate == rate  # Opus: the rate in the file header, never assumed 48 kHz
    assert abs(len(samples) - len(source)) <= 2 * 1152  # lossy codecs pad at most a few frames
    encoded = process(str(path), None, None, CONFIG)
    data, _ = decode_flac(encoded.flac)
    spectrum = np.abs(np.fft.rfft(data.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 16000 / len(data)
    assert abs(peak_hz - 500.0) < 3.0


@pytest.mark.parametrize("subtype", ["ULAW", "ALAW", "PCM_16"])
def test_sphere_codings(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / "a.sph"
    sf.write(path, tone(300.0, 0.5, 8000), 8000, format="NIST", subtype=subtype)
    assert path.read_bytes().startswith(b"NIST_1A")
    samples, rate = decode(str(path))
    assert rate == 8000 and len(samples) == 4000
    assert correlation(samples, tone(300.0, 0.5, 8000)) > 0.999


def test_shorten_sphere_is_named(tmp_path: Path) -> None:
    header = (
        b"NIST_1A\n   1024\nsample_count -i 8000\nsample_rate -i 8000\nchannel_count -i 1\n"
        b"sample_coding -s26 pcm,embedded-shorten-v2.00\nsample_n_bytes -i 2\nend_head\n"
    ).ljust(1024, b" ")
    path = tmp_path / "a.sph"
    path.write_bytes(header + b"ajkg" + bytes(range(200)))
    with pytest.raises(AudioError) as info:
        decode(str(path))
    assert (
        info.value.reason == "shorten-compressed SPHERE is not supported; convert it with sph2pipe"
    )


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    left = tone(300.0, 0.5, 16000)
    path = tmp_path / "s.wav"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), 16000, subtype="FLOAT")
    samples, _ = decode(str(path))
    np.testing.assert_allclose(samples, 0.75 * left, atol=1e-7)


def test_segment_reads_only_the_span(tmp_path: Path) -> None:
    source = np.concatenate([tone(200, 1.0, 16000), tone(1000, 1.0, 16000)])
    path = write_audio(tmp_path / "long.flac", source, 16000, "flac")
    samples, _ = decode(str(path), 1.0, 1.5)
    assert len(samples) == 8000
    np.testing.assert_allclose(samples, source[16000:24000], atol=1 / 32768)
    with pytest.raises(AudioError, match="after the end"):
        decode(str(path), 5.0, 6.0)


@pytest.mark.parametrize(
    ("setup", "stage", "reason"),
    [
        ("missing", "decode", "missing audio file"),
        ("empty", "decode", "empty audio file (0 bytes)"),
        ("corrupt", "decode", "unreadable audio"),
        ("nan", "validate", "non-finite samples (NaN or inf)"),
        ("short", "validate", "too short"),
        ("long", "validate", "too long"),
    ],
)
def test_bad_audio_raises_with_stage_and_reason(
    tmp_path: Path, setup: str, stage: str, reason: str
) -> None:
    path = tmp_path / "x.wav"
    if setup == "empty":
        path.write_bytes(b"")
    elif setup == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(100))
    elif setup == "nan":
        data = tone(300.0, 0.5, 16000)
        data[100] = np.nan
        sf.write(path, data, 16000, subtype="FLOAT")
    elif setup == "short":
        write_audio(path, tone(300.0, 0.1, 16000), 16000, "wav")
    elif setup == "long":
        write_audio(path, tone(300.0, 31.0, 8000), 8000, "wav")
    with pytest.raises(AudioError) as info:
        process(str(path), None, None, CONFIG)
    assert (info.value.stage, info.value.reason) == (stage, reason)


def test_to_int16_scaling_and_clipping() -> None:
    pcm, clipped = to_int16(np.array([0.0, 0.5, -1.0, 1.0, 1.5], dtype=np.float32))
    assert pcm.tolist() == [0, 16384, -32768, 32767, 32767]
    assert clipped == 2


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_one_non_finite_sample_anywhere_rejects_the_utterance(
    rate: int, value: float, where: float
) -> None:
    """Found after resampling (in the scaled samples' extremes): one bad sample at the
    first, middle or last position, at any source rate, still poisons the output."""
    from voxshard.pipelines.audio import finish

    samples = np.full(rate, 0.1, dtype=np.float32)
    samples[int(where * rate) if where != -1 else -1] = value
    with pytest.raises(AudioError, match="non-finite samples"):
        finish(samples, rate, CONFIG)
    with pytest.raises(AudioError, match="non-finite samples"):
        to_int16(samples)


def test_resample_identity_and_length() -> None:
    x = tone(100, 1.0, 48000)
    assert resample(x, 48000, 48000) is x
    assert len(resample(x, 48000, 16000)) == 16000


@pytest.mark.parametrize("codec", ["ogg", "mp3", "opus", "flac", "sph", "wav"])
@pytest.mark.parametrize("channels", [1, 2])
def test_span_reader_is_sample_exact_in_any_order(
    tmp_path: Path, codec: str, channels: int
) -> None:
    """libsndfile's Vorbis and MP3 seeks drift after a read; SpanReader must not."""
    rng = np.random.default_rng(3)
    rate = 16000
    signal = np.concatenate([tone(float(rng.integers(200, 3000)), 0.5, rate) for _ in range(16)])
    if channels == 2:
        signal = np.stack([signal, 0.5 * signal[::-1]], axis=1)
    path = write_audio(tmp_path / f"a.{codec}", signal, rate, codec)
    full, _ = sf.read(path, dtype="float32")  # one read call: the reference decode
    if channels == 2:
        full = full.mean(axis=1, dtype=np.float32)
    spans = [(16000, 40000), (48000, 67200), (8000, 9000), (100000, 101000), (0, 500)]
    with SpanReader(str(path)) as reader:
        for start, stop in spans:
            # 1e-6: float rounding of the downmix; one sample of misalignment shows as ~0.1
            np.testing.assert_allclose(reader.read_frames(start, stop), full[start:stop], atol=1e-6)
        assert len(reader.read_frames(len(full) + 10, None)) == 0


def test_long_mp3_decodes_like_one_full_read(tmp_path: Path) -> None:
    """libsndfile loses MP3 samples at read-call boundaries: a 5 s 48 kHz clip spans many
    blocks, and must still equal one full read, then resample cleanly."""
    source = tone(440.0, 5.0, 48000)
    path = write_audio(tmp_path / "long.mp3", source, 48000, "mp3")
    samples, rate = decode(str(path))
    full, _ = sf.read(path, dtype="float32")
    assert rate == 48000 and len(samples) == len(full)
    np.testing.assert_allclose(samples, full, atol=1e-6)
    assert correlation(samples, source) > 0.999


def test_an_hour_long_session_is_cut_without_decoding_it_whole(tmp_path: Path) -> None:
    """Three 2-second segments of a 1-hour 16 kHz FLAC session: exact samples, and the
    memory Python and numpy allocate stays far below the 230 MB a whole decode would take."""
    import tracemalloc

    from voxshard.pipelines.audio import process_file

    rate = 16000
    minute = np.arange(60 * rate, dtype=np.int64)
    path = tmp_path / "session.flac"
    with sf.SoundFile(path, "w", rate, 1, "PCM_16", format="FLAC") as handle:
        for index in range(60):  # each minute a different, known sawtooth
            handle.write(((minute * (index + 3)) % 2000 - 1000).astype(np.int16))
    starts_s = [59 * 60 + 30.0, 10 * 60.0, 30 * 60 + 0.25]  # out of order on purpose
    tracemalloc.start()
    results = list(process_file(str(path), [[(s, s + 2.0)] for s in starts_s], CONFIG))
    _current, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak_bytes < 16 * 2**20
    for start_s, result in zip(starts_s, results, strict=True):
        assert not isinstance(result, AudioError)
        samples, got_rate = decode_flac(result.flac)
        first = int(start_s * rate)
        index, offset = divmod(first, 60 * rate)
        expected = ((np.arange(offset, offset + 2 * rate) * (index + 3)) % 2000 - 1000).astype(
            np.int16
        )
        assert got_rate == rate and np.array_equal(samples, expected)


def test_many_segments_of_one_file_stream_through_in_bounded_memory(tmp_path: Path) -> None:
    """Results come one at a time: 2,400 segments of a 20-minute file, consumed as they come,
    never hold the file's encoded segments at once (that alone is ~20 MiB)."""
    import tracemalloc

    from voxshard.pipelines.audio import process_file

    rate = 16000
    path = tmp_path / "session.flac"
    noise = np.random.default_rng(0).integers(-3000, 3000, 20 * 60 * rate).astype(np.int16)
    sf.write(path, noise, rate, subtype="PCM_16")
    requests = [[(i * 0.5, i * 0.5 + 0.5)] for i in range(2400)]
    tracemalloc.start()
    count, total_bytes = 0, 0
    for result in process_file(str(path), requests, CONFIG):
        assert not isinstance(result, AudioError)
        count += 1
        total_bytes += len(result.flac)
    _current, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 2400 and total_bytes > 20 * 2**20
    assert peak_bytes < 4 * 2**20
