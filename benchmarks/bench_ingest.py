"""Ingest, reading and memory, per audio hour, side by side in one run.

- voxshard build (FnApiRunner in-process, 1 worker) vs a plain Python loop doing the same work
  (soundfile decode, soxr HQ, FLAC encode, webdataset ShardWriter), on ~2 h, ~30 and ~15 min;
- vs the physical limit: decode + resample + encode alone in a tight loop;
- vs the previous design (PREVIOUS_DESIGN, unpacked with `git archive`: its packages were
  top-level, so it runs beside this one in the same process), on 16 kHz FLAC (now copied);
- bytes entering the GroupByKeys of the real graph (build_pipeline(measure_shuffle=True));
- per format (Vorbis, Opus 16k/48k, MP3, SPHERE, FLAC): marginal CPU-s per audio hour of this
  and the previous design, for the README's scale table;
- the fixed cost of a build in a fresh process (imports, graph construction);
- --workers 2 vs 1 (wall clock, with the load average recorded);
- vs lhotse Shar export of the same corpus (lhotse in its own venv under .cache);
- reading: the training loader's stream vs decode-only of the same bytes vs raw tar iteration;
- memory: peak RSS of a build of 1k vs 10k short utterances.
CPU seconds include child processes (workers).
"""

from __future__ import annotations

import glob
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREVIOUS_DESIGN = "02bebce"  # the last commit before "plan, then write each shard in one step"

from corpus import CACHE, corpus, mls_corpus  # noqa: E402


def cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(function: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds incl. children, wall seconds)."""
    cpu, wall = cpu_now(), time.perf_counter()
    function()
    return cpu_now() - cpu, time.perf_counter() - wall


def clips(root: str) -> list[tuple[str, str, str]]:
    """(locale, clip path, sentence) from the corpus's train.tsv files (Common Voice layout)
    or transcripts.txt files (MLS layout), in a fixed order."""
    items = []
    for transcripts in sorted(glob.glob(os.path.join(root, "mls_*", "train", "transcripts.txt"))):
        folder = os.path.dirname(transcripts)
        with open(transcripts, encoding="utf-8") as handle:
            for line in handle:
                utterance, text = line.rstrip("\n").split("\t", 1)
                speaker, book, _ = utterance.split("_")
                path = os.path.join(folder, "audio", speaker, book, f"{utterance}.flac")
                items.append((os.path.basename(os.path.dirname(folder)), path, text))
    for tsv in sorted(glob.glob(os.path.join(root, "*", "train.tsv"))):
        locale = os.path.basename(os.path.dirname(tsv))
        with open(tsv, encoding="utf-8") as handle:
            next(handle)
            for line in handle:
                fields = line.rstrip("\n").split("\t")
                items.append(
                    (locale, os.path.join(os.path.dirname(tsv), "clips", fields[1]), fields[2])
                )
    return items


def _process(path: str) -> bytes:
    import soundfile as sf
    import soxr

    audio, rate = sf.read(path, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000, quality="HQ")
    pcm = np.clip(np.rint(audio.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, 16000, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def limit(root: str) -> None:
    for _locale, path, _text in clips(root):
        _process(path)


def copy_limit(root: str) -> None:
    """What copying 16 kHz FLAC costs at least: read the bytes, decode them to validate."""
    import soundfile as sf

    for _locale, path, _text in clips(root):
        with open(path, "rb") as handle:
            sf.read(io.BytesIO(handle.read()), dtype="int16")


def plain_loop(root: str, out: str) -> None:
    import webdataset as wds

    os.makedirs(out, exist_ok=True)
    with wds.ShardWriter(os.path.join(out, "plain-%06d.tar"), maxsize=256e6, verbose=0) as sink:
        for locale, path, text in clips(root):
            key = os.path.splitext(os.path.basename(path))[0]
            record = {"key": key, "language": locale, "transcript": text}
            sink.write(
                {"__key__": key, "flac": _process(path), "json": json.dumps(record).encode()}
            )


def voxshard(root: str, out: str, workers: int, source: str = "commonvoice") -> None:
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.runner import run_build

    splits = ("train",) if source == "commonvoice" else None
    config = BuildConfig(source, root, out, splits=splits, workers=workers, max_error_rate=0.0)
    run_build(config, overwrite=True, progress_interval_s=None)


def previous_design() -> Callable[[str, str, str], None] | None:
    """The previous design's build, unpacked from git once; None outside a git checkout."""
    folder = os.path.join(CACHE, f"previous-{PREVIOUS_DESIGN}")
    if not os.path.exists(os.path.join(folder, "READY")):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", PREVIOUS_DESIGN], capture_output=True, check=False
        )
        if archive.returncode != 0:
            return None
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        # its pipelines/ was a namespace package, which any regular pipelines/ later on
        # sys.path (this checkout's, when the current folder is on it) would win over
        open(os.path.join(folder, "pipelines", "__init__.py"), "a").close()
        open(os.path.join(folder, "READY"), "w").close()
    if folder not in sys.path:
        sys.path.insert(0, folder)  # top-level schemas, corpora, pipelines, ... of that commit
    import importlib

    old = importlib.import_module("pipelines.build")

    def build(source: str, root: str, out: str) -> None:
        splits = ("train",) if source == "commonvoice" else None
        old.run_build(old.BuildConfig(source, root, out, splits=splits), overwrite=True)

    return build


