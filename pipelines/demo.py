"""Generate the demo corpus: a small multilingual Common Voice tree with real 48 kHz MP3 clips.

Audio is speech-like (a glottal pulse train shaped by moving vowel formants, syllable
envelopes, a wandering pitch), different for every clip and reproducible from the seed. The
tree mixes TSV generations (v1-4, v13-16, v17+) and both gender vocabularies, and holds a few
deliberately bad rows so a build shows its rejects.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEMO_RATE_HZ = 48000
HEADERS = {
    "v1": ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"],
    "v13": [
        "client_id",
        "path",
        "sentence",
        "up_votes",
        "down_votes",
        "age",
        "gender",
        "accents",
        "variant",
        "locale",
        "segment",
    ],
    "v17": [
        "client_id",
        "path",
        "sentence_id",
        "sentence",
        "sentence_domain",
        "up_votes",
        "down_votes",
        "age",
        "gender",
        "accents",
        "variant",
        "locale",
        "segment",
    ],
}
GENDERS = {
    "v1": ["male", "female", "other", ""],
    "v13": ["male", "female", "", "other"],
    "v17": ["male_masculine", "female_feminine", "do_not_wish_to_say", "non-binary"],
}
AGES = ["twenties", "thirties", "fourties", "", "teens", "fifties"]


@dataclass(frozen=True)
class DemoLanguage:
    locale: str
    generation: str
    sentences: tuple[str, ...]


LANGUAGES = (
    DemoLanguage(
        "en",
        "v17",
        (
            "The quick brown fox jumps over the lazy dog.",
            'She said "hello and walked away.',
            "Speech corpora need clean metadata.",
            "Every shard is written in a deterministic order.",
            "The weather in Lyon was mild this week.",
        ),
    ),
    DemoLanguage(
        "pl",
        "v13",
        (
            "Zażółć gęślą jaźń.",
            "W Szczebrzeszynie chrząszcz brzmi w trzcinie.",
            "Dzień dobry, jak się masz?",
            "Mowa jest sygnałem o bogatej strukturze.",
        ),
    ),
    DemoLanguage(
        "hi",
        "v17",
        (
            "होम्योपथी में arthritis treatment होता है।",
            "मैं कल दिल्ली जा रहा हूँ।",
            "Facebookपर नया post डाला।",
            "हिंदी एक सुंदर भाषा है।",
        ),
    ),
    DemoLanguage(
        "ru",
        "v1",
        (
            "Съешь же ещё этих мягких французских булок.",
            "Москва находится на реке Москве.",
            "Речь как сигнал очень богата.",
        ),
    ),
    DemoLanguage(
        "zh-CN",
        "v13",
        (
            "今天天气很好。",
            "我们在北京学习语音识别。",
            "每个分片都按顺序写入。",
        ),
    ),
)
# (vowel) formant frequencies in Hz: a rough, speaker-neutral vowel space
VOWELS = np.array(
    [
        [730, 1090, 2440],
        [270, 2290, 3010],
        [300, 870, 2240],
        [530, 1840, 2480],
        [570, 840, 2410],
        [660, 1720, 2410],
        [440, 1020, 2240],
        [490, 1350, 1690],
    ],
    dtype=np.float64,
)


# What makes the demo's languages tell apart (language ID above chance, as with real
# speech): each draws its syllables from its own vowel inventory (indices into VOWELS) at its
# own syllable duration range (s). Speakers still vary (pitch, a formant scale per syllable).
LANGUAGE_PROFILES: dict[str, tuple[tuple[int, ...], tuple[float, float]]] = {
    "en": ((0, 3, 5, 6), (0.12, 0.22)),
    "pl": ((1, 2, 4), (0.15, 0.25)),
    "hi": ((0, 1, 2, 7), (0.18, 0.30)),
    "ru": ((3, 4, 6, 7), (0.12, 0.20)),
    "zh-CN": ((1, 5, 7), (0.20, 0.30)),
    "de": ((2, 3, 6), (0.14, 0.24)),
    "fr": ((1, 4, 5), (0.12, 0.18)),
    "es": ((0, 1, 2), (0.10, 0.16)),
    "it": ((0, 4, 7), (0.16, 0.26)),
    "zu": ((0, 2, 3, 4), (0.20, 0.30)),
}
ANY_LANGUAGE = (tuple(range(len(VOWELS))), (0.12, 0.30))


def speech_like(
    duration_s: float, seed: int, rate_hz: int = DEMO_RATE_HZ, language: str | None = None
) -> npt.NDArray[np.float32]:
    """A reproducible, speech-like signal: voiced syllables with formants, pitch and pauses;
    with ``language`` (a LANGUAGE_PROFILES tag), that language's vowels and syllable rate."""
    vowels, (shortest_s, longest_s) = LANGUAGE_PROFILES.get(language or "", ANY_LANGUAGE)
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate_hz)
    t = np.arange(n) / rate_hz
    f0_base = rng.uniform(95.0, 240.0)
    f0 = f0_base * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / rate_hz
    # syllables: 120-300 ms, each with a vowel and a raised-cosine envelope; some are pauses
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(bounds[-1] + int(rng.uniform(shortest_s, longest_s) * rate_hz))
    formants = np.empty((n, 3))
    envelope = np.zeros(n)
    for start, stop in itertools.pairwise(bounds):
        stop = min(stop, n)
        formants[start:stop] = VOWELS[vowels[rng.integers(len(vowels))]] * rng.uniform(0.9, 1.1)
        if rng.random() > 0.15:
            envelope[start:stop] = np.sin(np.linspace(0, np.pi, stop - start)) ** 0.7
    # harmonic gains follow the formants at a 1 ms control rate (cheap, smooth enough)
    step = rate_hz // 1000
    control_f0 = f0[::step, None]
    control_formants = formants[::step]
    harmonics = np.arange(1, int(4000 / f0_base))
    harmonic_hz = control_f0 * harmonics[None, :]
    gains = (
        sum(
            np.exp(-0.5 * ((harmonic_hz - control_formants[:, j, None]) / (60.0 + 40 * j)) ** 2)
            / (j + 1)
            for j in range(3)
        )
        / np.sqrt(harmonics)[None, :]
    )
    signal = np.zeros(n)
    for index, k in enumerate(harmonics):
        signal += np.repeat(gains[:, index], step)[:n] * np.sin(k * phase)
    signal *= envelope
    signal += 0.01 * rng.standard_normal(n) * (envelope > 0)
    peak = float(np.max(np.abs(signal))) or 1.0
    return (0.5 * signal / peak).astype(np.float32)


