from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import run_cli
from voxshard.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["build", "commonvoice", "/no/such/root", "--out", "{out}"],
            "ROOT '/no/such/root' does not exist",
        ),
        (["build", "lhotse", "{root}", "--out", "{out}"], "unknown SOURCE 'lhotse'; choose one of"),
        (
            ["build", "commonvoice", "{root}", "--out", "{out}", "--languages", "xx"],
            "unknown language tag 'xx'",
        ),
        (
            ["build", "commonvoice", "{root}", "--out", "{nonempty}"],
            "is not empty and holds no voxshard build",
        ),
        (["inspect", "{root}"], "holds no stats.json"),
    ],
)
def test_user_mistakes_give_one_clear_line(
    cv_root: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    values = {
        "out": str(tmp_path / "out"),
        "root": str(cv_root),
        "nonempty": str(tmp_path / "full"),
    }
    result = run_cli(*(a.format(**values) for a in args))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxshard: error: ") and message in lines[0]


def test_build_then_inspect(cv_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "build",
        "commonvoice",
        str(cv_root),
        "--out",
        str(out),
        "--languages",
        "pl,de",
        "--splits",
        "train",
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 4 utterances" in result.stdout
    assert json.loads((out / "stats.json").read_text())["by_language"]["utterances"] == {
        "deu": 2,
        "pol": 2,
    }
    shown = runner.invoke(app, ["inspect", str(out)])
    assert shown.exit_code == 0
    assert "deu" in shown.stdout and "pol" in shown.stdout
    assert "written 4, rejected 0" in shown.stdout


def test_beam_options_after_double_dash_reach_beam(cv_root: Path, tmp_path: Path) -> None:
    # an option Beam knows passes through untouched
    result = run_cli(
        "build",
        "commonvoice",
        str(cv_root),
        "--out",
        str(tmp_path / "o"),
        "--languages",
        "pl",
        "--",
        "--job_name=voxshard-test",
        "--direct_num_workers=3",
    )
    assert result.returncode == 0, result.stderr
    # and they arrive in Beam's PipelineOptions as given (except what --workers decides)
    from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions

    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.runner import plan_run

    config = BuildConfig("commonvoice", str(cv_root), str(tmp_path / "p"))
    plan = plan_run(config, ["--job_name=voxshard-test", "--direct_running_mode=in_memory"])
    assert plan.options.view_as(GoogleCloudOptions).job_name == "voxshard-test"
    assert plan.options.view_as(DirectOptions).direct_num_workers == 1  # from --workers


def test_help_is_fast_and_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("build", "inspect", "demo"):
        assert command in result.stdout
    heavy = ("apache_beam", "torch", "pyarrow", "soundfile", "librosa", "matplotlib", "scipy")
    code = f"import voxshard.cli, sys; print([m for m in {heavy!r} if m in sys.modules])"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert probe.stdout.strip() == "[]"
    started = time.perf_counter()
    shown = subprocess.run(
        [sys.executable, "-m", "voxshard", "--help"], capture_output=True, text=True, cwd=REPO
    )
    # ~0.3 s here; the bound only catches a heavy import creeping in (Beam alone is 1.3 s+)
    assert shown.returncode == 0 and time.perf_counter() - started < 5.0


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    result = run_cli("demo", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr

    def stats(source: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(
            (tmp_path / "demo" / "build" / source / "stats.json").read_text()
        )
        return value

    cv = stats("commonvoice")
    assert set(cv["by_language"]["utterances"]) == {"cmn", "eng", "hin", "pol", "rus"}
    assert cv["rejected"] == 4 and cv["written"] == 100
    assert set(stats("voxpopuli")["by_language"]["utterances"]) == {"deu", "fra"}
    assert set(stats("mls")["by_language"]["utterances"]) == {"ita", "spa"}
    assert stats("mls")["discovered"] == 16  # Spanish FLAC and Opus releases counted once
    assert stats("babel")["rejected_by_reason"] == {"no speech in segment": 2}
    demo = tmp_path / "demo"
    assert (demo / "similarity" / "lang_syntax_knn.npy").exists()
    assert len((demo / "run" / "metrics.jsonl").read_text().splitlines()) == 40
    assert (demo / "run" / "probe" / "confusion.png").exists()


def test_version_sources_and_misspelled_splits(cv_root: Path, tmp_path: Path) -> None:
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == "voxshard 0.1.0"
    shown = run_cli("build", "--help")
    for source in ("commonvoice", "voxpopuli", "mls", "babel", "manifest"):
        assert f"{source}:" in shown.stdout
    typo = run_cli(
        "build", "commonvoice", str(cv_root), "--out", str(tmp_path / "o"), "--splits", "dev,tset"
    )
    assert typo.returncode == 2
    assert typo.stderr.strip() == (
        "voxshard: error: --splits: commonvoice has no split 'tset'; did you mean 'test'? "
        "choose from train, dev, test, validated, other, invalidated"
    )


def test_a_missing_similarity_folder_is_one_line(cv_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from voxshard.pipelines.config import BuildConfig
    from voxshard.pipelines.runner import run_build

    run_build(BuildConfig("commonvoice", str(cv_root), str(tmp_path / "b")))
    result = run_cli(
        "train",
        str(tmp_path / "b"),
        "--out",
        str(tmp_path / "run"),
        "--sim",
        str(tmp_path / "missing"),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    expected = f"voxshard: error: --sim '{tmp_path / 'missing'}' is not a voxshard"
    assert lines[0].startswith(expected), result.stderr


def test_languages_the_corpus_lacks_are_errors_with_what_it_has(
    cv_root: Path, tmp_path: Path
) -> None:
    import shutil

    (cv_root / "zh-CN").mkdir()
    for item in (cv_root / "en").iterdir():  # a copy of the English folder as zh-CN
        target = cv_root / "zh-CN" / item.name
        shutil.copytree(item, target) if item.is_dir() else shutil.copy(item, target)
    out = str(tmp_path / "o")
    missing = run_cli("build", "commonvoice", str(cv_root), "--out", out, "--languages", "en,fr")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "voxshard: error: --languages fr: commonvoice under ROOT has no fr (fra); it has "
        "zh-CN (cmn), de (deu), en (eng), pl (pol)"
    )
    macro = run_cli("build", "commonvoice", str(cv_root), "--out", out, "--languages", "zh")
    assert macro.returncode == 2
    assert (
        "zh is zho, a macrolanguage; commonvoice under ROOT has it as zh-CN (cmn)" in macro.stderr
    )


def test_corpus_options_come_from_the_registry(cv_root: Path, tmp_path: Path) -> None:
    """Each corpus declares its own options (corpora/: Setting); the CLI makes them, says
    whose they are, and refuses one given to another corpus."""
    from voxshard.cli import _settings
    from voxshard.corpora import corpus_settings
    from voxshard.pipelines.demo import generate_mls_demo

    shown = run_cli("build", "--help", env={"COLUMNS": "200"})
    for setting, corpora in corpus_settings():
        assert setting.option in shown.stdout and f"{corpora[0]}: " in shown.stdout
    assert _settings({"subset": "9hr", "keep_silence": True, "babel_eval_window": 10.0}) == (
        ("babel_eval_window", "10.0"),
        ("keep_silence", "yes"),
        ("subset", "9hr"),
    )
    assert _settings({"keep_silence": False, "subset": None}) == ()
    generate_mls_demo(str(tmp_path / "mls"))
    root, out = str(tmp_path / "mls"), str(tmp_path / "o")
    planned = run_cli("build", "mls", root, "--out", out, "--mls-release", "opus", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "ita " in planned.stdout  # the Opus release holds Italian; FLAC does not
    handles = run_cli("build", "mls", root, "--out", out, "--subset", "9hr", "--dry-run")
    assert handles.returncode == 2 and "Traceback" not in handles.stderr
    assert handles.stderr.strip().endswith("limited_supervision/9hr/handles.txt is missing")
    wrong = run_cli(
        "build", "commonvoice", str(cv_root), "--out", str(tmp_path / "c"), "--keep-silence"
    )
    assert wrong.returncode == 2 and "--keep-silence does not apply to commonvoice" in wrong.stderr
    bad = run_cli(
        "build", "mls", str(tmp_path / "mls"), "--out", str(tmp_path / "m"), "--subset", "2hr"
    )
    assert bad.returncode == 2 and "--subset '2hr' must be one of all, 9hr, 1hr, 10hr" in bad.stderr