def shuffle_bytes(root: str, out: str) -> dict[str, float]:
    """Bytes (pickled) entering each GroupByKey of the remote build graph, by its label.

    The remote graph's 16,384 buckets make batches of one or two items here, as at MASR
    scale: a step holds at most 16,384 pending items (batches.MAX_PENDING_ITEMS), about one
    per bucket, so compression has little to work with. (The in-process bucket count, 64,
    gives batches of ~25 items and about 0.6 of these bytes.)"""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from voxshard.corpora import get_corpus
    from voxshard.pipelines.build import REMOTE_BUCKETS, SHUFFLE_BYTES, build_pipeline
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.outdir import prepare_output, remove_work_dir

    config = BuildConfig("commonvoice", root, out, splits=("train",))
    prepare_output(config, overwrite=True)
    sources = get_corpus("commonvoice").list_sources(config.corpus_options())
    pipeline = beam.Pipeline(runner=FnApiRunner())
    build_pipeline(pipeline, config, sources, measure_shuffle=True, buckets=REMOTE_BUCKETS)
    result = pipeline.run()
    result.wait_until_finish()
    remove_work_dir(out)
    counters = result.metrics().query(MetricsFilter().with_namespace(SHUFFLE_BYTES))["counters"]
    return {counter.key.metric.name: float(counter.committed) for counter in counters}


FORMATS = {  # name -> (format, subtype, sample rate): the MASR sources' codecs
    "Vorbis 16k (VoxPopuli)": ("OGG", "VORBIS", 16000),
    "Opus 16k (MLS)": ("OGG", "OPUS", 16000),
    "Opus 48k": ("OGG", "OPUS", 48000),
    "MP3 48k (Common Voice)": ("MP3", "MPEG_LAYER_III", 48000),
    "SPHERE 8k u-law (BABEL)": ("NIST", "ULAW", 8000),
    "FLAC 16k (MLS)": ("FLAC", "PCM_16", 16000),
}


