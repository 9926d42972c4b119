"""Plots for ``voxshard similarity`` (matplotlib, Agg backend: files only, no display)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
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


def heatmap(
    similarity: npt.NDArray[np.float32], languages: Sequence[str], name: str, path: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = clustered_order(similarity)
    data = similarity[np.ix_(order, order)]
    labels = [_label(languages[i]) for i in order]
    size = min(max(4.0, 0.32 * len(languages) + 2.5), 40.0)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("lightgrey")
    image = axes.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0.0, vmax=1.0)
    if len(languages) <= 120:
        axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_title(f"lang2vec {name}: cosine similarity (clustered; grey = no shared data)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="cosine similarity")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def geo_scatter(speakers: Sequence[dict[str, Any]], languages: Sequence[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(12, 6.5))
    sources = sorted({str(s["geo_source"]) for s in speakers if s["lat"] is not None})
    colours = dict(
        zip(sources, ["tab:blue", "tab:orange", "tab:green", "tab:purple"], strict=False)
    )
    for source in sources:
        places = Counter((s["lon"], s["lat"]) for s in speakers if s["geo_source"] == source)
        xs, ys = zip(*places, strict=True)
        sizes = [25 + 12 * count for count in places.values()]
        axes.scatter(
            xs,
            ys,
            s=sizes,
            alpha=0.45,
            color=colours.get(source, "grey"),
            zorder=3,
            label=f"speakers located by {source}: {sum(places.values())} (area ~ count)",
        )
    for code in languages:
        found = language_coordinates(code)
        if found is not None:
            lat, lon = found
            axes.scatter([lon], [lat], marker="^", s=70, color="black")
            axes.annotate(code, (lon, lat), textcoords="offset points", xytext=(4, 4), fontsize=9)
    axes.set_xlim(-180, 180)
    axes.set_ylim(-90, 90)
    axes.set_xlabel("longitude (degrees)")
    axes.set_ylabel("latitude (degrees)")
    axes.set_aspect("equal")
    axes.grid(True, alpha=0.3)
    axes.set_title("speakers and language locations (triangles: languages, lang2vec/Glottolog)")
    if sources:
        axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
