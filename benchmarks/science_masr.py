"""The science check of issue #16: does MASR's second stage help language ID on held-out voices?

Three arms, the same data and the same total number of optimizer steps, over several seeds:

- ``bestrq``: BEST-RQ alone for all steps;
- ``bestrq+masr``: BEST-RQ for the first half, then MASR from its weights (fresh optimizer
  and schedule, the language stream on) for the second half: the paper's two-stage recipe;
- ``bestrq+restart``: the control for the restart: the same two stages with MASR off, so a
  difference between it and ``bestrq+masr`` is MASR's, not the fresh optimizer's;
- ``bestrq+masr-mean``: MASR with the triplet hinge averaged over anchors instead of summed
  (``masr.reduction=mean``): the paper's lambda 16 on a sum over a batch's anchors makes the
  metadata loss outweigh BEST-RQ's by an order of magnitude.

Corpus: espeak-ng speech (the demo's synthesizer when espeak-ng is missing) in six languages,
voices m1-m3 and f1-f3 for training and the unseen voices m4, m5, f4 for evaluation, with
varied pitch and rate, built with ``voxshard build manifest``. Probe: ``voxshard probe``'s
logistic regression on frozen mean-pooled embeddings, fit on the training voices and scored on
the held-out ones, for every encoder block. Reported: per seed and arm, the accuracy of the
last block and of the best block, and each arm's mean and standard deviation over seeds.
Nothing is claimed beyond what the spread supports: the script prints the difference of the
means next to the seeds' spread.

    .venv/bin/python benchmarks/science_masr.py [--seeds 0,1,2] [--steps 300]
    .venv/bin/python benchmarks/science_masr.py --build BUILD   # any build with train + dev

Writes benchmarks/results/science-masr.json (science-masr-b<hash>.json with --build). CPU,
tiny preset: ~4 minutes per seed here.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from corpus import WORDS  # noqa: E402  (benchmarks/ is not a package)

ARMS = ("bestrq", "bestrq+restart", "bestrq+masr", "bestrq+masr-mean")
TRAIN_VOICES = ("m1", "m2", "m3", "f1", "f2", "f3")
HELD_OUT_VOICES = ("m4", "m5", "f4")
CACHE = os.path.join(HERE, ".cache", "science")


def synthesize(locale: str, voice: str, text: str, seed: int) -> tuple[np.ndarray, int]:
    """One clip: espeak-ng with the voice variant, a pitch and a rate from the seed."""
    import soundfile as sf

    if shutil.which("espeak-ng"):
        rng = random.Random(seed)
        command = [
            "espeak-ng",
            "-v",
            f"{locale}+{voice}",
            "-p",
            str(rng.randint(30, 70)),
            "-s",
            str(rng.randint(130, 190)),
            "--stdout",
            text,
        ]
        raw = subprocess.run(command, capture_output=True, check=True).stdout
        audio, rate = sf.read(io.BytesIO(raw), dtype="float32")
        return audio, rate
    from voxshard.pipelines.demo import speech_like

    return speech_like(3.0, seed, 48000, locale), 48000


def make_corpus(per_voice: int) -> tuple[str, bool]:
    """(manifest path, whether espeak-ng spoke it), cached in benchmarks/.cache/science."""
    import soundfile as sf
    import soxr

    manifest = os.path.join(CACHE, f"corpus-{per_voice}", "manifest.tsv")
    if os.path.exists(manifest):
        return manifest, bool(shutil.which("espeak-ng"))
    folder = os.path.dirname(manifest)
    os.makedirs(os.path.join(folder, "audio"), exist_ok=True)
    rows = ["path\tlanguage\tspeaker\ttranscript\tsplit"]
    seed = 0
    for locale in sorted(WORDS):
        for voice in TRAIN_VOICES + HELD_OUT_VOICES:
            split = "train" if voice in TRAIN_VOICES else "dev"
            for index in range(per_voice):
                seed += 1
                rng = random.Random(seed)
                text = " ".join(rng.choice(WORDS[locale]) for _ in range(rng.randint(5, 9)))
                audio, rate = synthesize(locale, voice, text, seed)
                audio = 0.9 * audio / max(1e-6, float(np.max(np.abs(audio))))
                name = f"audio/{locale}_{voice}_{index}.flac"
                sf.write(os.path.join(folder, name), soxr.resample(audio, rate, 16000), 16000)
                rows.append(f"{name}\t{locale}\t{locale}_{voice}\t{text}\t{split}")
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write("\n".join(rows) + "\n")
    return manifest, bool(shutil.which("espeak-ng"))


def train(build: str, out: str, overrides: list[str], init_from: str | None = None) -> None:
    from voxshard.training.config import load_config
    from voxshard.training.loop import train as run_training

    if os.path.exists(os.path.join(out, "checkpoints", "latest.json")):
        return  # reuse a finished run of the same settings (the folder name holds them)
    run_training([build], None, out, load_config(None, overrides), init_from)


def probe(run: str, build: str) -> dict[str, float]:
    from voxshard.training.probe import run_probe

    report = run_probe(run, build, per_language=1000, layer="all")
    accuracies = [row["accuracy"] for row in report["layers"]]
    return {
        "last": report["accuracy"],
        "best": max(accuracies),
        "best_layer": int(np.argmax(accuracies)) + 1,
        "chance": report["chance"],
        "eval_utterances": report["eval_utterances"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--per-voice", type=int, default=12)
    parser.add_argument(
        "--build",
        help="use this voxshard build (train split to train and fit; dev/test to score) "
        "instead of the espeak-ng corpus",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    half = args.steps // 2

    import torch

    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.runner import run_build

    torch.set_num_threads(1)
    started = time.time()
    if args.build is not None:
        build, spoken = args.build, False
        corpus_tag = "b" + hashlib.sha256(os.path.abspath(build).encode()).hexdigest()[:8]
    else:
        manifest, spoken = make_corpus(args.per_voice)
        build = os.path.join(CACHE, f"build-{args.per_voice}")
        run_build(BuildConfig("manifest", manifest, build), progress_interval_s=None)
        corpus_tag = f"v{args.per_voice}"
    name = "science-masr.json" if args.build is None else f"science-masr-{corpus_tag}.json"
    result_path = os.path.join(HERE, "results", name)
    common = [
        "model.preset=tiny",
        "data.batch_seconds=24",
        "optim.warmup_steps=30",
        "run.checkpoint_every=1000000",
        "run.validate_every=0",
        "run.log_every=25",
        "masr.geo=false",  # no speaker locations: geo would be a second language stream
    ]
    no_masr = ["masr.language=false", "masr.geo=false"]
    results: dict[str, Any] = {"runs": []}
    for seed in seeds:
        tag = f"s{seed}-n{args.steps}" + ("" if args.build is None else f"-{corpus_tag}")
        runs = os.path.join(CACHE, "runs", tag)
        alone = os.path.join(runs, "bestrq")
        train(
            build, alone, [*common, *no_masr, f"run.seed={seed}", f"optim.max_steps={args.steps}"]
        )
        stage_one = os.path.join(runs, "stage1")
        train(build, stage_one, [*common, *no_masr, f"run.seed={seed}", f"optim.max_steps={half}"])
        stage_two = os.path.join(runs, "masr")
        train(
            build,
            stage_two,
            [*common, f"run.seed={seed}", f"optim.max_steps={args.steps - half}"],
            init_from=stage_one,
        )
        restart = os.path.join(runs, "restart")
        train(
            build,
            restart,
            [*common, *no_masr, f"run.seed={seed}", f"optim.max_steps={args.steps - half}"],
            init_from=stage_one,
        )
        averaged = os.path.join(runs, "masr-mean")
        train(
            build,
            averaged,
            [
                *common,
                "masr.reduction=mean",
                f"run.seed={seed}",
                f"optim.max_steps={args.steps - half}",
            ],
            init_from=stage_one,
        )
        row = {
            "seed": seed,
            "bestrq": probe(alone, build),
            "bestrq+restart": probe(restart, build),
            "bestrq+masr": probe(stage_two, build),
            "bestrq+masr-mean": probe(averaged, build),
        }
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for arm in ARMS:
        for which in ("last", "best"):
            values = [run[arm][which] for run in results["runs"]]
            summary[f"{arm}/{which}"] = {
                "mean": round(statistics.mean(values), 4),
                "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                "values": [round(v, 4) for v in values],
            }
    results.update(
        {
            "summary": summary,
            "seeds": seeds,
            "steps_per_arm": args.steps,
            "build": args.build or "espeak-ng corpus",
            "languages": sorted(WORDS) if args.build is None else None,
            "train_voices": TRAIN_VOICES if args.build is None else None,
            "held_out_voices": HELD_OUT_VOICES if args.build is None else None,
            "espeak_ng": spoken,
            "chance": results["runs"][0]["bestrq"]["chance"],
            "minutes": round((time.time() - started) / 60, 1),
        }
    )
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    for name, figures in summary.items():
        print(
            f"{name:<20} mean {figures['mean']:.3f}  std {figures['std']:.3f}  {figures['values']}"
        )
    for arm in ("bestrq+masr", "bestrq+masr-mean"):
        paired = [run[arm]["last"] - run["bestrq+restart"]["last"] for run in results["runs"]]
        results.setdefault("paired_vs_restart", {})[arm] = [round(d, 4) for d in paired]
        print(
            f"{arm} - bestrq+restart, per seed (last block): "
            + ", ".join(f"{d:+.3f}" for d in paired)
            + f"; mean {statistics.mean(paired):+.3f}"
        )
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
