"""Regenerate ``encoders/data/land_runs.tsv``: the world's land at 0.25 degrees, for maps.

    pip install global-land-mask==1.0.0   # MIT; NOAA GLOBE 1 km land/ocean mask (~1 GB in RAM)
    python tools/make_land_mask.py > encoders/data/land_runs.tsv

Each 0.25-degree cell is land when most of its 30 x 30 source cells are (lakes count as land,
as in the source). Rows run from 90N southwards, columns from 180W eastwards; a row is the
start and end (exclusive) column of each land run. ~47 kB of text instead of a map download:
``voxshard similarity`` draws its geo map from it with nothing fetched at run time.
"""

from __future__ import annotations

import numpy as np

CELL_DEG = 0.25


def main() -> None:
    from global_land_mask import globe

    ocean = globe._mask  # True = ocean, 1/120 degree cells from 90N, 180W
    step = round(CELL_DEG * 120)
    rows, cols = ocean.shape[0] // step, ocean.shape[1] // step
    blocks = ocean[: rows * step, : cols * step].reshape(rows, step, cols, step)
    land = blocks.mean(axis=(1, 3)) < 0.5
    print(f"# land_runs\tcell_deg={CELL_DEG}\trows={rows}\tcols={cols}\tsource=global-land-mask")
    for row in land:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        print(" ".join(str(int(e)) for e in edges))


if __name__ == "__main__":
    main()