def write_mp3(path: str, samples: npt.NDArray[np.float32], rate_hz: int = DEMO_RATE_HZ) -> None:
    import soundfile as sf

    sf.write(path, samples, rate_hz, format="MP3", subtype="MPEG_LAYER_III")


def _row(header: Sequence[str], values: dict[str, str]) -> str:
    return "\t".join(values.get(name, "") for name in header)


def generate_commonvoice_demo(
    root: str, clips_per_language: int = 20, seed: int = 0
) -> dict[str, int]:
    """Write the demo tree under ``root`` (cv-corpus layout). Returns counts of what it holds."""
    clip_id = 1000
    counts = {"clips": 0, "bad_rows": 0}
    for lang_index, language in enumerate(LANGUAGES):
        folder = os.path.join(root, language.locale)
        os.makedirs(os.path.join(folder, "clips"), exist_ok=True)
        header = HEADERS[language.generation]
        rows: dict[str, list[str]] = {"train": [], "dev": [], "test": [], "validated": []}
        for i in range(clips_per_language):
            clip_id += 1
            clip = f"common_voice_{language.locale}_{clip_id}.mp3"
            duration_s = 1.0 + ((clip_id * 7919) % 2500) / 1000.0
            audio = speech_like(duration_s, seed + clip_id, language=language.locale)
            write_mp3(os.path.join(folder, "clips", clip), audio)
            speaker = f"{lang_index:02x}{i % 5:02x}".ljust(128, "a")
            split = "train" if i < clips_per_language * 0.7 else ("dev" if i % 2 else "test")
            values = {
                "client_id": speaker,
                "path": clip,
                "sentence_id": f"{clip_id:x}",
                "sentence": language.sentences[i % len(language.sentences)],
                "sentence_domain": "",
                "up_votes": "2",
                "down_votes": "0",
                "age": AGES[i % len(AGES)],
                "gender": GENDERS[language.generation][i % 4],
                "accent": "",
                "accents": "",
                "variant": "",
                "locale": language.locale,
                "segment": "",
            }
            rows[split].append(_row(header, values))
            rows["validated"].append(_row(header, values))
            counts["clips"] += 1
        bad = _bad_rows(language, lang_index, header, folder)
        rows["train"].extend(bad)
        counts["bad_rows"] += len(bad)
        for split, lines in rows.items():
            with open(os.path.join(folder, f"{split}.tsv"), "w", encoding="utf-8") as handle:
                handle.write("\t".join(header) + "\n")
                handle.writelines(line + "\n" for line in lines)
    return counts


