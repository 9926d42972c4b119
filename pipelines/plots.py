"""Plots for ``voxshard similarity`` (matplotlib, Agg backend: files only, no display)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from voxshard.encoders import language_coordinates
from voxshard.schemas import language_name


def clustered_order(similarity: npt.NDArray[np.float32]) -> list[int]:
    """Leaf order of average-linkage clustering on 1 - similarity (NaN as far apart)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(similarity) < 3:
        return list(range(len(similarity)))
    distance = 1.0 - np.nan_to_num(similarity.astype(np.float64), nan=-1.0)
    distance = np.clip((distance + distance.T) / 2.0, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    return [int(i) for i in leaves_list(linkage(squareform(distance, checks=False), "average"))]


def _label(code: str) -> str:
    try:
        return f"{code} {language_name(code)}"
    except KeyError:
        return code


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colour_range(values: npt.NDArray[np.float32]) -> tuple[float, float]:
    """The colour scale of a similarity matrix: its off-diagonal range (the diagonal is 1 by
    definition and would flatten every other difference), widened to at least 0.05."""
    data = np.asarray(values, dtype=np.float64)
    off = data[~np.eye(len(data), dtype=bool)] if len(data) > 1 else data.ravel()
    off = off[np.isfinite(off)]
    if off.size == 0:
        return 0.0, 1.0
    low, high = float(off.min()), float(off.max())
    if high - low < 0.05:
        middle = (low + high) / 2.0
        low, high = middle - 0.025, middle + 0.025
    return low, high


def heatmap(
    similarity: npt.NDArray[np.float32], languages: Sequence[str], name: str, path: str
) -> None:
    """A similarity matrix in clustered order, coloured over its own off-diagonal range
    (the colour bar says the range), each cell's value written when the matrix is small."""
    plt = _pyplot()
    import matplotlib

    order = clustered_order(similarity)
    data = similarity[np.ix_(order, order)]
    labels = [_label(languages[i]) for i in order]
    count = len(languages)
    size = min(max(6.0, 0.32 * count + 3.0), 40.0)  # wide enough for the title at any size
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    low, high = colour_range(data)
    image = axes.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=low, vmax=high)
    if count <= 120:
        axes.set_xticks(range(count), labels, rotation=90, fontsize=8)
        axes.set_yticks(range(count), labels, fontsize=8)
    if count <= 12:
        for i in range(count):
            for j in range(count):
                if np.isfinite(data[i, j]):
                    bright = (data[i, j] - low) / (high - low) > 0.6
                    axes.text(
                        j,
                        i,
                        f"{data[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="black" if bright else "white",
                    )
    figure.suptitle(f"lang2vec {name}: cosine similarity, {count} languages", fontsize=12)
    axes.set_title("clustered order; grey = no shared features", fontsize=9)
    figure.colorbar(
        image, ax=axes, fraction=0.046, pad=0.04, label=f"cosine similarity ({low:.2f}-{high:.2f})"
    )
    save(figure, path)


def save(figure: Any, path: str) -> None:
    """Lay the figure out and write it as PNG to a path or URL (atomically)."""
    import io

    import matplotlib.pyplot as plt

    from voxshard.schemas import storage

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    storage.write_atomic(path, buffer.getvalue())


def land_mask() -> tuple[npt.NDArray[np.bool_], float]:
    """The world's land (True) at ``cell_deg`` resolution, rows from 90N, columns from 180W:
    encoders/data/land_runs.tsv, made by tools/make_land_mask.py (nothing downloaded)."""
    from importlib import resources

    text = resources.files("voxshard.encoders").joinpath("data", "land_runs.tsv").read_text()
    header, *lines = text.split("\n")
    fields = dict(item.split("=", 1) for item in header.split("\t")[1:] if "=" in item)
    rows, cols = int(fields["rows"]), int(fields["cols"])
    land = np.zeros((rows, cols), dtype=bool)
    for index, line in enumerate(lines[:rows]):
        edges = [int(value) for value in line.split()]
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            land[index, start:end] = True
    return land, float(fields["cell_deg"])


def draw_world(axes: Any) -> None:
    """Land in light grey with darker coastlines, on the equirectangular (lon, lat) plane."""
    land, cell = land_mask()
    axes.imshow(
        land,
        extent=(-180.0, 180.0, -90.0, 90.0),
        cmap=_two_colours("#ffffff", "#ebe6dc"),
        interpolation="nearest",
        zorder=0,
    )
    lons = -180.0 + cell * (np.arange(land.shape[1]) + 0.5)
    lats = 90.0 - cell * (np.arange(land.shape[0]) + 0.5)
    axes.contour(
        lons,
        lats,
        land.astype(np.float32),
        levels=[0.5],
        colors="#8c8577",
        linewidths=0.5,
        zorder=1,
    )


def _two_colours(off: str, on: str) -> Any:
    from matplotlib.colors import ListedColormap

    return ListedColormap([off, on])


