"""``voxshard probe RUN BUILD``: a linear language-ID probe on frozen, mean-pooled encoder
embeddings. Fits on the build's train split and scores on dev/test (or, without those, on a
held-out 30 % chosen by a stable hash of the key). Writes RUN/probe/report.json and
RUN/probe/confusion.png."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import numpy as np
import torch

from voxshard.schemas import ConfigError, storage
from voxshard.training.config import TrainConfig, apply
from voxshard.training.data import (
    CORRUPT_SAMPLE_ERRORS,
    SAMPLE_RATE,
    CorruptCounter,
    build_sample_rate,
    decode_sample,
    iterate_shard,
)
from voxshard.training.features import LogMel, normalize_per_feature
from voxshard.training.masr import mean_pool
from voxshard.training.model import ConformerEncoder, build_encoder, latest_checkpoint
from voxshard.training.runs import run_folder

LOG = logging.getLogger("voxshard")


def load_encoder(run: str) -> tuple[ConformerEncoder, TrainConfig, int]:
    """The run's latest encoder (eval mode), its settings and its audio rate in Hz."""
    source = run_folder(run, reader=True)
    source.fetch()
    folder = latest_checkpoint(source.local)
    if folder is None:
        raise ConfigError(f"{run!r} holds no checkpoint: train first")
    state = torch.load(os.path.join(folder, "model.pt"), map_location="cpu", weights_only=True)
    config = TrainConfig()
    problems: list[str] = []
    apply(config, json.loads(state["config"]), problems)
    encoder = build_encoder(config.model.preset, config.model.n_mels, 0.0)
    prefix = "encoder."
    encoder.load_state_dict(
        {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    )
    return encoder.eval(), config, int(state.get("sample_rate_hz", SAMPLE_RATE))


def read_build(
    build: str, per_language: int, sample_rate: int
) -> list[tuple[str, str, str, np.ndarray]]:
    """(key, language, split, audio) for up to ``per_language`` utterances per language/split;
    corrupt samples are skipped and logged, as the trainer does."""
    rows = []
    counts: dict[tuple[str, str], int] = {}
    listing = storage.read_bytes(storage.join(build, "shards.jsonl")).splitlines()
    shards = [json.loads(line) for line in listing if line.strip()]
    corrupt = CorruptCounter()
    for shard in shards:
        group = (shard["lang"], shard["split"])
        path = storage.join(build, shard["path"])
        for index, sample in iterate_shard(path, corrupt):
            if counts.get(group, 0) >= per_language:
                break
            try:
                utterance = decode_sample(sample, (path, index), sample_rate)
            except CORRUPT_SAMPLE_ERRORS as error:
                corrupt(error)
                continue
            rows.append((utterance.key, utterance.language, shard["split"], utterance.audio))
            counts[group] = counts.get(group, 0) + 1
    if corrupt.count:
        LOG.warning("%s: %d corrupt samples skipped", build, corrupt.count)
    return rows


@torch.no_grad()
def embed(
    encoder: ConformerEncoder,
    audio: list[np.ndarray],
    n_mels: int,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float = 20.0,
    device: torch.device | None = None,
    batch_seconds: float = 64.0,
) -> np.ndarray:
    """(N, layers, D) mean-pooled embeddings of every encoder block for each clip (cut to
    ``max_seconds``), computed on ``device`` in batches of similar lengths holding up to
    ``batch_seconds`` of padded audio. The encoder masks padding at every layer, so a clip's
    embedding is the same in any batch (tested against one clip at a time)."""
    device = device if device is not None else torch.device("cpu")
    logmel = LogMel(sample_rate, n_mels).to(device)
    encoder = encoder.to(device)
    clips = [clip[: int(max_seconds * sample_rate)] for clip in audio]
    order = sorted(range(len(clips)), key=lambda i: (len(clips[i]), i))
    pooled: list[np.ndarray | None] = [None] * len(clips)
    limit = batch_seconds * sample_rate

    def run(batch: list[int]) -> None:
        longest = len(clips[batch[-1]])  # sorted by length: the last is the longest
        padded = np.zeros((len(batch), longest), dtype=np.float32)
        for row, index in enumerate(batch):
            padded[row, : len(clips[index])] = clips[index]
        lengths = torch.tensor([len(clips[index]) for index in batch], device=device)
        raw = logmel(torch.from_numpy(padded).to(device))
        frames = logmel.frames(lengths).clamp(max=raw.shape[1])
        layers, mask = encoder.layer_outputs(normalize_per_feature(raw, frames), frames)
        stacked = torch.stack([mean_pool(h.float(), mask) for h in layers], dim=1)
        for row, vectors in enumerate(stacked.cpu().numpy()):
            pooled[batch[row]] = vectors

    batch: list[int] = []
    for index in order:
        if batch and (len(batch) + 1) * len(clips[index]) > limit:
            run(batch)
            batch = []
        batch.append(index)
    if batch:
        run(batch)
    return np.stack([item for item in pooled if item is not None])


def held_out(key: str) -> bool:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10 < 3


def run_probe(
    run: str,
    build: str,
    per_language: int = 200,
    layer: str = "last",
    device: str = "auto",
    batch_seconds: float = 64.0,
) -> dict[str, Any]:
    """Fit a language-ID probe on ``layer``'s pooled embeddings ("last", a block number
    1..L, or "all": every block's accuracy in ``layers`` and the report of the last)."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    torch.set_num_threads(1)
    encoder, config, sample_rate = load_encoder(run)
    depth = len(encoder.blocks)
    chosen = _layer_index(layer, depth)
    target = (
        torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device == "auto"
        else torch.device(device)
    )
    rate = build_sample_rate(build)
    if rate is not None and rate != sample_rate:
        raise ConfigError(
            f"{build!r} holds {rate} Hz audio and {run!r} was trained on {sample_rate} Hz: "
            f"probe it on a build made with voxshard build --sample-rate {sample_rate}"
        )
    rows = read_build(build, per_language, sample_rate)
    if len({language for _, language, _, _ in rows}) < 2:
        raise ConfigError(f"{build!r}: a language-ID probe needs at least two languages")
    has_eval = any(split in ("dev", "test") for _, _, split, _ in rows)
    evaluated_on = "dev/test" if has_eval else "30% held out by key hash"
    evaluate = [
        (split in ("dev", "test")) if has_eval else held_out(key) for key, _, split, _ in rows
    ]
    embeddings = embed(
        encoder,
        [audio for *_, audio in rows],
        config.model.n_mels,
        sample_rate,
        device=target,
        batch_seconds=batch_seconds,
    )
    labels = np.array([language for _, language, _, _ in rows])
    train_mask = ~np.array(evaluate)
    truth = labels[~train_mask]
    languages = sorted(set(labels))
    per_layer = []
    for index in range(depth) if layer == "all" else [chosen]:
        guess = _fit_and_predict(embeddings[:, index], labels, train_mask)
        per_layer.append(
            {
                "layer": index + 1,
                "accuracy": float((guess == truth).mean()),
                "macro_f1": float(
                    f1_score(truth, guess, labels=languages, average="macro", zero_division=0)
                ),
            }
        )
    predicted = _fit_and_predict(embeddings[:, chosen], labels, train_mask)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=languages, zero_division=0
    )
    matrix = confusion_matrix(truth, predicted, labels=languages)
    report = {
        "layer": chosen + 1,
        "layers_in_model": depth,
        "train_utterances": int(train_mask.sum()),
        "eval_utterances": int((~train_mask).sum()),
        "evaluated_on": evaluated_on,
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(
            f1_score(truth, predicted, labels=languages, average="macro", zero_division=0)
        ),
        "per_language": {
            lang: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for lang, p, r, f, s in zip(languages, precision, recall, f1, support, strict=True)
        },
        "languages": languages,
        "confusion": matrix.tolist(),
        "chance": 1.0 / len(languages),
        "layers": per_layer,
    }
    folder = storage.join(run, "probe")  # a run at a URL gets its probe there too
    storage.write_atomic(
        storage.join(folder, "report.json"), json.dumps(report, indent=2).encode("utf-8")
    )
    _plot_confusion(
        matrix,
        languages,
        report["accuracy"],
        f"{evaluated_on}, layer {chosen + 1} of {depth}",
        storage.join(folder, "confusion.png"),
    )
    return report


def _layer_index(layer: str, depth: int) -> int:
    """0-based block index of --layer: "last" and "all" report the last block."""
    if layer in ("last", "all"):
        return depth - 1
    try:
        number = int(layer)
    except ValueError:
        number = 0
    if not 1 <= number <= depth:
        raise ConfigError(f"--layer {layer!r}: choose last, all or a block number 1..{depth}")
    return number - 1


def _fit_and_predict(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Standardize on the training rows, fit a logistic regression, predict the rest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features[train])
    classifier = LogisticRegression(max_iter=2000).fit(
        scaler.transform(features[train]), labels[train]
    )
    predicted: np.ndarray = classifier.predict(scaler.transform(features[~train]))
    return predicted


def _plot_confusion(
    matrix: np.ndarray, languages: list[str], accuracy: float, evaluated_on: str, path: str
) -> None:
    """Counts with each row's recall as the colour (so rare languages are as readable as
    common ones), the evaluation split, N and the chance level in the title."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(languages)
    size = max(5.5, 0.5 * count + 3.0)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    totals = matrix.sum(axis=1, keepdims=True)
    recall = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = axes.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    labels = [f"{lang} (n={int(n)})" for lang, n in zip(languages, totals[:, 0], strict=True)]
    axes.set_xticks(range(count), languages, rotation=90)
    axes.set_yticks(range(count), labels)
    axes.set_xlabel("predicted language")
    axes.set_ylabel("true language (n = utterances)")
    for i in range(count):
        for j in range(count):
            axes.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if recall[i, j] > 0.6 else "black",
            )
    total = int(matrix.sum())
    figure.suptitle(
        f"language-ID probe on {evaluated_on}: accuracy {accuracy:.3f} "
        f"(chance {1.0 / count:.3f}), N = {total}",
        fontsize=11,
    )
    axes.set_title("colour: share of the row (recall); numbers: utterances", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true language")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    storage.write_atomic(path, buffer.getvalue())
