from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import tone, write_audio, write_tsv
from voxshard.encoders import haversine_km, load_feature_set
from voxshard.pipelines.config import BuildConfig
from voxshard.pipelines.runner import run_build
from voxshard.pipelines.similarity import SimilarityConfig, run_similarity
from voxshard.schemas import ConfigError, resolve_language
from voxshard.schemas.languages import tables

REPO = Path(__file__).resolve().parents[1]
PLACES = {  # speaker -> (language, lat, lon)
    "fiji": ("fij", -17.7, 178.9),
    "samoa": ("smo", -13.8, -172.1),  # across the dateline from Fiji
    "quito": ("spa", -0.18, -78.47),  # on the equator
    "oslo": ("nob", 59.91, 10.75),
}


@pytest.fixture
def placed_build(tmp_path: Path) -> Path:
    rows = []
    for index, (speaker, (language, lat, lon)) in enumerate(PLACES.items()):
        for take in range(2):
            name = f"{speaker}{take}.wav"
            write_audio(tmp_path / name, tone(200 + 50 * index, 1.0, 16000), 16000, "wav")
            rows.append([name, language, speaker, str(lat), str(lon)])
    write_audio(tmp_path / "anon.wav", tone(900, 1.0, 16000), 16000, "wav")
    rows.append(["anon.wav", "deu", "berlin", "", ""])  # no coordinates: the language's place
    write_tsv(tmp_path / "m.tsv", ["path", "language", "speaker", "lat", "lon"], rows)
    out = tmp_path / "build"
    run_build(BuildConfig("manifest", str(tmp_path / "m.tsv"), str(out)))
    return out


def test_similarity_cli_on_a_build(placed_build: Path, tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxshard",
            "similarity",
            str(placed_build),
            "--languages",
            "ja,pt",
            "--out",
            str(sim),
            "--feature-sets",
            "syntax_knn,fam,syntax_wals",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    languages = json.loads((sim / "languages.json").read_text())
    assert languages == ["deu", "fij", "jpn", "nob", "por", "smo", "spa"]
    for name in ("syntax_knn", "fam", "syntax_wals"):
        matrix = np.load(sim / f"lang_{name}.npy")
        assert matrix.dtype == np.float32 and matrix.shape == (7, 7)
        np.testing.assert_array_equal(matrix, matrix.T)
        np.testing.assert_array_equal(np.diag(matrix), np.ones(7, dtype=np.float32))
        assert (sim / f"lang_{name}.png").stat().st_size > 10_000
    knn = np.load(sim / "lang_syntax_knn.npy")
    spa, por, jpn = languages.index("spa"), languages.index("por"), languages.index("jpn")
    assert knn[spa, por] == pytest.approx(0.9503, abs=1e-4) and knn[spa, jpn] < 0.5
    pairs = pq.read_table(sim / "language_pairs.parquet").to_pylist()
    assert len(pairs) == 3 * 21
    report = json.loads((sim / "report.json").read_text())
    assert report["feature_sets"]["fam"]["substituted"] == {"nob": "nor"}  # all-zero fam vector

    speakers = pq.read_table(sim / "speakers.parquet").to_pylist()
    assert [s["speaker"] for s in speakers] == [
        "manifest_berlin",
        "manifest_fiji",
        "manifest_oslo",
        "manifest_quito",
        "manifest_samoa",
    ]
    assert speakers[0]["geo_source"] == "language" and speakers[0]["utterances"] == 1
    assert speakers[1]["geo_source"] == "manifest" and speakers[1]["utterances"] == 2
    distances = np.load(sim / "speaker_haversine_km.npy")
    for i, a in enumerate(speakers):
        for j, b in enumerate(speakers):
            expected = haversine_km(a["lat"], a["lon"], b["lat"], b["lon"])
            assert distances[i, j] == pytest.approx(expected, rel=1e-3, abs=0.01)
    fiji, samoa = 1, 4
    assert distances[fiji, samoa] < 1300  # across the dateline, not around the globe
    kernel = np.load(sim / "speaker_geo_similarity.npy")
    np.testing.assert_allclose(kernel, np.exp(-distances / 500.0), rtol=1e-5)
    assert (sim / "geo.png").stat().st_size > 10_000


def test_unknown_languages_and_nan_pairs_are_reported(tmp_path: Path) -> None:
    knn = load_feature_set("syntax_knn")
    unknown = sorted(code for code in tables().codes if code not in knn.index)[0]
    report = run_similarity(
        SimilarityConfig(
            builds=(),
            out=str(tmp_path / "sim"),
            languages=("spa", "por", unknown),
            feature_sets=("syntax_knn", "syntax_wals"),
            min_shared=10_000,
            plots=False,
        )
    )
    knn_report = report["feature_sets"]["syntax_knn"]
    assert knn_report["unknown_languages"] == [unknown]
    assert {(p["lang_a"], p["lang_b"]) for p in knn_report["nan_pairs"]} == {
        tuple(sorted((unknown, "por"))),
        tuple(sorted((unknown, "spa"))),
    }
    wals = report["feature_sets"]["syntax_wals"]
    assert wals["min_shared"] == len(load_feature_set("syntax_wals").feature_names)
    spa_por = [p for p in wals["nan_pairs"] if {p["lang_a"], p["lang_b"]} == {"spa", "por"}]
    assert spa_por and spa_por[0]["reason"].startswith("fewer than")
    matrix = np.load(tmp_path / "sim" / "lang_syntax_wals.npy")
    assert np.isnan(matrix[0, 1]) and matrix[0, 0] == 1.0
    assert resolve_language(unknown) == unknown


def test_config_errors_are_collected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        SimilarityConfig(
            builds=(str(tmp_path),),
            out=str(tmp_path / "o"),
            languages=("klingon",),
            feature_sets=("syntax_magic",),
            geo_scale_km=0,
        )
    problems = info.value.problems
    assert len(problems) == 4
    assert problems[0] == f"{str(tmp_path)!r} holds no utterances.parquet: is it a build folder?"
    assert problems[1].startswith("--languages: unknown language tag 'klingon'")
    assert problems[2].startswith("unknown feature set 'syntax_magic'; choose from syntax_knn,")
    assert problems[3] == "--geo-scale-km 0 must be positive"