def format_corpus(flac_root: str, name: str, minutes: float) -> tuple[str, float]:
    """(manifest, hours): the first clips of ``flac_root`` worth ``minutes``, in one codec."""
    import soundfile as sf
    import soxr

    fmt, subtype, rate = FORMATS[name]
    folder = os.path.join(CACHE, "formats", f"{fmt}-{subtype}-{rate}-{minutes:g}")
    manifest = os.path.join(folder, "manifest.tsv")
    done = os.path.join(folder, "DONE")
    if not os.path.exists(done):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        seconds, lines = 0.0, ["path\tlanguage\tspeaker\ttranscript"]
        for locale, path, text in clips(flac_root):
            if seconds >= minutes * 60:
                break
            audio, source_rate = sf.read(path, dtype="float32")
            seconds += len(audio) / source_rate
            clip = f"{len(lines):06d}.{fmt.lower()}"
            sf.write(
                os.path.join(folder, clip),
                soxr.resample(audio, source_rate, rate),
                rate,
                format=fmt,
                subtype=subtype,
            )
            lines.append(f"{clip}\t{locale}\ts{len(lines) % 40}\t{text}")
        with open(manifest, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        with open(done, "w") as handle:
            handle.write(str(seconds))
    with open(done) as handle:
        return manifest, float(handle.read()) / 3600


def run_formats() -> list[dict[str, Any]]:
    """Marginal CPU-s per audio hour of each MASR codec, this design and the previous one:
    (CPU of a 20-minute build - CPU of a 2-minute build) / (hours between them), so the fixed
    cost of a build drops out. Feeds the README's 429k-hour scale table."""
    _mp3, flac_root, _info = corpus("two-hours", 2.0)
    previous = previous_design()
    rows = []
    with tempfile.TemporaryDirectory(prefix="voxshard-formats-") as scratch:
        out = os.path.join(scratch, "o")
        for name in FORMATS:
            small, small_h = format_corpus(flac_root, name, 2)
            large, large_h = format_corpus(flac_root, name, 20)
            builds: list[tuple[str, Callable[[str, str], None]]] = [
                ("this design", lambda m, o: voxshard(m, o, 1, "manifest"))
            ]
            if previous is not None:
                builds.append(("previous design", lambda m, o: previous("manifest", m, o)))
            for label, build in builds:
                small_cpu, _ = measure(lambda b=build, m=small: b(m, out))
                large_cpu, _ = measure(lambda b=build, m=large: b(m, out))
                marginal = (large_cpu - small_cpu) / (large_h - small_h)
                rows.append(row(f"{name}: {label}, CPU-s per audio hour", marginal, "CPU-s/h"))
            shards = os.path.join(out, "shards.jsonl")
            with open(shards, encoding="utf-8") as handle:
                shard_bytes = sum(json.loads(line)["num_bytes"] for line in handle)
            rows.append(row(f"{name}: shard bytes per audio hour", shard_bytes / large_h, "B/h"))
    return [{**r, "group": "formats"} for r in rows]


FIXED_COST_CHILD = """
import time, resource, sys
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
marks = [("start", cpu())]
import apache_beam
marks.append(("import Beam", cpu()))
from voxshard.corpora import get_corpus
from voxshard.pipelines.build import build_pipeline
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import plan_run, run_build
marks.append(("import voxshard", cpu()))
config = BuildConfig("manifest", sys.argv[1], sys.argv[2] + "/graph")
plan = plan_run(config, [])
pipeline = apache_beam.Pipeline(runner=plan.runner, options=plan.options)
build_pipeline(pipeline, config, get_corpus("manifest").list_sources(config.corpus_options()))
marks.append(("construct the graph", cpu()))
run_build(BuildConfig("manifest", sys.argv[1], sys.argv[2] + "/run"), progress_interval_s=None)
marks.append(("a whole one-clip build", cpu()))
for (_, a), (name, b) in zip(marks, marks[1:]):
    print(name, b - a)
"""


def run_fixed_cost() -> list[dict[str, Any]]:
    """CPU a build pays before and around its first sample, in a fresh process."""
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="voxshard-fixed-") as scratch:
        source = os.path.join(scratch, "corpus")  # OUT may not be inside ROOT's folder
        os.makedirs(source)
        sf.write(os.path.join(source, "a.flac"), np.zeros(16000, dtype=np.float32), 16000)
        with open(os.path.join(source, "m.tsv"), "w") as handle:
            handle.write("path\tlanguage\na.flac\ten\n")
        child = subprocess.run(
            [sys.executable, "-c", FIXED_COST_CHILD, os.path.join(source, "m.tsv"), scratch],
            capture_output=True,
            text=True,
            check=True,
        )
    rows = []
    for line in child.stdout.splitlines():
        name, seconds = line.rsplit(" ", 1)
        rows.append({**row(f"fixed cost: {name}", float(seconds), "CPU-s"), "group": "fixed"})
    return rows


LHOTSE_SCRIPT = """
import sys, glob, os
from lhotse import CutSet, Recording, RecordingSet
root, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
paths = sorted(glob.glob(os.path.join(root, "*", "clips", "*")))
recordings = RecordingSet.from_recordings(Recording.from_file(p) for p in paths)
cuts = CutSet.from_manifests(recordings=recordings).resample(16000)
cuts.to_shar(out, fields={"recording": "flac"}, shard_size=1000)
"""


# lhotse needs urllib3 at import, and scipy to resample when torchaudio is absent (here)
LHOTSE_PACKAGES = ["torch==2.13.0", "lhotse", "soundfile", "urllib3", "scipy"]


