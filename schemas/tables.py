"""The data tables shipped inside the packages (``<package>/data/*.tsv``), read one way.

``#`` lines are comments, the first other line names the columns, fields are TAB-separated.
A row may leave trailing fields out (they read as ""); a row with more fields than the header
is an error naming the file and row.
"""

from __future__ import annotations

from importlib import resources


def data_rows(package: str, name: str) -> list[dict[str, str]]:
    text = resources.files(package).joinpath("data", name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    header = lines[0].split("\t")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) > len(header):
            raise RuntimeError(f"{package}/data/{name}: data row {number} has {len(fields)} fields")
        rows.append(dict(zip(header, fields + [""] * (len(header) - len(fields)), strict=True)))
    return rows
