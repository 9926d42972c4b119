"""The benchmark corpus: espeak-ng speech in six languages, in the Common Voice layout.

Real synthesized speech (FLAC cost depends on the signal), 48 kHz MP3 clips like Common Voice,
plus a 16 kHz FLAC variant of the same clips. Generated once into benchmarks/.cache/ (reused
when present). Without espeak-ng (``apt-get install espeak-ng``) the demo's speech-like
synthesizer is used and the report says so.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")
WORDS = {
    "en": "the speech corpus model data voice language people city river morning yesterday "
    "because small great happy under window letter music station".split(),
    "de": "der die das sprache stimme stadt fluss morgen gestern weil klein gross glücklich "
    "unter fenster brief musik bahnhof heute".split(),
    "fr": "le la les langue voix ville rivière matin hier parce petit grand heureux sous "
    "fenêtre lettre musique gare aujourd'hui".split(),
    "es": "el la los lengua voz ciudad río mañana ayer porque pequeño grande feliz bajo "
    "ventana carta música estación hoy".split(),
    "pl": "mowa głos miasto rzeka rano wczoraj ponieważ mały duży szczęśliwy pod okno list "
    "muzyka dworzec dzisiaj język ludzie".split(),
    "hi": "भाषा आवाज़ शहर नदी सुबह कल क्योंकि छोटा बड़ा खुश नीचे खिड़की पत्र संगीत स्टेशन आज लोग "
    "मॉडल डेटा".split(),
}
HEADER = "\t".join(
    "client_id path sentence up_votes down_votes age gender accents variant locale segment".split()
)


def _sentence(rng: random.Random, locale: str) -> str:
    return " ".join(rng.choice(WORDS[locale]) for _ in range(rng.randint(8, 16))) + "."


def _speech(locale: str, text: str, seed: int) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng"):
        raw = subprocess.run(
            ["espeak-ng", "-v", locale, "-s", str(150 + seed % 40), "--stdout", text],
            capture_output=True,
            check=True,
        ).stdout
        import io

        import soundfile as sf

        audio, rate = sf.read(io.BytesIO(raw), dtype="float32")
        return audio, rate
    from voxshard.pipelines.demo import speech_like

    return speech_like(4.0 + (seed % 30) / 10.0, seed), 48000


def _clip(job: tuple[str, str, int, str, str]) -> float:
    import soundfile as sf
    import soxr

    locale, text, seed, mp3_path, flac_path = job
    audio, rate = _speech(locale, text, seed)
    audio = 0.9 * audio / max(1e-6, float(np.max(np.abs(audio))))
    sf.write(
        mp3_path, soxr.resample(audio, rate, 48000), 48000, format="MP3", subtype="MPEG_LAYER_III"
    )
    sf.write(flac_path, soxr.resample(audio, rate, 16000), 16000, format="FLAC", subtype="PCM_16")
    return len(audio) / rate


def corpus(name: str, hours: float, workers: int = 2) -> tuple[str, str, dict[str, float]]:
    """(mp3 root, flac root, info) of a cached corpus of about ``hours`` of speech."""
    root = os.path.join(CACHE, name)
    mp3_root, flac_root = os.path.join(root, "mp3"), os.path.join(root, "flac")
    done = os.path.join(root, "DONE")
    if os.path.exists(done):
        with open(done) as handle:
            seconds, engine = handle.read().split()
        clip_durations(mp3_root, flac_root)
        return mp3_root, flac_root, {"hours": float(seconds) / 3600, "engine": engine}
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(name)
    per_clip_s = 4.5  # espeak at these settings: about 4-5 s a sentence
    count = int(hours * 3600 / per_clip_s)
    jobs, rows = [], {locale: [] for locale in WORDS}
    for index in range(count):
        locale = list(WORDS)[index % len(WORDS)]
        text = _sentence(rng, locale)
        clip = f"common_voice_{locale}_{index}"
        for base in (mp3_root, flac_root):
            os.makedirs(os.path.join(base, locale, "clips"), exist_ok=True)
        jobs.append(
            (
                locale,
                text,
                index,
                os.path.join(mp3_root, locale, "clips", f"{clip}.mp3"),
                os.path.join(flac_root, locale, "clips", f"{clip}.flac"),
            )
        )
        rows[locale].append((f"{index % 40:02d}".ljust(64, "a"), clip, text))
    with ProcessPoolExecutor(workers) as pool:
        seconds = sum(pool.map(_clip, jobs, chunksize=16))
    for base, extension in ((mp3_root, "mp3"), (flac_root, "flac")):
        for locale, items in rows.items():
            with open(os.path.join(base, locale, "train.tsv"), "w", encoding="utf-8") as handle:
                handle.write(HEADER + "\n")
                for client, clip, text in items:
                    handle.write(
                        f"{client}\t{clip}.{extension}\t{text}\t2\t0\t\t\t\t\t{locale}\t\n"
                    )
    engine = "espeak-ng" if shutil.which("espeak-ng") else "speech-like-synthesizer"
    clip_durations(mp3_root, flac_root)
    with tempfile.NamedTemporaryFile("w", dir=root, delete=False) as handle:
        handle.write(f"{seconds} {engine}")
    os.replace(handle.name, done)
    return mp3_root, flac_root, {"hours": seconds / 3600, "engine": engine}


# MLS has no Hindi: the Hindi voice's segments are filed as Dutch (the codec work is the same)
MLS_LANGUAGES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "pl": "polish",
    "hi": "dutch",
}
MLS_METAINFO = (
    " SPEAKER   |   GENDER   | PARTITION  |  MINUTES   |  BOOK ID   |  TITLE  | CHAPTER\n"
)


def mls_corpus(name: str, hours: float, segment_s: float = 15.0) -> tuple[str, dict[str, float]]:
    """(root, info): the ``corpus(name, hours)`` speech in the MLS FLAC layout, its clips of
    one language concatenated into segments of about ``segment_s`` (MLS's run 10-20 s):
    ROOT/mls_<language>/train/{audio/<speaker>/<book>/<id>.flac, transcripts.txt}."""
    import soundfile as sf

    _mp3, flac_root, info = corpus(name, hours)
    root = os.path.join(CACHE, f"{name}-mls")
    done = os.path.join(root, "DONE")
    if os.path.exists(done):
        with open(done) as handle:
            return root, {"hours": float(handle.read()) / 3600, "engine": info["engine"]}
    shutil.rmtree(root, ignore_errors=True)
    seconds = 0.0
    for locale, language in MLS_LANGUAGES.items():
        folder = os.path.join(root, f"mls_{language}")
        speaker, book = "4000", "5000"
        os.makedirs(os.path.join(folder, "train", "audio", speaker, book))
        with open(os.path.join(folder, "metainfo.txt"), "w", encoding="utf-8") as handle:
            handle.write(MLS_METAINFO)
            handle.write(
                f"   {speaker}    |     F      |   train    |   600.000  |   {book}   | b | 1\n"
            )
        with open(os.path.join(flac_root, locale, "train.tsv"), encoding="utf-8") as handle:
            rows = [line.rstrip("\n").split("\t") for line in handle][1:]
        lines, pending, texts = [], [], []
        for row in rows:
            audio, rate = sf.read(os.path.join(flac_root, locale, "clips", row[1]), dtype="int16")
            pending.append(audio)
            texts.append(row[2])
            if sum(len(p) for p in pending) / rate >= segment_s or row is rows[-1]:
                utterance = f"{speaker}_{book}_{len(lines):06d}"
                segment = np.concatenate(pending)
                path = os.path.join(folder, "train", "audio", speaker, book, f"{utterance}.flac")
                sf.write(path, segment, rate, format="FLAC", subtype="PCM_16")
                seconds += len(segment) / rate
                lines.append(f"{utterance}\t{' '.join(texts)}")
                pending, texts = [], []
        with open(
            os.path.join(folder, "train", "transcripts.txt"), "w", encoding="utf-8"
        ) as handle:
            handle.write("\n".join(lines) + "\n")
    with open(done, "w") as handle:
        handle.write(str(seconds))
    return root, {"hours": seconds / 3600, "engine": info["engine"]}


def clip_durations(mp3_root: str, flac_root: str) -> None:
    """Common Voice's clip_durations.tsv (releases >= 16.1: clip TAB duration[ms]) for each
    locale of the MP3 tree, from the exact lengths of the FLAC twins."""
    import soundfile as sf

    for locale in WORDS:
        path = os.path.join(mp3_root, locale, "clip_durations.tsv")
        if os.path.exists(path):
            continue
        lines = ["clip\tduration[ms]"]
        for name in sorted(os.listdir(os.path.join(flac_root, locale, "clips"))):
            info = sf.info(os.path.join(flac_root, locale, "clips", name))
            clip = name[: -len(".flac")] + ".mp3"
            lines.append(f"{clip}\t{round(1000 * info.frames / info.samplerate)}")
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
