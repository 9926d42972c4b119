from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxshard.encoders import (
    EARTH_RADIUS_KM,
    GeoEncoder,
    LanguageEncoder,
    haversine_km,
    language_coordinates,
    load_feature_set,
    masked_cosine,
    pairwise_haversine_km,
)
from voxshard.encoders.coordinates import anchor_lat_lon, solve_coordinates
from voxshard.encoders.lang2vec import lang2vec_data, load_raw
from voxshard.pipelines.similarity import write_npy_blocks

HALF_CIRCUMFERENCE_KM = math.pi * EARTH_RADIUS_KM


def test_haversine_published_and_edge_values() -> None:
    assert haversine_km(45.7597, 4.8422, 48.8567, 2.3508) == pytest.approx(392.2, abs=0.05)
    assert haversine_km(10.0, 20.0, 10.0, 20.0) == 0.0
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(HALF_CIRCUMFERENCE_KM)
    assert haversine_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(HALF_CIRCUMFERENCE_KM)
    assert haversine_km(90.0, 10.0, 90.0, -170.0) == pytest.approx(0.0, abs=1e-6)  # one pole
    across = haversine_km(0.0, 179.5, 0.0, -179.5)  # across the dateline, not around the world
    assert across == pytest.approx(math.radians(1.0) * EARTH_RADIUS_KM)
    assert haversine_km(0.0, 0.0, 1e-9, 0.0) == pytest.approx(1.112e-7, rel=1e-3)  # stable
    assert not np.isnan(haversine_km(12.3, 45.6, -12.3, -134.4))  # antipodes: no NaN


def test_haversine_matches_sklearn_on_random_points() -> None:
    from sklearn.metrics.pairwise import haversine_distances

    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-90, 90, 300), rng.uniform(-180, 180, 300)])
    ours = pairwise_haversine_km(points)
    reference = haversine_distances(np.radians(points)) * EARTH_RADIUS_KM
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-3)


points = st.tuples(st.floats(-90, 90), st.floats(-180, 180))


@settings(max_examples=300, deadline=None)
@given(points, points, points)
def test_haversine_properties(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]
) -> None:
    ab = haversine_km(*a, *b)
    assert ab == pytest.approx(haversine_km(*b, *a), abs=1e-9)
    assert 0.0 <= ab <= HALF_CIRCUMFERENCE_KM + 1e-9
    assert ab <= haversine_km(*a, *c) + haversine_km(*c, *b) + 1e-6


def test_blockwise_file_equals_the_in_memory_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(-90, 90, 2500), rng.uniform(-180, 180, 2500)])
    write_npy_blocks(str(tmp_path / "d.npy"), points, None)
    write_npy_blocks(str(tmp_path / "s.npy"), points, 500.0)
    distances = np.load(tmp_path / "d.npy", mmap_mode="r")
    assert distances.shape == (2500, 2500) and distances.dtype == np.float32
    np.testing.assert_array_equal(distances, pairwise_haversine_km(points))
    kernel = np.load(tmp_path / "s.npy")  # exp of float64 distances vs of float32 ones
    np.testing.assert_allclose(kernel, np.exp(-distances / 500.0), rtol=1e-4, atol=1e-12)


def test_masked_cosine_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, (12, 30)).astype(np.float32)
    a[rng.uniform(size=a.shape) < 0.4] = np.nan
    a[3] = 0.0  # an all-zero vector
    similarity, shared = masked_cosine(a, min_shared=5)
    for i in range(12):
        for j in range(12):
            both = ~np.isnan(a[i]) & ~np.isnan(a[j])
            x, y = a[i][both].astype(np.float64), a[j][both].astype(np.float64)
            assert shared[i, j] == both.sum()
            norm = np.linalg.norm(x) * np.linalg.norm(y)
            if both.sum() < 5 or norm == 0:
                assert np.isnan(similarity[i, j])
            else:
                assert similarity[i, j] == pytest.approx(x @ y / norm, abs=1e-6)


