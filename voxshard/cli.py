"""The ``voxshard`` command line. Thin commands: build a config, call one function, print.

Heavy imports (Beam, pyarrow, soundfile) happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from voxshard import __version__
from voxshard.schemas import BuildError, ConfigError, VoxshardError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Build multilingual speech corpora as deterministic WebDataset shards.",
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"voxshard {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Build multilingual speech corpora as deterministic WebDataset shards."""


def _source_help() -> str:
    """SOURCE's help, from the corpus registry (one place that lists every layout)."""
    from voxshard.corpora import REGISTRY

    return "corpus layout: " + "; ".join(
        f"{name}: {spec.summary}" for name, spec in REGISTRY.items()
    )


def _fail(error: Exception, code: int) -> NoReturn:
    typer.echo(f"voxshard: error: {error}", err=True)
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.ERROR,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("voxshard").setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in ("apache_beam", "absl"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
    for name in ("gcsfs", "fsspec", "aiohttp", "google", "urllib3"):
        # storage back ends log their retries with tracebacks; voxshard says it in one line
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)


def _split_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    return items or None


def _settings(values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The corpus options the user gave, as (name, value) pairs: a flag that is on is
    "yes", numbers as written, options not given are left out."""
    pairs = []
    for name, value in sorted(values.items()):
        if value is None or value is False:
            continue
        pairs.append((name, "yes" if value is True else str(value)))
    return tuple(pairs)


def _with_corpus_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` one option per corpus setting in the registry (corpora/): its
    ``**corpus_options`` receives them. The corpus declares the option (name, summary,
    choices or a number, flag), so nothing here is copied by hand."""
    import inspect
    import typing

    from voxshard.corpora import corpus_settings

    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # strings -> objects
    fixed = [
        p.replace(annotation=hints[p.name])
        for p in signature.parameters.values()
        if p.kind is not p.VAR_KEYWORD
    ]
    annotations = {k: v for k, v in hints.items() if k != "corpus_options"}
    extra = []
    for setting, corpora in corpus_settings():
        where = ", ".join(corpora)
        if setting.flag:
            kind: Any = bool
            default: Any = False
            text = f"{where}: {setting.summary}"
        elif setting.choices is None:
            kind, default = float | None, None
            text = f"{where}: {setting.summary} (a positive number)"
        else:
            kind, default = str | None, None
            text = f"{where}: {setting.summary}: {', '.join(setting.choices)}"
            if setting.default is not None:
                text += f" (default {setting.default})"
        annotation = Annotated[kind, typer.Option(setting.option, help=text)]
        annotations[setting.name] = annotation
        extra.append(
            inspect.Parameter(
                setting.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    command.__signature__ = signature.replace(parameters=[*fixed, *extra])  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    return command


def build(
    source: Annotated[str, typer.Argument(help=_source_help())],
    root: Annotated[str, typer.Argument(help="the corpus root folder (or manifest file)")],
    out: Annotated[str, typer.Option("--out", "-o", help="output folder")],
    beam_args: Annotated[
        list[str] | None,
        typer.Argument(help="after --: Beam pipeline options, passed on untouched"),
    ] = None,
    languages: Annotated[
        str | None, typer.Option(help="comma-separated language tags to keep (any form)")
    ] = None,
    splits: Annotated[
        str | None, typer.Option(help="comma-separated splits (commonvoice: train,dev,test)")
    ] = None,
    sample_rate: Annotated[int, typer.Option(help="output sample rate in Hz")] = 16000,
    shard_size: Annotated[
        float, typer.Option(help="target shard size in MB (planned from durations; see README)")
    ] = 256.0,
    min_duration: Annotated[float, typer.Option(help="shortest utterance kept, seconds")] = 0.2,
    max_duration: Annotated[float, typer.Option(help="longest utterance kept, seconds")] = 60.0,
    max_error_rate: Annotated[
        float, typer.Option(help="fail when rejected/discovered exceeds this")
    ] = 0.05,
    workers: Annotated[int, typer.Option(help="local worker processes")] = 1,
    geo: Annotated[
        str | None, typer.Option(help="CSV/TSV: speaker or language -> lat, lon")
    ] = None,
    language_geo: Annotated[
        bool, typer.Option(help="else geo = the language's location (lang2vec/Glottolog)")
    ] = True,
    normalize: Annotated[
        str, typer.Option("--normalize", help="transcripts: keep, canonical, to-latin, to-native")
    ] = "canonical",
    lexicon: Annotated[str | None, typer.Option(help="TSV of latin<TAB>native pairs")] = None,
    scheme: Annotated[
        str | None, typer.Option(help="to-native romanization: itrans, hk, iast, none")
    ] = None,
    verify_copies: Annotated[
        bool,
        typer.Option(help="decode copied FLAC sources fully to validate them and count samples"),
    ] = True,
    dry_run: Annotated[
        bool, typer.Option(help="parse and plan only: print what would be written, write nothing")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing build in OUT")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    **corpus_options: Any,  # the registry's own settings: options made by _with_corpus_options
) -> None:
    """Ingest SOURCE at ROOT into OUT: shards/, utterances.parquet, shards.jsonl, rejects.jsonl,
    stats.json and COMPLETED. Everything after `--` goes to Beam (e.g. `-- --runner
    DataflowRunner --project P ...`)."""
    _setup_logging(verbose)
    try:
        from voxshard.pipelines.config import BuildConfig
        from voxshard.pipelines.runner import run_build

        config = BuildConfig(
            source=source,
            root=root,
            out=out,
            languages=_split_list(languages),
            splits=_split_list(splits),
            sample_rate=sample_rate,
            shard_size_mb=shard_size,
            min_duration_s=min_duration,
            max_duration_s=max_duration,
            max_error_rate=max_error_rate,
            workers=workers,
            geo=geo,
            language_geo=language_geo,
            normalize=normalize,
            lexicon=lexicon,
            scheme=scheme,
            verify_copies=verify_copies,
            settings=_settings(corpus_options),
        )
        stats = run_build(config, beam_args or (), overwrite=overwrite, dry_run_only=dry_run)
    except ConfigError as error:
        _fail(error, 2)
    except (BuildError, VoxshardError) as error:
        _fail(error, 1)
    if stats.get("validated_only"):
        typer.echo(
            f"dry run: job built from {stats['sources']} source table(s) with "
            f"{stats['steps']} step(s); not submitted, OUT untouched"
        )
        _print_graph(stats["graph"])
        return
    if stats.get("dry_run"):
        _print_plan(stats)
        return
    if stats.get("already_built"):
        typer.echo(
            f"{out} already holds this build (the same options): nothing to do; "
            f"{stats['written']} utterances ({stats['hours']:.3f} h). Pass --overwrite to rebuild"
        )
        return
    typer.echo(
        f"wrote {stats['written']} utterances ({stats['hours']:.3f} h) in "
        f"{stats['shards']['count']} shard(s); rejected {stats['rejected']} -> {out}"
    )


build = app.command(context_settings={"allow_interspersed_args": True})(_with_corpus_options(build))


def _print_plan(plan: dict[str, Any]) -> None:
    """What ``build --dry-run`` found: nothing was written."""
    typer.echo(
        f"dry run: {plan['sources']} source table(s), {plan['discovered']} items discovered, "
        f"{plan['planned_items']} planned, {plan['rejected_so_far']} rejected so far"
    )
    for reason, count in plan["rejected_by_reason"].items():
        typer.echo(f"  rejected: {reason}: {count}")
    typer.echo(f"{'language':<10}{'tags in the corpus':<24}{'items':>8}{'hours':>10}{'shards':>8}")
    for language, row in plan["by_language"].items():
        tags = ",".join(row["source_languages"])
        typer.echo(
            f"{language:<10}{tags:<24}{row['items']:>8}{row['hours']:>10.3f}{row['shards']:>8}"
        )
    typer.echo(f"would write {plan['hours']:.3f} h in {plan['shards']} shard(s); nothing written")
    _print_graph(plan["graph"])


def _print_graph(graph: dict[str, list[str]]) -> None:
    """The Beam graph the build runs, step by step (``build.graph_outline``)."""
    typer.echo("the build's Beam graph (* = GroupByKey; only metadata crosses one):")
    width = max(map(len, graph)) + 2
    for step, parts in graph.items():
        typer.echo(f"  {step:<{width}}{', '.join(parts)}")


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not summary["completed"]:
        console.print("[bold red]incomplete build: no COMPLETED file[/]")
    table = Table(title="utterances by language and split")
    for column in ("language", "split", "utterances", "hours"):
        table.add_column(column, justify="right" if column in ("utterances", "hours") else "left")
    for row in summary["rows"]:
        table.add_row(row["language"], row["split"], str(row["utterances"]), f"{row['hours']:.4f}")
    console.print(table)
    console.print(
        f"discovered {summary['discovered']}, written {summary['written']}, rejected "
        f"{summary['rejected']}; {summary['speakers']} speakers; {summary['hours']:.4f} h"
    )
    licenses = ", ".join(f"{name} ({count})" for name, count in summary["licenses"].items())
    console.print(f"licences: {licenses or 'none'}")
    if summary["rejected_by_reason"]:
        rejects = Table(title="rejects by reason")
        rejects.add_column("reason")
        rejects.add_column("count", justify="right")
        for reason, count in summary["rejected_by_reason"].items():
            rejects.add_row(reason, str(count))
        console.print(rejects)
    shards = summary["shards"]
    console.print(
        f"{shards['count']} shard(s), {shards['total_mb']:.2f} MB in all; size min "
        f"{shards['min_mb']:.2f} / median {shards['median_mb']:.2f} / max {shards['max_mb']:.2f} MB"
    )


@app.command()
def inspect(
    out: Annotated[str, typer.Argument(help="a build's output folder")],
    plot: Annotated[
        str | None,
        typer.Option(help="also draw hours per language and durations into this PNG"),
    ] = None,
    card: Annotated[bool, typer.Option(help="print the dataset card (OUT/README.md)")] = False,
) -> None:
    """Show hours and utterances per language and split, rejects by reason, licences, shard
    sizes; --plot draws them, --card prints the dataset card."""
    from voxshard.pipelines.inspect import hours_picture, summarize

    try:
        summary = summarize(out)
        if card:
            from voxshard.schemas import storage

            card_path = storage.join(out, "README.md")
            if not storage.isfile(card_path):
                raise ConfigError(f"{out!r} has no dataset card: rebuild it with this voxshard")
            typer.echo(storage.read_bytes(card_path).decode("utf-8"))
            return
        if plot is not None:
            hours_picture(out, plot)
    except VoxshardError as error:
        _fail(error, 2)
    except OSError as error:
        _fail(error, 1)
    _print_summary(summary)
    if plot is not None:
        typer.echo(f"picture: {plot}")


@app.command()
def verify(
    out: Annotated[str, typer.Argument(help="a build's output folder")],
    decode: Annotated[bool, typer.Option(help="decode every FLAC (slower)")] = True,
) -> None:
    """Re-read every shard and recompute the index: sha256 and seal, member pairs, decoding,
    index rows, stats, accounting. Exits 1 naming each problem."""
    from voxshard.pipelines.verify import verify as verify_build

    try:
        problems, summary = verify_build(out, decode)
    except VoxshardError as error:
        problems, summary = [str(error)], {}
    if problems:
        for problem in problems:
            typer.echo(f"voxshard: verify: {problem}", err=True)
    else:
        typer.echo(
            f"ok: {summary['shards']} shard(s), {summary['samples']} samples"
            f"{' decoded' if summary['decoded'] else ''}, "
            f"{summary['rejected']} rejects accounted for"
        )
    _exit_now(1 if problems else 0)


def _export_help() -> str:
    from voxshard.pipelines.export import iter_formats

    return "; ".join(f"{name}: {summary}" for name, summary in iter_formats())


@app.command()
def export(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help=_export_help())],
    build: Annotated[str, typer.Argument(help="a finished build's folder (or URL)")],
    out: Annotated[str, typer.Argument(help="an empty or new folder for the export")],
    splits: Annotated[
        str | None, typer.Option(help="comma-separated splits (default: all)")
    ] = None,
    languages: Annotated[
        str | None, typer.Option(help="comma-separated languages (default: all)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an export of other options")] = False,
) -> None:
    """Export a build for lhotse (Shar), Hugging Face datasets (Parquet) or NeMo (tarred
    audio + manifests); the audio is the build's FLAC bytes, never re-encoded."""
    from voxshard.pipelines.export import export as run_export

    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 10.0:
            last[0] = now
            typer.echo(f"exported {done}/{total} shard(s)", err=True)

    try:
        result = run_export(
            fmt, build, out, _split_list(splits), _split_list(languages), overwrite, progress
        )
    except VoxshardError as error:
        _fail(error, 2)
    except OSError as error:
        _fail(error, 1)
    if result.get("already_done"):
        typer.echo(f"{out} already holds this export ({result['samples']} samples): nothing to do")
    else:
        typer.echo(
            f"{result['samples']} samples in {result['shards']} shard(s) -> {out}; "
            f"read with {result['read_with']}"
        )


def _exit_now(code: int) -> NoReturn:
    """Exit with ``code`` after flushing, skipping interpreter shutdown: pyarrow's threads
    sometimes abort it ("terminate called without an active exception", exit 134), and a
    check's exit status must be trustworthy every time."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _last_step(last: dict[str, Any]) -> str:
    if last.get("step") is None:  # a rerun: the run folder had already finished
        return "  already trained (its checkpoint is reused)"
    return f"  step {last['step']}: loss {last['loss']}"


@app.command()
def demo(
    out: Annotated[str, typer.Argument(help="folder for the demo corpora and builds")] = "demo-out",
    clips: Annotated[int, typer.Option(help="Common Voice clips per language")] = 20,
    workers: Annotated[int, typer.Option(help="local worker processes")] = 1,
    steps: Annotated[int, typer.Option(help="tiny training steps on CPU")] = 40,
) -> None:
    """Generate a small corpus in each layout (real MP3, Vorbis, FLAC, Opus, SPHERE audio), build
    each one, and show what `inspect` shows."""
    _setup_logging(False)
    from voxshard.pipelines import demo as generators
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.inspect import hours_picture, summarize
    from voxshard.pipelines.runner import run_build

    # (source, generator, max error rate): the small trees hold deliberately bad rows
    layouts: list[tuple[str, Callable[[str], dict[str, int]], float]] = [
        ("commonvoice", lambda root: generators.generate_commonvoice_demo(root, clips), 0.05),
        ("voxpopuli", generators.generate_voxpopuli_demo, 0.2),
        ("mls", generators.generate_mls_demo, 0.05),
        ("babel", generators.generate_babel_demo, 0.2),
    ]
    try:
        for source, generate, max_error_rate in layouts:
            corpus = os.path.join(out, "corpus", source)
            build_out = os.path.join(out, "build", source)
            if not os.path.isdir(corpus):
                typer.echo(f"generating the {source} demo corpus in {corpus} ...")
                counts = generate(corpus)
                typer.echo(
                    "  " + ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in counts.items())
                )
            typer.echo(f"building {build_out} ...")
            config = BuildConfig(
                source=source,
                root=corpus,
                out=build_out,
                workers=workers,
                max_error_rate=max_error_rate,
            )
            run_build(config, overwrite=True)
            typer.echo(f"== {source} ==")
            _print_summary(summarize(build_out))
            picture = os.path.join(out, "pictures", f"hours_{source}.png")
            os.makedirs(os.path.dirname(picture), exist_ok=True)
            hours_picture(build_out, picture)
            typer.echo(f"hours per language and durations: {picture}")
        builds = [os.path.join(out, "build", source) for source, _, _ in layouts]
        _demo_similarity_and_training(out, builds, steps)
    except VoxshardError as error:
        _fail(error, 1)


def _demo_similarity_and_training(out: str, builds: list[str], steps: int) -> None:
    """The rest of the demo: similarity over every build, a tiny CPU training run, the probe."""
    from voxshard.pipelines.similarity import SimilarityConfig, run_similarity

    sim = os.path.join(out, "similarity")
    typer.echo(f"similarity -> {sim} ...")
    report = run_similarity(
        SimilarityConfig(builds=tuple(builds), out=sim, feature_sets=("syntax_knn", "fam", "geo"))
    )
    typer.echo(f"  {len(report['languages'])} languages, {report['speakers']['count']} speakers")
    try:
        from voxshard.training.config import load_config
        from voxshard.training.loop import train as run_training
        from voxshard.training.probe import run_probe
    except ImportError:
        typer.echo("training skipped: install the training extra (pip install 'voxshard[train]')")
        return
    # the MASR recipe: BEST-RQ alone first, then MASR from its weights (joint training from
    # step 0 collapses q); the tiny preset on CPU
    first, run = os.path.join(out, "run-bestrq"), os.path.join(out, "run")
    warm = max(1, steps // 2)
    typer.echo(f"training BEST-RQ alone (tiny preset) for {warm} CPU steps -> {first} ...")
    no_masr = ["masr.language=false", "masr.geo=false"]
    stage = [f"optim.max_steps={warm}", f"run.checkpoint_every={warm}", *no_masr]
    stage.append(f"optim.warmup_steps={max(1, warm // 4)}")  # demo-sized schedule
    last = run_training(builds, sim, first, load_config(None, stage))
    typer.echo(_last_step(last))
    typer.echo(f"then BEST-RQ + MASR from its weights for {steps} CPU steps -> {run} ...")
    settings = load_config(
        None,
        [f"optim.max_steps={steps}", f"optim.warmup_steps={max(1, steps // 4)}"],
    )
    last = run_training(builds, sim, run, settings, init_from=first)
    typer.echo(_last_step(last))
    probe = run_probe(run, builds[0])
    typer.echo(
        f"language-ID probe on {builds[0]}: accuracy {probe['accuracy']:.3f}, "
        f"macro-F1 {probe['macro_f1']:.3f} (chance {1 / len(probe['languages']):.3f}); "
        f"confusion matrix in {os.path.join(run, 'probe', 'confusion.png')}"
    )


@app.command()
def similarity(
    out: Annotated[str, typer.Option("--out", "-o", help="output folder")],
    builds: Annotated[list[str] | None, typer.Argument(help="build folders")] = None,
    languages: Annotated[
        str | None, typer.Option(help="comma-separated languages to add (any tag form)")
    ] = None,
    feature_sets: Annotated[
        str, typer.Option(help="comma-separated lang2vec feature sets")
    ] = "syntax_knn",
    geo_scale_km: Annotated[float, typer.Option(help="kernel scale: exp(-d / scale)")] = 500.0,
    min_shared: Annotated[
        int, typer.Option(help="fewest shared features for a cosine (sets with gaps)")
    ] = 20,
    plots: Annotated[bool, typer.Option(help="write PNG heatmaps and the geo scatter")] = True,
) -> None:
    """lang2vec language-similarity matrices and Haversine speaker distances (MASR encoders)."""
    _setup_logging(False)
    from voxshard.pipelines.similarity import SimilarityConfig, run_similarity

    try:
        config = SimilarityConfig(
            builds=tuple(builds or ()),
            out=out,
            languages=_split_list(languages) or (),
            feature_sets=_split_list(feature_sets) or ("syntax_knn",),
            geo_scale_km=geo_scale_km,
            min_shared=min_shared,
            plots=plots,
        )
        report = run_similarity(config)
    except VoxshardError as error:
        _fail(error, 2)
    sets = report["feature_sets"]
    typer.echo(
        f"{len(report['languages'])} languages, {report['speakers']['count']} speakers -> {out}"
    )
    for name, info in sets.items():
        typer.echo(
            f"  {name}: {len(info['unknown_languages'])} unknown to lang2vec, "
            f"{len(info['substituted'])} substituted, {len(info['nan_pairs'])} NaN pairs"
        )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    builds: Annotated[
        list[str], typer.Argument(help="build folders, then key.sub=value overrides")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="run folder (resumes if it holds one)")],
    sim: Annotated[str | None, typer.Option(help="a voxshard similarity folder")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML training config")] = None,
    init_from: Annotated[
        str | None,
        typer.Option(help="start from this run's weights (fresh optimizer): MASR's stage two"),
    ] = None,
) -> None:
    """Train a BEST-RQ + MASR Conformer on builds' shards (torchrun for DDP). Arguments of the
    form key.sub=value override the config, e.g. optim.max_steps=50 model.preset=base."""
    _setup_logging(False)
    try:
        from voxshard.training.config import load_config
        from voxshard.training.loop import train as run_training
    except ImportError as error:
        _fail(ConfigError(f"{error}: install the training extra: pip install 'voxshard[train]'"), 2)
    folders = [item for item in builds if "=" not in item]
    overrides = [item for item in builds if "=" in item]
    try:
        settings = load_config(config, overrides)
        last = run_training(folders, sim, out, settings, init_from)
    except VoxshardError as error:
        _fail(error, 2)
    if last:
        typer.echo(f"step {last['step']}: loss {last['loss']:.4f} -> {out}")


@app.command("bench-train")
def bench_train(
    builds: Annotated[
        list[str] | None,
        typer.Argument(help="build folders (the loader mode), then key.sub=value overrides"),
    ] = None,
    mode: Annotated[str, typer.Option(help="model, loader or both")] = "model",
    preset: Annotated[str, typer.Option(help="tiny, base or large")] = "tiny",
    batch_seconds: Annotated[float, typer.Option(help="audio per synthetic batch")] = 16.0,
    utterance_seconds: Annotated[float, typer.Option(help="each clip: the bucket length")] = 4.0,
    steps: Annotated[int, typer.Option(help="timed steps (model) or batches (loader)")] = 10,
    warmup: Annotated[int, typer.Option(help="untimed steps first")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
    peak_tflops: Annotated[
        float, typer.Option(help="MFU's peak in TFLOP/s (0: from the GPU's name)")
    ] = 0.0,
    json_out: Annotated[str | None, typer.Option("--json", help="also write the figures")] = None,
) -> None:
    """Measure the training step on synthetic batches (audio-s/s, step time, tokens/s, MFU,
    peak memory) and the loader on real builds (audio-s/s); the same on CPU and GPU."""
    _setup_logging(False)
    try:
        import torch

        from voxshard.training.bench import (
            bench_loader,
            bench_model,
            data_wait_estimate,
            pick_device,
        )
        from voxshard.training.config import load_config
    except ImportError as error:
        _fail(ConfigError(f"{error}: install the training extra: pip install 'voxshard[train]'"), 2)
    folders = [item for item in builds or [] if "=" not in item]
    overrides = [f"model.preset={preset}"] + [item for item in builds or [] if "=" in item]
    results: dict[str, Any] = {}
    try:
        if mode not in ("model", "loader", "both"):
            raise ConfigError(f"--mode {mode!r}: choose model, loader or both")
        settings = load_config(None, overrides)
        chosen = pick_device(device)
        if chosen.type == "cpu":
            torch.set_num_threads(settings.run.threads)
        if mode in ("model", "both"):
            results["model"] = bench_model(
                settings, chosen, batch_seconds, utterance_seconds, steps, warmup, peak_tflops
            )
        if mode in ("loader", "both"):
            results["loader"] = bench_loader(folders, settings, steps)
    except VoxshardError as error:
        _fail(error, 2)
    if "model" in results and "loader" in results:
        results["data_wait_estimate"] = round(
            data_wait_estimate(
                results["model"]["audio_s_per_s"], results["loader"]["audio_s_per_s"] or 0.0
            ),
            4,
        )
    for name, figures in results.items():
        if isinstance(figures, dict):
            typer.echo(
                f"{name}: " + ", ".join(f"{k} {v}" for k, v in figures.items() if k != "mode")
            )
        else:
            typer.echo(f"{name}: {figures}")
    if json_out is not None:
        import json

        from voxshard.schemas import storage

        storage.write_atomic(json_out, (json.dumps(results, indent=2) + "\n").encode())


@app.command()
def probe(
    run: Annotated[str, typer.Argument(help="a training run folder")],
    build: Annotated[str, typer.Argument(help="a build to probe on")],
    per_language: Annotated[int, typer.Option(help="utterances per language and split")] = 200,
    layer: Annotated[
        str, typer.Option(help="last, a block number 1..L, or all (accuracy of every block)")
    ] = "last",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "auto",
    batch_seconds: Annotated[float, typer.Option(help="padded audio per embedding batch")] = 64.0,
) -> None:
    """Linear language-ID probe on frozen mean-pooled embeddings of a chosen block:
    accuracy, macro-F1, per-language table, confusion matrix PNG (RUN/probe/)."""
    _setup_logging(False)
    try:
        from voxshard.training.probe import run_probe

        report = run_probe(run, build, per_language, layer, device, batch_seconds)
    except ImportError as error:
        _fail(ConfigError(f"{error}: install the training extra: pip install 'voxshard[train]'"), 2)
    except VoxshardError as error:
        _fail(error, 2)
    if len(report["layers"]) > 1:
        for row in report["layers"]:
            typer.echo(
                f"layer {row['layer']:>2}: accuracy {row['accuracy']:.3f}  "
                f"macro-F1 {row['macro_f1']:.3f}"
            )
    typer.echo(
        f"layer {report['layer']} of {report['layers_in_model']}: accuracy "
        f"{report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f} (chance "
        f"{report['chance']:.3f}; {report['train_utterances']} train / "
        f"{report['eval_utterances']} eval, {report['evaluated_on']})"
    )
    typer.echo(f"{'language':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for lang, row in report["per_language"].items():
        typer.echo(
            f"{lang:<10}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9}"
        )


def _matrix_language(tag: str) -> str:
    from voxshard.schemas import resolve_language

    return resolve_language(tag)


@app.command()
def normalize(
    lang: Annotated[str, typer.Option("--lang", help="matrix language (any tag form)")],
    policy: Annotated[str, typer.Option(help="keep, canonical, to-latin, to-native")] = "canonical",
    lexicon: Annotated[str | None, typer.Option(help="TSV of latin<TAB>native pairs")] = None,
    scheme: Annotated[
        str | None, typer.Option(help="to-native romanization: itrans, hk, iast, none")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Normalize lines from stdin to stdout: exactly one output line per input line."""
    from voxshard.normalizers import EMPTY, check_policy, normalize_lines, read_lexicon

    try:
        problems = check_policy(policy, scheme)
        if problems:
            raise ConfigError(problems)
        language = _matrix_language(lang)
        table = read_lexicon(lexicon) if lexicon else EMPTY
    except VoxshardError as error:
        _fail(error, 2)
    out = sys.stdout
    out.writelines(normalize_lines(sys.stdin.buffer, language, policy, table, scheme, as_json))
    out.flush()


@app.command()
def score(
    ref: Annotated[str, typer.Option(help="reference transcripts, one per line")],
    hyp: Annotated[str, typer.Option(help="hypotheses, one per line, same order")],
    lang: Annotated[str, typer.Option("--lang", help="matrix language")] = "hin",
    policy: Annotated[str, typer.Option(help="normalization before scoring")] = "canonical",
    lexicon: Annotated[str | None, typer.Option(help="TSV of latin<TAB>native pairs")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    details: Annotated[bool, typer.Option(help="per-utterance rows")] = False,
) -> None:
    """Corpus WER, CER and transliteration-insensitive WER (T-WER)."""
    import json

    from voxshard.normalizers import EMPTY, read_lexicon
    from voxshard.normalizers import score as score_lines

    try:
        language = _matrix_language(lang)
        table = read_lexicon(lexicon) if lexicon else EMPTY
        refs = _read_lines(ref)
        hyps = _read_lines(hyp)
        result = score_lines(refs, hyps, language, policy, table)
    except VoxshardError as error:
        _fail(error, 2)
    if as_json:
        typer.echo(json.dumps(result.to_json(details), ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"utterances {result.utterances}  reference words {result.ref_words}\n"
        f"WER   {result.wer:.4f}\nCER   {result.cer:.4f}\nT-WER {result.t_wer:.4f}"
    )
    if details:
        for row in result.detail_rows():
            typer.echo(
                f"{row['index']:>6}  WER {row['wer']:.3f}  CER {row['cer']:.3f}  "
                f"T-WER {row['t_wer']:.3f}"
            )


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.rstrip("\r") for line in lines]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("voxshard: interrupted", err=True)
        sys.exit(130)
    except OSError as error:  # a file the user named cannot be read or written: one line
        typer.echo(f"voxshard: error: {error}", err=True)
        sys.exit(1)
