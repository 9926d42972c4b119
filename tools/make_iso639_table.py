"""Regenerate ``schemas/data/iso639_3.tsv`` from the ISO 639-3 JSON that pycountry ships.

The table is committed; this script documents where it came from and makes it reproducible:

    pip download --no-deps pycountry && unzip pycountry-*.whl -d pyc
    python tools/make_iso639_table.py pyc/pycountry/databases/iso639-3.json \
        > schemas/data/iso639_3.tsv

Columns: code (ISO 639-3), part1 (ISO 639-1 or empty), part2b (ISO 639-2/B or empty),
scope (I individual, M macrolanguage, S special), name.
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        rows = json.load(handle)["639-3"]
    print("code\tpart1\tpart2b\tscope\tname")
    for row in sorted(rows, key=lambda r: r["alpha_3"]):
        name = row["name"].replace("\t", " ")
        print(
            f"{row['alpha_3']}\t{row.get('alpha_2', '')}\t{row.get('bibliographic', '')}"
            f"\t{row['scope']}\t{name}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
