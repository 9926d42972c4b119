"""voxshard: multilingual speech pretraining corpora as deterministic WebDataset shards.

The Python API (``voxshard.build``, ``voxshard.open_build``, ``voxshard.verify``,
``voxshard.similarity``, ``voxshard.export``; see voxshard/api.py) is imported on first use,
so ``import voxshard`` and ``import voxshard.schemas`` stay light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Build", "__version__", "build", "export", "open_build", "similarity", "verify"]
_API = frozenset({"Build", "build", "export", "open_build", "similarity", "verify", "read_shard"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from voxshard import api

        return getattr(api, name)
    raise AttributeError(f"module 'voxshard' has no attribute {name!r}")