def _bad_rows(
    language: DemoLanguage, lang_index: int, header: Sequence[str], folder: str
) -> list[str]:
    """One deliberately bad row in four of the languages: what a real corpus has too."""
    base = {"client_id": "f" * 128, "sentence": language.sentences[0], "locale": language.locale}
    if lang_index == 0:  # listed, but the clip was never downloaded
        return [_row(header, {**base, "path": "common_voice_en_missing.mp3"})]
    if lang_index == 1:  # a truncated download: bytes that are not audio
        with open(os.path.join(folder, "clips", "common_voice_pl_corrupt.mp3"), "wb") as handle:
            handle.write(b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 3)
        return [_row(header, {**base, "path": "common_voice_pl_corrupt.mp3"})]
    if lang_index == 2:  # a row broken by a stray tab in the sentence
        return [_row(header, {**base, "path": "common_voice_hi_tab.mp3", "sentence": "टूटी\tपंक्ति"})]
    if lang_index == 3:  # an empty file
        open(os.path.join(folder, "clips", "common_voice_ru_empty.mp3"), "wb").close()
        return [_row(header, {**base, "path": "common_voice_ru_empty.mp3"})]
    return []


def _write(
    path: str, samples: npt.NDArray[np.float32], rate_hz: int, fmt: str, subtype: str
) -> None:
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, samples, rate_hz, format=fmt, subtype=subtype)


def _speech_at(
    rate_hz: int, duration_s: float, seed: int, language: str | None = None
) -> npt.NDArray[np.float32]:
    """speech_like at another rate (synthesized at 48 kHz, decimated by an integer factor)."""
    step = DEMO_RATE_HZ // rate_hz
    return speech_like(duration_s, seed, language=language)[::step].copy()


def generate_voxpopuli_demo(root: str, seed: int = 1) -> dict[str, int]:
    """Two plenary sessions (de, fr) as 16 kHz Ogg Vorbis, ASR rows with VAD pieces."""
    import gzip

    header = (
        "id_|paragraph_id|session_id|speaker_id|original_text|normed_text|decoded|"
        "start_time|end_time|cer|wer|vad|split|gender"
    )
    texts = {
        "de": ("Vielen Dank, Frau Präsidentin.", "Wir stimmen morgen ab."),
        "fr": ("Merci, Madame la Présidente.", "Nous voterons demain."),
    }
    counts = {"sessions": 0, "rows": 0}
    for index, (lang, sentences) in enumerate(texts.items()):
        session = f"2019011{index + 4}-0900-PLENARY-{index + 3}"
        _write(
            os.path.join(root, "raw_audios", lang, "2019", f"{session}_{lang}.ogg"),
            _speech_at(16000, 40.0, seed + index, language=lang),
            16000,
            "OGG",
            "VORBIS",
        )
        rows = [header]
        for n in range(8):
            start = 1.0 + 4.5 * n
            vad = f"[[{start:.2f}, {start + 1.6:.2f}], [{start + 1.9:.2f}, {start + 3.7:.2f}]]"
            split = "train" if n < 6 else ("dev" if n == 6 else "invalid")
            text = sentences[n % 2]
            rows.append(
                f"{session}-{lang}_20190114-09:{n:02d}:00_{n}|p{n}|{session}|{100 + n % 3}|"
                f"{text}|{text.lower().strip('.')}|x|{start}|{start + 3.7}|0|0|{vad}|"
                f"{split}|{'female' if n % 2 else 'male'}"
            )
            counts["rows"] += 1
        table = os.path.join(root, "transcribed_data", lang, f"asr_{lang}.tsv.gz")
        os.makedirs(os.path.dirname(table), exist_ok=True)
        with gzip.open(table, "wt", encoding="utf-8") as handle:
            handle.write("\n".join(rows) + "\n")
        counts["sessions"] += 1
    return counts