def map_extent(
    lons: Sequence[float], lats: Sequence[float], margin_deg: float = 8.0
) -> tuple[float, float, float, float]:
    """The map window around the points: their bounding box plus a margin, at least 40 x 25
    degrees, with the map's aspect kept near 2:1; the whole world when they span it."""
    if not lons:
        return -180.0, 180.0, -90.0, 90.0
    west, east = min(lons) - margin_deg, max(lons) + margin_deg
    south, north = min(lats) - margin_deg, max(lats) + margin_deg
    width = max(east - west, 40.0, 2.0 * (north - south))
    height = max(north - south, 25.0, width / 2.0)
    centre_x, centre_y = (west + east) / 2.0, (south + north) / 2.0
    west, east = centre_x - width / 2.0, centre_x + width / 2.0
    south, north = centre_y - height / 2.0, centre_y + height / 2.0
    if width >= 330.0 or height >= 160.0:  # nearly all of it: show all of it
        return -180.0, 180.0, -90.0, 90.0
    shift_x = max(0.0, -180.0 - west) - max(0.0, east - 180.0)
    shift_y = max(0.0, -90.0 - south) - max(0.0, north - 90.0)
    return west + shift_x, east + shift_x, south + shift_y, north + shift_y


SIZE_KEY = (1, 10, 100)  # speakers per place shown in the size legend


def _marker_area(count: int) -> float:
    """Marker area grows with log10 of the speakers at a place: one language's fallback place
    may hold thousands of speakers and must not cover the map."""
    return 30.0 + 60.0 * float(np.log10(max(count, 1)))


