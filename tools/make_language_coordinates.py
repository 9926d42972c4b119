"""Regenerate ``encoders/data/language_coordinates.tsv`` from lang2vec's geocoord features.

    python tools/make_language_coordinates.py > encoders/data/language_coordinates.tsv

Languages whose geo vector is missing (-1) are left out, and so are rows no point explains
(rms > 1e-3: the placeholders und, mul, zxx, mis, zbl, whose angles are all 1).
Columns: code, lat, lon (degrees, 4 decimals ~ 10 m) and rms, the fit's root-mean-square
residual in the features' own unit (angle / pi); the features are rounded to 1e-4, so about
3e-5 is a perfect fit.
"""

from __future__ import annotations

import numpy as np

from voxshard.encoders.coordinates import solve_coordinates
from voxshard.encoders.lang2vec import load_raw

MAX_RMS = 1e-3


def main() -> None:
    langs, _names, values = load_raw("geo")
    known = (values >= 0).all(axis=1)
    lat, lon, rms = solve_coordinates(values[known].astype(np.float64))
    print("code\tlat\tlon\trms")
    for code, a, b, r in zip(langs[known], lat, lon, rms, strict=True):
        if r <= MAX_RMS:
            print(f"{code}\t{a:.4f}\t{b:.4f}\t{r:.6f}")


if __name__ == "__main__":
    main()
