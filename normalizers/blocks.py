"""The Brahmic block layout, from data/brahmic_blocks.tsv: one table for canonical, to-latin
and to-native (the nine blocks share one layout, offset by their base)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from voxshard.schemas.tables import data_rows


@dataclass(frozen=True)
class Block:
    script: str  # ISO 15924
    base: int  # the block's first code point
    nukta: bool  # has a nukta at base + 0x3C
    substitutes: dict[int, int]  # offset the block lacks -> offset written instead


@functools.cache
def brahmic_blocks() -> dict[str, Block]:
    """script -> Block, in the table's order."""
    blocks = {}
    for row in data_rows("voxshard.normalizers", "brahmic_blocks.tsv"):
        pairs = (item.split(":") for item in row["substitutes"].split())
        blocks[row["script"]] = Block(
            script=row["script"],
            base=int(row["base"], 16),
            nukta=row["nukta"] == "yes",
            substitutes={int(a, 16): int(b, 16) for a, b in pairs},
        )
    return blocks


@functools.cache
def script_of_block() -> dict[int, str]:
    """block base -> script."""
    return {block.base: script for script, block in brahmic_blocks().items()}