def geo_scatter(speakers: Sequence[dict[str, Any]], languages: Sequence[str], path: str) -> None:
    """Speakers (circles, area by how many share a place, colour by where the location came
    from) and languages (triangles) on a world map, zoomed to the points, with labels placed
    so they do not overlap and a key of marker sizes."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    figure, axes = plt.subplots(figsize=(13, 7))
    draw_world(axes)
    located = [s for s in speakers if s["lat"] is not None]
    sources = sorted({str(s["geo_source"]) for s in located})
    colours = dict(
        zip(sources, ["tab:blue", "tab:orange", "tab:green", "tab:purple"], strict=False)
    )
    lons: list[float] = []
    lats: list[float] = []
    handles: list[Any] = []
    markers: list[tuple[float, float, float]] = []  # (lon, lat, area in pt^2): label obstacles
    for source in sources:
        places = Counter((s["lon"], s["lat"]) for s in located if s["geo_source"] == source)
        ordered = sorted(places.items(), key=lambda kv: -kv[1])  # big first: small stay visible
        xs = [float(place[0]) for place, _ in ordered]
        ys = [float(place[1]) for place, _ in ordered]
        lons += xs
        lats += ys
        markers += [(x, y, _marker_area(c)) for x, y, (_, c) in zip(xs, ys, ordered, strict=True)]
        axes.scatter(
            xs,
            ys,
            s=[_marker_area(count) for _, count in ordered],
            alpha=0.5,
            color=colours.get(source, "grey"),
            edgecolors="black",
            linewidths=0.4,
            zorder=5,  # over the language triangles, translucent: neither hides the other
        )
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                color=colours.get(source, "grey"),
                label=f"speakers located by {source}: {sum(places.values())}",
            )
        )
    placed_languages = []
    for code in languages:
        found = language_coordinates(code)
        if found is not None:
            lat, lon = found
            placed_languages.append((code, float(lon), float(lat)))
            markers.append((float(lon), float(lat), 40.0))
            lons.append(float(lon))
            lats.append(float(lat))
    if placed_languages:
        axes.scatter(
            [p[1] for p in placed_languages],
            [p[2] for p in placed_languages],
            marker="^",
            s=40,
            color="black",
            edgecolors="white",
            linewidths=0.6,
            zorder=4,
        )
        handles.append(
            Line2D(
                [],
                [],
                marker="^",
                linestyle="",
                color="black",
                label="language location (lang2vec / Glottolog)",
            )
        )
    for count in SIZE_KEY:
        handles.append(
            axes.scatter(
                [],
                [],
                s=_marker_area(count),
                color="grey",
                alpha=0.55,
                label=f"{count} speaker{'s' if count > 1 else ''} at a place (area ~ log count)",
            )
        )
    west, east, south, north = map_extent(lons, lats)
    figure.set_size_inches(13.0, min(9.0, 9.0 * (north - south) / (east - west) + 1.6))
    axes.set_xlim(west, east)
    axes.set_ylim(south, north)
    axes.set_aspect("equal")
    axes.set_xlabel("longitude (degrees)")
    axes.set_ylabel("latitude (degrees)")
    axes.grid(True, alpha=0.25, zorder=2)
    axes.set_title(f"{len(located)} located speakers and {len(placed_languages)} languages")
    axes.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        labelspacing=1.3,
        borderpad=1.0,
        frameon=False,
    )
    figure.tight_layout()  # labels are placed in the final layout's display space
    _place_labels(figure, axes, placed_languages, markers)
    save(figure, path)


def _annotate(
    axes: Any, code: str, lon: float, lat: float, dx: float, dy: float, leader: bool
) -> Any:
    """A language code ``(dx, dy)`` points from its place, with a leader line if asked."""
    return axes.annotate(
        code,
        (lon, lat),
        textcoords="offset points",
        xytext=(dx, dy),
        fontsize=9,
        zorder=6,
        arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.6} if leader else None,
    )


def _label_offsets() -> list[tuple[float, float, bool]]:
    """Candidate label offsets in points (dx, dy, with a leader line): close around the
    point first, then rings further out in 12 directions."""
    offsets = [(6.0, 6.0, False), (6.0, -12.0, False), (-30.0, 6.0, False), (-30.0, -12.0, False)]
    for radius in (22.0, 36.0, 52.0):
        for step in range(12):
            angle = np.pi / 4 + step * np.pi / 6
            offsets.append((radius * np.cos(angle) - 8.0, radius * np.sin(angle) - 4.0, True))
    return offsets


LABEL_OFFSETS_PT = _label_offsets()


def _place_labels(
    figure: Any,
    axes: Any,
    points: Sequence[tuple[str, float, float]],
    markers: Sequence[tuple[float, float, float]],
) -> None:
    """Each language's code beside its triangle, at the first of a few offsets where it
    overlaps no marker and no label placed before it (else further out, with a leader line)."""
    from matplotlib.transforms import Bbox

    renderer = figure.canvas.get_renderer()
    taken: list[Any] = []
    for lon, lat, area in markers:
        x, y = axes.transData.transform((lon, lat))
        half = 0.5 * float(np.sqrt(area)) * figure.dpi / 72.0
        taken.append(Bbox.from_extents(x - half, y - half, x + half, y + half))
    for code, lon, lat in sorted(points, key=lambda p: (-p[2], p[1])):
        chosen = None
        for dx, dy, leader in LABEL_OFFSETS_PT:
            label = _annotate(axes, code, lon, lat, dx, dy, leader)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in taken):
                chosen = box
                break
            label.remove()
        if chosen is None:  # every place is taken: the first ring, overlapping
            dx, dy, _ = LABEL_OFFSETS_PT[4]
            chosen = _annotate(axes, code, lon, lat, dx, dy, True).get_window_extent(renderer)
        taken.append(chosen)


def hours_figure(
    stats: dict[str, Any], durations_s: Mapping[str, Sequence[float]], path: str
) -> None:
    """Two panels: audio per language stacked by split (the total at each bar's end), and
    utterance durations per language (box plots, N beside each language)."""
    plt = _pyplot()

    by_split = stats["by_language_split"]["hours"]
    per_language = stats["by_language"]["hours"]
    languages = sorted(per_language, key=lambda lang: (-per_language[lang], lang))
    splits = sorted({name.split("/", 1)[1] for name in by_split})
    height = max(3.5, 0.45 * len(languages) + 1.8)
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, height), gridspec_kw={"width_ratios": [1.2, 1]}
    )
    rows = list(range(len(languages)))[::-1]
    start = np.zeros(len(languages))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    minutes = max(per_language.values(), default=0.0) < 1.0
    scale, unit = (60.0, "minutes") if minutes else (1.0, "hours")
    for index, split in enumerate(splits):
        values = np.array([by_split.get(f"{lang}/{split}", 0.0) for lang in languages]) * scale
        left.barh(rows, values, left=start, color=palette[index % len(palette)], label=split)
        start += values
    for row, value in zip(rows, start, strict=True):
        left.text(value, row, f" {_hours(value / scale)}", va="center", fontsize=8)
    left.set_yticks(rows, [_label(lang) for lang in languages], fontsize=9)
    left.set_xlabel(unit)
    left.set_xlim(0, float(start.max()) * 1.2 if len(start) else 1.0)
    left.legend(
        title="split",
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12 - 0.6 / height),
        ncol=max(1, len(splits)),
        frameon=False,
    )
    left.set_title(
        f"audio per language: {_hours(stats['hours'])} in {stats['written']:,} utterances"
    )
    data = [np.asarray(durations_s.get(lang, []), dtype=np.float64) for lang in languages]
    right.boxplot(
        [d if d.size else [np.nan] for d in data],
        orientation="horizontal",
        positions=rows,
        widths=0.6,
        flierprops={"markersize": 2},
    )
    right.set_yticks(
        rows,
        [f"{lang} (N={d.size:,})" for lang, d in zip(languages, data, strict=True)],
        fontsize=9,
    )
    right.set_xlabel("utterance duration (seconds)")
    right.set_title("utterance durations (box: quartiles; whiskers: 1.5 IQR)")
    right.grid(True, axis="x", alpha=0.3)
    save(figure, path)


def _hours(value: float) -> str:
    if value >= 10:
        return f"{value:,.0f} h"
    if value >= 1:
        return f"{value:.1f} h"
    return f"{value * 60:.1f} min"