def _independent_cosine(name_file: str, source: str, prefix: str, x: str, y: str) -> float:
    """Straight from lang2vec's arrays, without voxshard's loader."""
    with np.load(lang2vec_data(name_file)) as data:
        langs = list(data["langs"])
        feats = [i for i, f in enumerate(data["feats"]) if str(f).startswith(prefix)]
        s = list(data["sources"]).index(source)
        u = data["data"][langs.index(x), feats, s].astype(np.float64)
        v = data["data"][langs.index(y), feats, s].astype(np.float64)
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_syntax_knn_facts() -> None:
    encoder = LanguageEncoder("syntax_knn")
    similarity = encoder.pairwise(["spa", "por", "jpn"])
    assert similarity[0, 1] == pytest.approx(0.9503, abs=1e-4)
    assert similarity[0, 2] == pytest.approx(0.4224, abs=1e-4)
    assert similarity[0, 1] > similarity[0, 2] + 0.4
    expected = _independent_cosine("feature_predictions.npz", "predicted", "S_", "spa", "jpn")
    assert similarity[0, 2] == pytest.approx(expected, abs=1e-6)
    vectors = encoder.vectors(["spa", "xxx-unknown"])
    assert vectors.shape == (2, encoder.dim) and not vectors[1].any()


def test_feature_sets_and_stand_ins() -> None:
    fam = load_feature_set("fam")
    assert not fam.usable("nob")  # an all-zero family vector
    assert fam.resolve("nob") == ("nor", "nob -> nor")
    wals = load_feature_set("syntax_wals")
    assert np.isnan(wals.values).any()  # WALS has gaps; knn sets do not
    assert not np.isnan(load_feature_set("syntax_knn").values).any()
    _langs, names, values = load_raw("geo")
    assert len(names) == 299 and values.shape == (7970, 299)


def test_language_coordinates_regenerate_and_land_where_expected() -> None:
    langs, _names, values = load_raw("geo")
    codes = ["eng", "hin", "jpn", "yor"]
    rows = np.array([values[list(langs).index(code)] for code in codes], dtype=np.float64)
    lat, lon, rms = solve_coordinates(rows)
    for code, a, b in zip(codes, lat, lon, strict=True):
        assert language_coordinates(code) == pytest.approx((round(a, 4), round(b, 4)), abs=1e-4)
    assert (rms < 5e-5).all()  # the features are rounded to 1e-4: this is the noise floor
    expected = {"eng": (53.0, -1.0), "hin": (25.0, 77.0), "jpn": (35.0, 135.0), "yor": (7.15, 3.67)}
    for code, (a, b) in expected.items():
        found = language_coordinates(code)
        assert found is not None and haversine_km(*found, a, b) < 1.0
    lat_anchor, lon_anchor = anchor_lat_lon()
    assert (round(lat_anchor[0]), round(lon_anchor[0])) == (-83, 42)  # GC_-83_42


def test_geo_encoder() -> None:
    encoder = GeoEncoder(scale_km=500.0)
    points = np.array([[0.0, 0.0], [0.0, 90.0], [90.0, 0.0]])
    np.testing.assert_allclose(
        encoder.vectors(points), [[1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-12
    )
    similarity = encoder.pairwise(points)
    assert similarity[0, 0] == 1.0
    assert similarity[0, 1] == pytest.approx(math.exp(-HALF_CIRCUMFERENCE_KM / 2 / 500.0), rel=1e-5)


def test_every_member_of_a_macrolanguage_tries_its_stand_ins() -> None:
    """srp and bos fall back to hbs like hrv; a vector too sparse for --min-shared counts as
    missing, so its stand-in is tried (hrv has 12 syntax_average features)."""
    from voxshard.encoders.lang2vec import candidates, load_feature_set

    assert candidates("srp") == ["srp", "hbs", "hrv"]
    assert candidates("bos") == ["bos", "hbs", "hrv"]
    assert candidates("zho") == ["zho", "cmn"] and candidates("cmn") == ["cmn", "zho"]
    wals = load_feature_set("syntax_wals")
    assert wals.resolve("srp", 20) == ("hbs", "srp -> hbs")
    assert wals.resolve("hrv", 20) == ("hbs", "hrv -> hbs")
    average = load_feature_set("syntax_average")
    assert average.usable("hrv", 1) and not average.usable("hrv", 20)
    assert average.resolve("hrv", 20) == ("hbs", "hrv -> hbs")
    assert average.resolve("hrv", 1) == ("hrv", None)
