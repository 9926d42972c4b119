"""The pictures: the shipped world land mask, the map window, colour scales, hours per
language; each written and read back as an image of the expected size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import run_cli
from voxshard.pipelines.plots import (
    colour_range,
    geo_scatter,
    heatmap,
    hours_figure,
    land_mask,
    map_extent,
)


def cell(land: np.ndarray, step: float, lat: float, lon: float) -> bool:
    return bool(land[int((90.0 - lat) / step), int((lon + 180.0) / step)])


def test_the_shipped_land_mask_is_the_world() -> None:
    land, step = land_mask()
    assert land.shape == (720, 1440) and step == 0.25
    # land (lakes included, as in the source) is ~29 % of the surface on an equal-area
    # measure; on this latitude-longitude grid, Antarctica's rows make it ~33 %
    assert 0.30 < land.mean() < 0.36
    weights = np.cos(np.radians(90.0 - step * (np.arange(720) + 0.5)))
    assert 0.27 < float((land.mean(axis=1) * weights).sum() / weights.sum()) < 0.31
    for lat, lon in [(48.85, 2.35), (23.0, 10.0), (-85.0, 0.0), (-25.0, 135.0), (40.0, -100.0)]:
        assert cell(land, step, lat, lon), (lat, lon)  # Paris, Sahara, Antarctica, AU, US
    for lat, lon in [(30.0, -40.0), (0.0, -140.0), (-40.0, 80.0), (88.0, 0.0)]:
        assert not cell(land, step, lat, lon), (lat, lon)  # Atlantic, Pacific, Indian, Arctic


def test_map_window_holds_every_point() -> None:
    lons, lats = [2.35, 13.4, 21.0], [48.85, 52.5, 52.2]  # Paris, Berlin, Warsaw
    west, east, south, north = map_extent(lons, lats)
    assert west <= min(lons) - 8 and east >= max(lons) + 8
    assert south <= min(lats) - 8 and north >= max(lats) + 8
    assert east - west >= 40 and north - south >= 25 and west >= -180 and north <= 90
    assert map_extent([-170.0, 170.0], [-60.0, 70.0]) == (-180.0, 180.0, -90.0, 90.0)
    assert map_extent([], []) == (-180.0, 180.0, -90.0, 90.0)


def test_colour_scale_is_the_off_diagonal_range() -> None:
    matrix = np.array([[1.0, 0.91, 0.93], [0.91, 1.0, 0.97], [0.93, 0.97, 1.0]], np.float32)
    low, high = colour_range(matrix)
    assert (low, high) == pytest.approx((0.91, 0.97))
    flat = np.array([[1.0, 0.5], [0.5, 1.0]], np.float32)
    assert colour_range(flat) == pytest.approx((0.475, 0.525))


def image_size(path: Path) -> tuple[int, int]:
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(path).shape
    return width, height


def test_pictures_are_written(tmp_path: Path) -> None:
    matrix = np.array([[1.0, 0.4], [0.4, 1.0]], np.float32)
    heatmap(matrix, ["eng", "fra"], "syntax_knn", str(tmp_path / "h.png"))
    width, height = image_size(tmp_path / "h.png")
    assert width >= 600 and height >= 600  # big enough for its title at two languages
    speakers: list[dict[str, Any]] = [
        {"lat": 52.5, "lon": 13.4, "geo_source": "speaker"},
        {"lat": 52.5, "lon": 13.4, "geo_source": "speaker"},
        {"lat": 48.0, "lon": 2.0, "geo_source": "language"},
        {"lat": None, "lon": None, "geo_source": None},
    ]
    geo_scatter(speakers, ["deu", "fra", "pol"], str(tmp_path / "g.png"))
    assert image_size(tmp_path / "g.png")[0] == 1430
    stats = {
        "hours": 3.5,
        "written": 30,
        "by_language": {"hours": {"eng": 2.0, "pol": 1.5}},
        "by_language_split": {"hours": {"eng/train": 1.5, "eng/dev": 0.5, "pol/train": 1.5}},
    }
    hours_figure(stats, {"eng": [1.0, 2.0, 3.0], "pol": [4.0]}, str(tmp_path / "d.png"))
    assert image_size(tmp_path / "d.png") == (1430, 385)


def test_inspect_plot_and_card(cv_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("build", "commonvoice", str(cv_root), "--out", str(out)).returncode == 0
    shown = run_cli("inspect", str(out), "--plot", str(tmp_path / "hours.png"))
    assert shown.returncode == 0, shown.stderr
    assert "licences: CC0-1.0 (" in shown.stdout
    assert image_size(tmp_path / "hours.png")[0] == 1430
    card = run_cli("inspect", str(out), "--card")
    assert card.stdout.startswith("# voxshard build: commonvoice")
    assert card.stdout.strip() == (out / "README.md").read_text(encoding="utf-8").strip()
