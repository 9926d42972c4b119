"""lang2vec / URIEL feature vectors read straight from the package's ``.npz`` files.

This avoids ``import lang2vec.lang2vec`` (it needs ``pkg_resources``, which current
setuptools removed, and takes seconds) and its wrong ``LANGUAGES`` lists: the language codes
come from the arrays themselves. Missing values (-1) become NaN; cosine similarity is
mask-aware (a pair uses only the features both languages have) and NaN where a pair shares
fewer than ``min_shared`` features or a vector is all zeros.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxshard.schemas import ConfigError
from voxshard.schemas.tables import data_rows

FloatArray = npt.NDArray[np.float32]
BLOCK_ROWS = 2048


def lang2vec_data(name: str) -> str:
    """Path of a file in lang2vec's data folder, found through the installed distribution.

    Not through ``import lang2vec``: the distribution also installs a ``bin/lang2vec.py``
    script that shadows the package whenever a console script runs from that folder.
    """
    from importlib import metadata

    try:
        path = metadata.distribution("lang2vec").locate_file(f"lang2vec/data/{name}")
    except metadata.PackageNotFoundError as error:
        raise ConfigError("lang2vec is not installed: pip install lang2vec") from error
    return str(path)


@dataclass(frozen=True)
class FeatureSetSpec:
    name: str
    file: str
    source: str
    prefix: str


@functools.cache
def feature_sets() -> dict[str, FeatureSetSpec]:
    return {
        row["name"]: FeatureSetSpec(row["name"], row["file"], row["source"], row["prefix"])
        for row in data_rows("voxshard.encoders", "feature_sets.tsv")
    }


@functools.cache
def stand_ins() -> dict[str, str]:
    """code -> stand-in code: a macrolanguage's main individual language and back, a retired
    code's successor (rows of kind ``macrolanguage`` and ``retired``)."""
    table: dict[str, str] = {}
    for row in data_rows("voxshard.encoders", "macrolanguages.tsv"):
        if row["kind"] == "member":
            continue
        table[row["code"]] = row["stand_in"]
        table.setdefault(row["stand_in"], row["code"])
    return table


@functools.cache
def macrolanguage_of() -> dict[str, str]:
    """member -> macrolanguage (rows of kind ``member``, and each macrolanguage's main one)."""
    table = {
        row["code"]: row["stand_in"]
        for row in data_rows("voxshard.encoders", "macrolanguages.tsv")
        if row["kind"] == "member"
    }
    for row in data_rows("voxshard.encoders", "macrolanguages.tsv"):
        if row["kind"] == "macrolanguage":
            table.setdefault(row["stand_in"], row["code"])
    return table


def candidates(code: str) -> list[str]:
    """The codes tried for a language, in order: itself, its macrolanguage, and that
    macrolanguage's main individual language (srp -> hbs -> hrv; zho -> cmn)."""
    chain = [code]
    macro = macrolanguage_of().get(code)
    if macro is not None:
        chain.append(macro)
    stand_in = stand_ins().get(macro or code)
    if stand_in is not None and stand_in not in chain:
        chain.append(stand_in)
    return chain


@functools.lru_cache(maxsize=8)
def load_raw(name: str) -> tuple[npt.NDArray[np.str_], list[str], FloatArray]:
    """(language codes, feature names, values with -1 for missing) of a feature set."""
    specs = feature_sets()
    if name not in specs:
        raise ConfigError(f"unknown feature set {name!r}; choose from {', '.join(specs)}")
    spec = specs[name]
    with open(lang2vec_data(spec.file), "rb") as handle, np.load(handle) as database:
        names = [str(f) for f in database["feats"]]
        columns = [i for i, f in enumerate(names) if f.startswith(spec.prefix)]
        sources = [str(s) for s in database["sources"]]
        if spec.source not in sources:
            raise ConfigError(f"feature set {name}: source {spec.source} missing in {spec.file}")
        source = sources.index(spec.source)
        values = np.asarray(database["data"][:, columns, source], dtype=np.float32)
        langs = database["langs"].astype(str)
    return langs, [names[i] for i in columns], values