def generate_mls_demo(root: str, seed: int = 2) -> dict[str, int]:
    """Spanish in both releases (FLAC 16 kHz and Opus 48 kHz) and Italian as Opus only."""
    metainfo = (
        " SPEAKER   |   GENDER   | PARTITION  |  MINUTES   |  BOOK ID   |  TITLE  | CHAPTER\n"
        "   4000    |     F      |   train    |   10.000   |   5000     | Don Quijote | I\n"
        "   4001    |     M      |    dev     |   10.000   |   5001     | Niebla  | II\n"
    )
    releases = [
        ("mls_spanish", "flac", 16000, "FLAC", "PCM_16"),
        ("mls_spanish_opus", "opus", 48000, "OGG", "OPUS"),
        ("mls_italian_opus", "opus", 48000, "OGG", "OPUS"),
    ]
    counts = {"utterances": 0}
    for folder, extension, rate, fmt, subtype in releases:
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        with open(os.path.join(root, folder, "metainfo.txt"), "w", encoding="utf-8") as handle:
            handle.write(metainfo)
        for split, speaker, book, count in (
            ("train", "4000", "5000", 6),
            ("dev", "4001", "5001", 2),
        ):
            lines = []
            for seq in range(count):
                utterance = f"{speaker}_{book}_{seq:06d}"
                path = os.path.join(
                    root, folder, split, "audio", speaker, book, f"{utterance}.{extension}"
                )
                language = "it" if "italian" in folder else "es"
                audio = _speech_at(rate, 2.0 + seq % 3, seed + seq, language=language)
                _write(path, audio, rate, fmt, subtype)
                lines.append(f"{utterance}\tfrase número {seq} del libro")
                counts["utterances"] += 1
            with open(
                os.path.join(root, folder, split, "transcripts.txt"), "w", encoding="utf-8"
            ) as handle:
                handle.write("\n".join(lines) + "\n")
    return counts


def generate_babel_demo(root: str, seed: int = 3) -> dict[str, int]:
    """One Zulu conversation (inLine ulaw, outLine alaw SPHERE at 8 kHz) with real quirks."""
    pack = os.path.join(root, "BABEL_OP1_206", "conversational")
    sides = {"inLine": "ULAW", "outLine": "ALAW"}
    words = ("sawubona", "ngiyabonga", "yebo", "kunjalo", "kusasa", "salibonani")
    for side_index, (side, coding) in enumerate(sides.items()):
        stem = f"BABEL_OP1_206_12345_20120101_120000_{side}"
        _write(
            os.path.join(pack, "training", "audio", f"{stem}.sph"),
            _speech_at(8000, 30.0, seed + side_index, language="zu"),
            8000,
            "NIST",
            coding,
        )
        lines = []
        time_s = 0.0
        for n in range(9):
            lines.append(f"[{time_s:.3f}]")
            if n == 4:
                lines.append("<no-speech>")  # a silence-only segment: rejected
            else:
                lines.append(f"{words[n % 6]} <breath> {words[(n + side_index) % 6]} (())")
            time_s += 2.5 + (n % 3) * 0.5
        lines.append(f"[{time_s:.3f}]")
        folder = os.path.join(pack, "training", "transcription")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{stem}.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    demographics = os.path.join(pack, "reference_materials", "demographics.tsv")
    os.makedirs(os.path.dirname(demographics), exist_ok=True)
    with open(demographics, "w", encoding="utf-8") as handle:
        handle.write(
            "outputFn\tsessID\tdate\ttime\tspkrCode\tlineType\tdialect\tgen\tenvType\t"
            "age\tnetwork\tphoneModel\tsampleCount\tsampleRate\n"
        )
        handle.write(
            "BABEL_OP1_206_12345_20120101_120000_inLine.sph\t12345\t20120101\t120000\t"
            "12345\tinLine\tZulu-Natal\tF\tHOME\t25\tMTN\tNokia\t240000\t8000\n"
        )
    return {"conversation_sides": 2}
