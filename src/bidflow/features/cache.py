"""The online reader's cache: what the store answered, reused for a few seconds.

Two levels, both keyed by Python tuples and holding their rows in growing numpy arrays (``Slab``),
so a lookup is one dictionary probe per key and one fancy index per array:

* ``RowCache``: whole output rows, one per entity (every join key of the service), with each view's
  event time. An auction whose partners were seen in the same context lately costs one probe
  per partner and a handful of array operations, whatever the number of views.
* ``KeyCache``: one view's row per (view, entity key). It answers the rows the first level lacks:
  a new publisher needs its own views from the store, not the partners' views it shares with
  every other publisher.

Rows are kept with their nulls replaced by the view's defaults (that rule does not depend on the
request); the ttl, which depends on the request's time, is applied by the reader per request.

Expiry: keys live ``ttl_s / 2``; the rows one fill wrote live a random ``ttl_s / 4`` to ``ttl_s / 2``,
so no answer is older than ``ttl_s``. The spread is for the store: the rows of a server's first
requests would otherwise all expire at the same moment, and every request of that moment would
wait on the store (in the serving benchmark at 2,000 auctions/s, p99 went from about 20 ms to
2-5 ms with the spread).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from operator import itemgetter
from time import monotonic
from typing import Any, NamedTuple

import numpy as np

from bidflow.features.spec import ViewSpec

Key = tuple[Any, ...]
# (views, distinct keys of each view) -> per view: (event seconds, values; NaN for null or missing)
Fetch = Callable[[Sequence[ViewSpec], Sequence[list[Key]]], list[tuple[np.ndarray, np.ndarray]]]


class CacheStats(NamedTuple):
    """Counts since the reader started."""

    rows_hit: int  # output rows served whole from the row cache
    rows_missed: int  # output rows assembled from the key cache (and the store)
    keys_hit: int  # a missed row's (view, key) lookups the key cache answered
    keys_missed: int  # distinct (view, key)s read from the store


class Slab:
    """Cached rows: values, event seconds and expiry per key, in arrays grown by doubling.

    Args:
        width: values per row.
        stamps: shape of each row's event seconds (``()``: one per row; ``(k,)``: one per view).
        capacity: initial rows.
    """

    def __init__(self, width: int, stamps: tuple[int, ...] = (), capacity: int = 1024) -> None:
        self.index: dict[Key, int] = {}
        self.size = 0
        self.values = np.zeros((capacity, width))
        self.seconds = np.zeros((capacity, *stamps))
        self.expires = np.zeros(capacity)

    def find(self, keys: Sequence[Key], now: float) -> tuple[np.ndarray, np.ndarray]:
        """(row of each key, whether it must be read again: unknown, or expired by ``now``)."""
        index = np.fromiter(map(self.index.get, keys, repeat(-1)), dtype=np.intp, count=len(keys))
        stale = (index < 0) | (self.expires[index] <= now)  # index -1 reads a real row: masked by the first test
        return index, stale

    def rows_of(self, keys: Sequence[Key]) -> np.ndarray:
        """The row of each key (all stored)."""
        return np.fromiter(map(self.index.__getitem__, keys), dtype=np.intp, count=len(keys))

    def store(self, keys: Sequence[Key], seconds: np.ndarray, values: np.ndarray, expires: np.ndarray | float) -> None:
        """Add or replace the rows of distinct ``keys``."""
        at = []
        for key in keys:
            row = self.index.get(key)
            if row is None:
                row = self.index[key] = self.size
                self.size += 1
            at.append(row)
        if self.size > len(self.expires):
            grow = max(self.size, 2 * len(self.expires))
            self.values = np.resize(self.values, (grow, self.values.shape[1]))
            self.seconds = np.resize(self.seconds, (grow, *self.seconds.shape[1:]))
            self.expires = np.resize(self.expires, grow)
        self.seconds[at] = seconds
        self.values[at] = values
        self.expires[at] = expires


class KeyCache:
    """What the store answered for each (view, entity key), reused for ``ttl_s`` seconds.

    Keys that are unknown or older than ``ttl_s`` are read from the store, every view together,
    in one call.

    Args:
        ttl_s: how long an answer is reused.
        limit: keys per view; a full view starts again empty.
    """

    def __init__(self, ttl_s: float, limit: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self.hits = 0
        self.misses = 0
        self._slabs: dict[str, Slab] = {}

    def rows(
        self,
        fetch: Fetch,
        views: Sequence[ViewSpec],
        keys: Sequence[Sequence[Key]],
        defaults: Sequence[np.ndarray],
        now: float,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per view: (event seconds, values with nulls as ``defaults``) of each of its ``keys``, in order."""
        indexes: list[np.ndarray] = []
        stale_views: list[int] = []
        stale_keys: list[list[Key]] = []
        stale_lookups = 0
        for i, (view, view_keys) in enumerate(zip(views, keys, strict=True)):
            slab = self._slabs.get(view.name)
            if slab is None or slab.size + len(view_keys) > self.limit:
                slab = self._slabs[view.name] = Slab(len(view.features))
            index, stale = slab.find(view_keys, now)
            if stale.any():
                stale_views.append(i)
                stale_keys.append(list(dict.fromkeys(view_keys[k] for k in np.flatnonzero(stale).tolist())))
                stale_lookups += int(stale.sum())
            indexes.append(index)
        self.misses += sum(len(missing) for missing in stale_keys)
        self.hits += sum(len(view_keys) for view_keys in keys) - stale_lookups
        if stale_views:
            fresh = fetch([views[i] for i in stale_views], stale_keys)
            for i, missing, (seconds, values) in zip(stale_views, stale_keys, fresh, strict=True):
                slab = self._slabs[views[i].name]
                slab.store(missing, seconds, fill_nulls(values, defaults[i]), now + self.ttl_s)
                indexes[i] = slab.rows_of(keys[i])
        out = []
        for view, index in zip(views, indexes, strict=True):
            slab = self._slabs[view.name]
            out.append((slab.seconds[index], slab.values[index]))
        return out


