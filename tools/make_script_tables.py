"""Regenerate ``normalizers/data/scripts.tsv`` and ``script_extensions.tsv`` (Unicode 18.0).

The tables are committed. They come from Unicode's Scripts.txt and ScriptExtensions.txt as
fontTools ships them pre-parsed (``fontTools/unicodedata/Scripts.py``), so no ICU and no
download is needed at run time and every machine gets the same answer:

    pip download --no-deps fonttools && unzip fonttools-*.whl 'fontTools/unicodedata/*' -d ft
    python tools/make_script_tables.py ft/fontTools/unicodedata normalizers/data

Each row: first code point, last code point (hex), ISO 15924 code(s). Unassigned ranges
(Zzzz) are left out; a code point not in the table is Zzzz.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def write_ranges(module: Path, target: Path, join: bool) -> int:
    data = runpy.run_path(str(module))
    ranges, values = data["RANGES"], data["VALUES"]
    rows = []
    for index, start in enumerate(ranges):
        end = ranges[index + 1] - 1 if index + 1 < len(ranges) else 0x10FFFF
        value = values[index]
        if value is None or value == "Zzzz":
            continue
        text = " ".join(sorted(value)) if join else value
        rows.append(f"{start:04X}\t{end:04X}\t{text}")
    header = "first\tlast\tscripts" if join else "first\tlast\tscript"
    target.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return len(rows)


def main(source: str, target: str) -> None:
    print(write_ranges(Path(source) / "Scripts.py", Path(target) / "scripts.tsv", join=False))
    print(
        write_ranges(
            Path(source) / "ScriptExtensions.py", Path(target) / "script_extensions.tsv", join=True
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