def lhotse_python() -> str | None:
    """A venv with lhotse (and the CPU torch build), made once under .cache."""
    venv = os.path.join(CACHE, "lhotse-venv")
    python = os.path.join(venv, "bin", "python")
    if os.path.exists(os.path.join(venv, "READY")):
        return python
    shutil.rmtree(venv, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", *LHOTSE_PACKAGES],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        print(f"lhotse unavailable: {error}", file=sys.stderr)
        return None
    open(os.path.join(venv, "READY"), "w").close()
    return python


def reading(build: str) -> dict[str, float]:
    """Audio seconds per CPU second: raw tar iteration, decode-only, the training stream."""
    import soundfile as sf
    import webdataset.tariterators  # noqa: F401  (imported before any timing)

    from voxshard.training.data import CorruptCounter, LanguageStream, discover

    shard_set = discover([build], ("train",))
    paths = [p for lang in sorted(shard_set.shards) for p in shard_set.shards[lang]]
    audio_s = sum(shard_set.hours.values()) * 3600
    payloads: list[bytes] = []

    def raw() -> None:
        for path in paths:
            with tarfile.open(path, "r|") as tar:
                for member in tar:
                    data = tar.extractfile(member)
                    if data is not None and member.name.endswith(".flac"):
                        payloads.append(data.read())

    def decode_only() -> None:
        for payload in payloads:
            sf.read(io.BytesIO(payload), dtype="float32")

    def stream() -> None:
        counter = CorruptCounter()
        for lang, shards in shard_set.shards.items():
            s = LanguageStream(lang, shards, 0, 1, 0, counter)
            while s.epoch == 0:
                s.next()

    raw_cpu, _ = measure(raw)
    decode_cpu, _ = measure(decode_only)
    stream_cpu, _ = measure(stream)
    return {
        "raw": audio_s / raw_cpu,
        "decode": audio_s / decode_cpu,
        "stream": audio_s / stream_cpu,
    }


MEMORY_CHILD = """
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build
run_build(BuildConfig("manifest", {manifest!r}, {out!r}), overwrite=True)
status = open("/proc/self/status").read()
print([l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:")][0])
"""


def memory_corpus(count: int) -> str:
    import soundfile as sf

    folder = os.path.join(CACHE, f"short-{count}")
    manifest = os.path.join(folder, "manifest.tsv")
    if os.path.exists(manifest):
        return manifest
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(count)
    lines = ["path\tlanguage\tspeaker"]
    for index in range(count):
        name = f"u{index:06d}.flac"
        t = np.arange(8000) / 16000
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + 0.01 * rng.standard_normal(
            8000
        )
        sf.write(os.path.join(folder, name), audio.astype(np.float32), 16000)
        lines.append(f"{name}\ten\ts{index % 50}")
    with open(manifest + ".tmp", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(manifest + ".tmp", manifest)
    return manifest


def peak_rss_mib(manifest: str) -> float:
    with tempfile.TemporaryDirectory(prefix="voxshard-mem-") as out:
        code = MEMORY_CHILD.format(manifest=manifest, out=os.path.join(out, "b"))
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
    return int(result.stdout.split()[-1]) / 1024


def row(
    name: str, value: float, unit: str, goal: str | None = None, met: bool | None = None
) -> dict[str, Any]:
    return {
        "group": "ingest",
        "name": name,
        "value": round(value, 3),
        "unit": unit,
        "goal": goal,
        "met": met,
    }


IDLE_LOAD = 0.5  # 1-minute load average counted as idle on this 2-core machine
IDLE_WAIT_S = 120.0


def wait_until_idle() -> float:
    """Wait (at most IDLE_WAIT_S) for the 1-minute load average to fall under IDLE_LOAD: it
    lags, so right after the previous measurements it says ~1 on an idle machine. Returns
    the load average it stopped at (recorded beside the result)."""
    deadline = time.monotonic() + IDLE_WAIT_S
    while os.getloadavg()[0] >= IDLE_LOAD and time.monotonic() < deadline:
        time.sleep(2.0)
    return os.getloadavg()[0]


def warm_up(root: str, scratch: str) -> None:
    """Both paths imported and run once on one clip, so no measured run pays either side's
    imports or first-use tables: the ratios compare throughput. A build's one-time cost is
    measured apart, in a fresh process (run_fixed_cost)."""
    _locale, path, _text = clips(root)[0]
    os.makedirs(os.path.join(scratch, "warm-up"))  # OUT may not be inside ROOT's folder
    manifest = os.path.join(scratch, "warm-up", "manifest.tsv")
    shutil.copy(path, os.path.join(scratch, "warm-up", "clip.mp3"))
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write("path\tlanguage\nclip.mp3\ten\n")
    voxshard(manifest, os.path.join(scratch, "warm-up-build"), 1, "manifest")
    _process(path)
    import webdataset  # noqa: F401  (the plain loop's writer)


def run() -> list[dict[str, Any]]:
    rows = []
    big, _big_flac, info = corpus("two-hours", 2.0)
    half, _half_flac, half_info = corpus("half-hour", 0.5)  # the 30-minute goal
    small, _small_flac, small_info = corpus("quarter", 0.25)
    big_mls, mls_info = mls_corpus("two-hours", 2.0)
    rows.append(
        row(f"corpus: {info['engine']} speech, 6 languages, 48 kHz MP3", info["hours"], "h")
    )
    with tempfile.TemporaryDirectory(prefix="voxshard-bench-") as scratch:
        warm_up(small, scratch)
        for label, root, hours, source in (
            ("2 h MP3", big, info["hours"], "commonvoice"),
            ("30 min MP3", half, half_info["hours"], "commonvoice"),
            ("15 min MP3", small, small_info["hours"], "commonvoice"),
            ("2 h FLAC 16k, MLS layout, 15 s segments", big_mls, mls_info["hours"], "mls"),
        ):
            v_cpu, _wall = measure(
                lambda r=root, s=source: voxshard(r, os.path.join(scratch, "v"), 1, s)
            )
            p_cpu, _ = measure(lambda r=root: plain_loop(r, os.path.join(scratch, "p")))
            rows.append(
                row(f"{label}: voxshard build, CPU-s per audio hour", v_cpu / hours, "CPU-s/h")
            )
            rows.append(row(f"{label}: plain loop, CPU-s per audio hour", p_cpu / hours, "CPU-s/h"))
            plain_goal = {"2 h MP3": 0.95, "30 min MP3": 0.85}.get(label)
            rows.append(
                row(
                    f"{label}: voxshard throughput / plain loop (plain re-encodes)",
                    p_cpu / v_cpu,
                    "x",
                    None if plain_goal is None else f">= {plain_goal}x",
                    None if plain_goal is None else p_cpu / v_cpu >= plain_goal,
                )
            )
            if source == "mls":
                c_cpu, _ = measure(lambda r=root: copy_limit(r))
                rows.append(
                    row(f"{label}: copy + validating decode limit", c_cpu / hours, "CPU-s/h")
                )
                rows.append(row(f"{label}: voxshard throughput / copy limit", c_cpu / v_cpu, "x"))
                previous = previous_design()
                if previous is not None:
                    o_cpu, _ = measure(
                        lambda r=root, b=previous: b("mls", r, os.path.join(scratch, "old"))
                    )
                    rows.append(
                        row(
                            f"{label}: previous design, CPU-s per audio hour",
                            o_cpu / hours,
                            "CPU-s/h",
                        )
                    )
                    rows.append(
                        row(
                            f"{label}: this design vs the previous one (copy-through)",
                            o_cpu / v_cpu,
                            "x",
                            ">= 2.5x",
                            o_cpu / v_cpu >= 2.5,
                        )
                    )
                    shutil.rmtree(os.path.join(scratch, "old"), ignore_errors=True)
            if label == "2 h MP3":
                shuffled = shuffle_bytes(root, os.path.join(scratch, "s"))
                total = sum(v for k, v in shuffled.items() if not k.endswith(".elements"))
                for name in sorted(k for k in shuffled if not k.endswith(".elements")):
                    rows.append(
                        row(
                            f"bytes into GroupByKey {name} per audio hour",
                            shuffled[name] / hours,
                            "B/h",
                        )
                    )
                rows.append(
                    row(
                        "bytes into all GroupByKeys per audio hour (metadata, batched)",
                        total / hours,
                        "B/h",
                        "< 1 MB/h",
                        total / hours < 1e6,
                    )
                )
                shutil.rmtree(os.path.join(scratch, "s"), ignore_errors=True)
            if not label.endswith("min MP3"):
                l_cpu, _ = measure(lambda r=root: limit(r))
                rows.append(
                    row(
                        f"{label}: decode+resample+encode limit, CPU-s per audio hour",
                        l_cpu / hours,
                        "CPU-s/h",
                    )
                )
                limit_goal = 0.9 if label == "2 h MP3" else None
                rows.append(
                    row(
                        f"{label}: voxshard throughput / re-encode limit",
                        l_cpu / v_cpu,
                        "x",
                        None if limit_goal is None else f">= {limit_goal}x",
                        None if limit_goal is None else l_cpu / v_cpu >= limit_goal,
                    )
                )
            if label == "2 h MP3":
                load = wait_until_idle()
                _, w1 = measure(lambda r=root: voxshard(r, os.path.join(scratch, "w1"), 1))
                _, w2 = measure(lambda r=root: voxshard(r, os.path.join(scratch, "w2"), 2))
                rows.append(row("load average before the --workers 1 and 2 runs", load, ""))
                rows.append(
                    row(
                        "--workers 2 vs 1, wall clock",
                        w1 / w2,
                        "x",
                        ">= 1.7x when idle",
                        w1 / w2 >= 1.7,
                    )
                )
                speeds = reading(os.path.join(scratch, "v"))
                rows.append(row("reading: raw tar iteration", speeds["raw"], "audio-s/CPU-s"))
                rows.append(row("reading: FLAC decode only", speeds["decode"], "audio-s/CPU-s"))
                rows.append(
                    row(
                        "reading: training stream (webdataset + decode)",
                        speeds["stream"],
                        "audio-s/CPU-s",
                    )
                )
                rows.append(
                    row(
                        "reading: training stream / decode only",
                        speeds["stream"] / speeds["decode"],
                        "x",
                        ">= 0.9x",
                        speeds["stream"] / speeds["decode"] >= 0.9,
                    )
                )
                python = lhotse_python()
                if python is None:
                    rows.append(
                        row(
                            "lhotse Shar export: not measured (lhotse did not install)",
                            float("nan"),
                            "",
                        )
                    )
                else:
                    command = [python, "-c", LHOTSE_SCRIPT, root, os.path.join(scratch, "shar")]
                    l_cpu, _ = measure(
                        lambda c=command: subprocess.run(c, check=True, capture_output=True)
                    )
                    shutil.rmtree(os.path.join(scratch, "shar"), ignore_errors=True)
                    rows.append(
                        row(
                            f"{label}: lhotse Shar export, CPU-s per audio hour",
                            l_cpu / hours,
                            "CPU-s/h",
                        )
                    )
                    rows.append(
                        row(
                            f"{label}: voxshard throughput / lhotse",
                            l_cpu / v_cpu,
                            "x",
                            "> 1.0x",
                            l_cpu / v_cpu > 1.0,
                        )
                    )
            for name in ("v", "p", "w1", "w2"):
                shutil.rmtree(os.path.join(scratch, name), ignore_errors=True)
    return rows


def memory_rows(group: str, counts: tuple[int, int], goal: str) -> list[dict[str, Any]]:
    """Peak RSS of builds of ``counts`` short utterances, and their ratio (goal <= 1.3x)."""
    small, large = (peak_rss_mib(memory_corpus(count)) for count in counts)
    names = [f"{count // 1000}k" for count in counts]
    rows: list[dict[str, Any]] = [
        {
            "group": group,
            "name": f"build peak RSS, {name} short utterances",
            "value": round(value),
            "unit": "MiB",
            "goal": None,
            "met": None,
        }
        for name, value in zip(names, (small, large), strict=True)
    ]
    rows.append(
        {
            "group": group,
            "name": f"peak RSS {names[1]} / {names[0]}",
            "value": round(large / small, 3),
            "unit": "x",
            "goal": goal,
            "met": large / small <= 1.3,
        }
    )
    return rows


def run_memory() -> list[dict[str, Any]]:
    return memory_rows("memory", (1000, 10_000), "close to 1 (<= 1.3x)")


def run_memory_scale() -> list[dict[str, Any]]:
    """Issue #8's scale check: 10k vs 100k short utterances (``make bench-scale``)."""
    return memory_rows("memory-scale", (10_000, 100_000), "<= 1.3x")


if __name__ == "__main__":
    for item in run() + run_memory():
        print(item)
