"""What the online reader asks of a direct backend (``online_redis``, ``online_sqlite``), and in what shape.

A backend answers, per view, the distinct entity keys one request needs; the reader spreads those
answers over the request's rows, fills nulls and applies the ttl. Keeping the contract apart lets
each backend module name only its own store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from bidflow.features.spec import ViewSpec


class Lookups:
    """The distinct keys each view needs for one request, and which rows each key serves."""

    __slots__ = ("inverse", "keys")

    def __init__(self, keys: list[tuple[Any, ...]], inverse: np.ndarray | None) -> None:
        self.keys = keys
        self.inverse = inverse  # row -> index into keys; None: one key for every row


class Backend(Protocol):
    """A direct reader of Feast's online store in Feast's own key and value format."""

    name: str  # what ``OnlineFeatureReader.backend`` reports

    def fetch(self, views: Sequence[ViewSpec], lookups: Sequence[Lookups]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per view: (event seconds per key, values per key x feature; NaN for null or missing)."""
        ...

    def close(self) -> None: ...


FetchShape = tuple[tuple[str, int], ...]
Row = tuple[float, list[float]]  # one key's answer on the small-read path: (event seconds, values; NaN for null)


def fetch_shape(views: Sequence[ViewSpec], counts: tuple[int, ...]) -> FetchShape:
    """Which views a fetch asks, with how many keys each: what its command, query and layout depend on."""
    return tuple(zip((view.name for view in views), counts, strict=True))