class RowCache:
    """Whole output rows per entity key, in front of a ``KeyCache`` (see the module docstring).

    Args:
        views: the service's views, in column order.
        join_keys: the service's join keys (the order of each entity key's values).
        defaults: each view's defaults (its nulls are served as these).
        ttl_s: the oldest an answer may be (see the module docstring).
        limit: rows kept; a full cache starts again empty.
        seed: seeds the spread of expiry times (tests).
    """

    def __init__(
        self,
        views: Sequence[ViewSpec],
        join_keys: Sequence[str],
        defaults: Sequence[np.ndarray],
        ttl_s: float,
        limit: int = 100_000,
        seed: int | None = None,
    ) -> None:
        self.views = tuple(views)
        self.defaults = list(defaults)
        self.limit = limit
        self.ttl_s = ttl_s
        self.keys = KeyCache(ttl_s / 2)
        self.hits = 0
        self.misses = 0
        self._width = sum(len(view.features) for view in views)
        self._view_keys = [_picker([join_keys.index(key) for key in view.join_keys]) for view in views]
        self._slab = Slab(self._width, (len(views),))
        self._spread = np.random.default_rng(seed)

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self.keys.hits, self.keys.misses)

    def rows(self, fetch: Fetch, keys: Sequence[Key]) -> tuple[np.ndarray, np.ndarray]:
        """(values with nulls as defaults, event seconds per view) of each entity key, in order.

        Both arrays are copies: the caller may overwrite expired views in place.
        """
        now = monotonic()
        if self._slab.size + len(keys) > self.limit:  # before any lookup: rows found now must stay stored
            self._slab = Slab(self._width, (len(self.views),))
        index, stale = self._slab.find(keys, now)
        missed = int(np.count_nonzero(stale))
        self.misses += missed
        self.hits += len(keys) - missed
        if not missed:
            return self._slab.values[index], self._slab.seconds[index]
        missing = list(dict.fromkeys(keys[k] for k in np.flatnonzero(stale).tolist()))
        values, seconds = self._fill(fetch, missing, now)
        if len(missing) == len(keys):  # a context not seen lately: what was read is the answer, in order
            return values, seconds
        index = self._slab.rows_of(keys)
        return self._slab.values[index], self._slab.seconds[index]

    def _fill(self, fetch: Fetch, missing: list[Key], now: float) -> tuple[np.ndarray, np.ndarray]:
        """Assemble and keep the rows of ``missing`` (distinct keys); returns them (values, seconds)."""
        view_keys = [list(map(view_key, missing)) for view_key in self._view_keys]
        answered = self.keys.rows(fetch, self.views, view_keys, self.defaults, now)
        values = np.concatenate([view_values for _, view_values in answered], axis=1)
        seconds = np.stack([view_seconds for view_seconds, _ in answered], axis=1)
        expires = now + self.ttl_s / 2 * self._spread.uniform(0.5, 1.0)
        self._slab.store(missing, seconds, values, expires)  # copies: the arrays stay the caller's
        return values, seconds


def fill_nulls(values: np.ndarray, defaults: np.ndarray) -> np.ndarray:
    """A copy of ``values`` with each null (NaN) replaced by its column's default."""
    return np.where(np.isnan(values), defaults, values)


def _picker(positions: Sequence[int]) -> Callable[[Key], Key]:
    """The tuple of a key's values at ``positions`` (itemgetter alone gives a bare value for one)."""
    if len(positions) == 1:
        (position,) = positions
        return lambda key: (key[position],)
    return itemgetter(*positions)
