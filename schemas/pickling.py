"""Pickling for the frozen slots dataclasses that cross the build's GroupByKeys.

A ``slots=True`` dataclass pickles through the __getstate__ / __setstate__ that dataclasses
generates: both call ``dataclasses.fields()`` and move each field in Python, 6.6 us a round
trip for a SourceUtterance (22 fields). Pickled as ``cls(*values)`` with the values read by
one ``operator.attrgetter`` it is 2.9 us, and a build pickles and unpickles every item at
each of its GroupByKeys (benchmarks/: bench_ingest's per-item cost).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def pickled_by_fields(cls: type[T]) -> type[T]:
    """Class decorator: instances of dataclass ``cls`` pickle as ``cls(*field values)``.

    Every field must be an ``__init__`` argument (the values are passed positionally, in
    declaration order), and ``__init__`` must not transform them; raises TypeError if not.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    fields = dataclasses.fields(cls)
    skipped = [field.name for field in fields if not field.init]
    if skipped or not fields or hasattr(cls, "__post_init__"):
        raise TypeError(
            f"{cls.__name__} cannot be rebuilt from its fields alone "
            f"(init=False fields {skipped}, or a __post_init__): keep its default pickling"
        )
    names = [field.name for field in fields]
    values: Callable[[Any], Any] = operator.attrgetter(*names)
    if len(names) == 1:  # attrgetter of one name returns the value, not a 1-tuple
        one = values
        values = lambda instance: (one(instance),)  # noqa: E731

    def reduce(instance: Any) -> tuple[type[T], tuple[Any, ...]]:
        return cls, values(instance)

    cls.__reduce__ = reduce  # type: ignore[assignment,method-assign]
    return cls