@dataclass(frozen=True)
class FeatureSet:
    name: str
    codes: tuple[str, ...]
    feature_names: tuple[str, ...]
    values: FloatArray  # (languages, features), NaN where missing

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {code: i for i, code in enumerate(self.codes)}

    def usable(self, code: str, min_shared: int = 1) -> bool:
        """The language is in the set with at least ``min_shared`` known features (as many
        as the set has, if fewer), not all zero: it can give a similarity."""
        row = self.index.get(code)
        if row is None:
            return False
        vector = self.values[row]
        known = ~np.isnan(vector)
        enough = int(known.sum()) >= min(min_shared, len(self.feature_names))
        return bool(enough and known.any() and np.any(vector[known] != 0))

    def resolve(self, code: str, min_shared: int = 1) -> tuple[str | None, str | None]:
        """(code to use, note): the first of ``candidates(code)`` whose vector can give a
        value under ``min_shared``, else the first with any features (its pairs then come
        out NaN, "fewer than min_shared"); the note says when it is a stand-in. (None, None)
        when no candidate is in the set at all."""
        for needed in (min_shared, 1):
            for position, candidate in enumerate(candidates(code)):
                if self.usable(candidate, needed):
                    return candidate, None if position == 0 else f"{code} -> {candidate}"
        return None, None

    def vectors(self, codes: list[str | None]) -> FloatArray:
        """Rows for ``codes`` (None: an all-NaN row)."""
        out = np.full((len(codes), len(self.feature_names)), np.nan, dtype=np.float32)
        for i, code in enumerate(codes):
            if code is not None and code in self.index:
                out[i] = self.values[self.index[code]]
        return out


@functools.lru_cache(maxsize=8)
def load_feature_set(name: str) -> FeatureSet:
    langs, names, values = load_raw(name)
    values = np.where(values < 0, np.nan, values).astype(np.float32)
    return FeatureSet(name, tuple(str(code) for code in langs), tuple(names), values)


def _dense_cosine(
    a: FloatArray, b: FloatArray, min_shared: int
) -> tuple[FloatArray, npt.NDArray[np.int32]]:
    a_norm = np.linalg.norm(a.astype(np.float64), axis=1)
    b_norm = np.linalg.norm(b.astype(np.float64), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_unit = (a / a_norm[:, None]).astype(np.float32)
        b_unit = (b / b_norm[:, None]).astype(np.float32)
    similarity = np.clip(a_unit @ b_unit.T, -1.0, 1.0)
    similarity[a_norm == 0, :] = np.nan
    similarity[:, b_norm == 0] = np.nan
    if a.shape[1] < min_shared:
        similarity[:] = np.nan
    shared = np.full(similarity.shape, a.shape[1], dtype=np.int32)
    return similarity.astype(np.float32), shared


def masked_cosine(
    a: FloatArray, b: FloatArray | None = None, min_shared: int = 1
) -> tuple[FloatArray, npt.NDArray[np.int32]]:
    """(cosine, shared feature count) between the rows of a and b, over shared features.

    NaN marks a missing feature. A pair with fewer than ``min_shared`` shared features, or
    with a zero vector on its shared features, is NaN. Computed in row blocks in float64.
    """
    b = a if b is None else b
    a_known = ~np.isnan(a)
    b_known = ~np.isnan(b)
    if a_known.all() and b_known.all():  # complete sets (*_knn, fam, geo): one matmul
        return _dense_cosine(a, b, min_shared)
    a0 = np.where(a_known, a, 0.0).astype(np.float64)
    b0 = np.where(b_known, b, 0.0).astype(np.float64)
    b_mask = b_known.astype(np.float64)
    similarity = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
    shared = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    for start in range(0, a.shape[0], BLOCK_ROWS):
        stop = start + BLOCK_ROWS
        a_block, a_mask = a0[start:stop], a_known[start:stop].astype(np.float64)
        dot = a_block @ b0.T
        a_norm = np.sqrt((a_block**2) @ b_mask.T)  # |a| over the features b has
        b_norm = np.sqrt(a_mask @ (b0**2).T)  # |b| over the features a has
        count = a_mask @ b_mask.T
        with np.errstate(divide="ignore", invalid="ignore"):
            cosine = dot / (a_norm * b_norm)
        cosine[(count < min_shared) | (a_norm == 0) | (b_norm == 0)] = np.nan
        similarity[start:stop] = np.clip(cosine, -1.0, 1.0)
        shared[start:stop] = count.astype(np.int32)
    return similarity, shared
