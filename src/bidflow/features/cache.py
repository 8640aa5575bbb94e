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

Background refresh (``refresh=True``, the model server's setting): a row is then served until
``ttl_s / 2`` after it was assembled, and from 1/2 to 3/4 of that (spread as above) it is due. The
first request that finds it due is answered from the cache, and the row is renewed: at once from
the key cache when that holds all its views' rows, else by a ``Refresher`` thread that reads the
(view, key)s the key cache lacks; the next request keeps what it read. A row is read on the request
path only when nobody asked for it while it was due, or its background read failed. Rows are
never older than ``ttl_s``: the key cache's rows are at most ``ttl_s / 2`` old when assembled.
"""

from __future__ import annotations

import logging
import queue
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from time import monotonic
from typing import Any, NamedTuple

import numpy as np

from bidflow.features.spec import ViewSpec, too_old

log = logging.getLogger(__name__)

Key = tuple[Any, ...]
# (views, distinct keys of each view) -> per view: (event seconds, values; NaN for null or missing)
Fetch = Callable[[Sequence[ViewSpec], Sequence[list[Key]]], list[tuple[np.ndarray, np.ndarray]]]


class CacheStats(NamedTuple):
    """Counts since the reader started."""

    rows_hit: int  # output rows served whole from the row cache
    rows_missed: int  # output rows assembled from the key cache (and the store)
    keys_hit: int  # a missed row's (view, key) lookups the key cache answered
    keys_missed: int  # distinct (view, key)s read from the store on the request path
    rows_refreshed: int = 0  # rows read again in the background (``RowCache(refresh=True)``)


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
        self.renews = np.zeros(capacity)  # when a row is due to be read again ahead of ``expires``

    def find(self, keys: Sequence[Key], now: float) -> tuple[np.ndarray, np.ndarray]:
        """(row of each key, whether it must be read again: unknown, or expired by ``now``)."""
        index = np.fromiter(map(self.index.get, keys, repeat(-1)), dtype=np.intp, count=len(keys))
        stale = (index < 0) | (self.expires[index] <= now)  # index -1 reads a real row: masked by the first test
        return index, stale

    def rows_of(self, keys: Sequence[Key]) -> np.ndarray:
        """The row of each key (all stored)."""
        return np.fromiter(map(self.index.__getitem__, keys), dtype=np.intp, count=len(keys))

    def store(
        self,
        keys: Sequence[Key],
        seconds: np.ndarray,
        values: np.ndarray,
        expires: np.ndarray | float,
        renews: np.ndarray | float | None = None,
    ) -> None:
        """Add or replace the rows of distinct ``keys`` (``renews`` defaults to ``expires``)."""
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
            self.renews = np.resize(self.renews, grow)
        self.seconds[at] = seconds
        self.values[at] = values
        self.expires[at] = expires
        self.renews[at] = expires if renews is None else renews


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

    def slab(self, view: ViewSpec) -> Slab | None:
        return self._slabs.get(view.name)

    def lacking(self, view: ViewSpec, keys: list[Key], at: float) -> list[Key]:
        """Those of ``keys`` (distinct) that are unknown or expired by ``at``."""
        slab = self._slabs.get(view.name)
        if slab is None:
            return keys
        _, stale = slab.find(keys, at)
        return [keys[k] for k in np.flatnonzero(stale).tolist()]

    def put(
        self, view: ViewSpec, keys: list[Key], answer: tuple[np.ndarray, np.ndarray], defaults: np.ndarray, now: float
    ) -> Slab:
        """Keep what the store answered (event seconds, values) for ``keys`` (distinct) of ``view``."""
        slab = self._slabs.get(view.name)
        if slab is None or slab.size + len(keys) > self.limit:
            slab = self._slabs[view.name] = Slab(len(view.features))
        seconds, values = answer
        slab.store(keys, seconds, fill_nulls(values, defaults), now + self.ttl_s)
        return slab


class RowCache:
    """Whole output rows per entity key, in front of a ``KeyCache`` (see the module docstring).

    Args:
        views: the service's views, in column order.
        join_keys: the service's join keys (the order of each entity key's values).
        defaults: each view's defaults (its nulls are served as these).
        ttl_s: the oldest an answer may be (see the module docstring).
        limit: rows kept; a full cache starts again empty.
        seed: seeds the spread of expiry times (tests).
        refresh: read rows that are due again in a background thread, serving them meanwhile.
    """

    def __init__(
        self,
        views: Sequence[ViewSpec],
        join_keys: Sequence[str],
        defaults: Sequence[np.ndarray],
        ttl_s: float,
        limit: int = 100_000,
        seed: int | None = None,
        *,
        refresh: bool = False,
    ) -> None:
        self.views = tuple(views)
        self.defaults = list(defaults)
        self.limit = limit
        self.ttl_s = ttl_s
        self.keys = KeyCache(ttl_s / 2)
        self.hits = 0
        self.misses = 0
        self.refreshed = 0
        self._width = sum(len(view.features) for view in views)
        self._view_keys = [_picker([join_keys.index(key) for key in view.join_keys]) for view in views]
        self._slab = Slab(self._width, (len(views),))
        self._spread = np.random.default_rng(seed)
        self._refresher = Refresher() if refresh else None
        self._pending: set[Key] = set()  # keys handed to the refresher and not back yet

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, self.keys.hits, self.keys.misses, self.refreshed)

    def rows(self, fetch: Fetch, keys: Sequence[Key]) -> tuple[np.ndarray, np.ndarray]:
        """(values with nulls as defaults, event seconds per view) of each entity key, in order.

        Both arrays are copies: the caller may overwrite expired views in place.
        """
        now = monotonic()
        if self._refresher is not None and self._refresher.done:
            self._apply_refreshed()
        if self._slab.size + len(keys) > self.limit:  # before any lookup: rows found now must stay stored
            self._slab = Slab(self._width, (len(self.views),))
        index, stale = self._slab.find(keys, now)
        if self._refresher is not None:
            self._refresh_due(fetch, keys, index, stale, now)
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

    def until(self, keys: Sequence[Key]) -> float:
        """The soonest (``monotonic``) any of ``keys``' rows, all stored, may change: when it is due or expires.

        A row changes only once it is due (renewed) or expired (read again), so a copy of the rows
        may be served in their place until then (``ContextMemo``).
        """
        index = self._slab.rows_of(keys)
        return float(self._slab.renews[index].min()) if len(index) else 0.0

    def settle(self, timeout_s: float = 5.0) -> None:
        """Wait for the refreshes under way and keep what they read (tests)."""
        if self._refresher is not None:
            self._refresher.wait(timeout_s)
            self._apply_refreshed()

    def close(self) -> None:
        """Stop the refresher's thread (rows due later are then read on the request path)."""
        if self._refresher is not None:
            self._refresher.stop()

    def _fill(self, fetch: Fetch, missing: list[Key], now: float) -> tuple[np.ndarray, np.ndarray]:
        """Assemble and keep the rows of ``missing`` (distinct keys); returns them (values, seconds)."""
        view_keys = [list(map(view_key, missing)) for view_key in self._view_keys]
        answered = self.keys.rows(fetch, self.views, view_keys, self.defaults, now)
        values = np.concatenate([view_values for _, view_values in answered], axis=1)
        seconds = np.stack([view_seconds for view_seconds, _ in answered], axis=1)
        self._keep(missing, seconds, values, now)
        return values, seconds

    def _keep(self, keys: list[Key], seconds: np.ndarray, values: np.ndarray, now: float) -> None:
        half = self.ttl_s / 2
        if self._refresher is None:
            self._slab.store(keys, seconds, values, now + half * self._spread.uniform(0.5, 1.0))
        else:  # served until ``now + half`` whatever; due for a background read from 1/2 to 3/4 of that
            self._slab.store(keys, seconds, values, now + half, now + half * self._spread.uniform(0.5, 0.75))

    def _refresh_due(self, fetch: Fetch, keys: Sequence[Key], index: np.ndarray, stale: np.ndarray, now: float) -> None:
        """Renew the found rows that are due: from the key cache at once, or after a background read.

        Only the (view, key)s the key cache lacks, or will lack shortly (within ttl/8, at most a
        second: the read takes a moment), are read, as a request-path fill would; each entity key
        is handed over once until its read is back.
        """
        due = ~stale & (self._slab.renews[index] <= now)
        if not due.any():
            return
        pending = self._pending
        fresh = [key for key in dict.fromkeys(keys[k] for k in np.flatnonzero(due).tolist()) if key not in pending]
        if not fresh:
            return
        soon = now + min(1.0, self.ttl_s / 8)
        wanted = [
            (view, missing)
            for view, pick in zip(self.views, self._view_keys, strict=True)
            if (missing := self.keys.lacking(view, list(dict.fromkeys(map(pick, fresh))), soon))
        ]
        if not wanted:
            self._reassemble(fresh, now)
            return
        assert self._refresher is not None
        pending.update(fresh)
        self._refresher.submit(_Job(fetch, [view for view, _ in wanted], [missing for _, missing in wanted], fresh))

    def _apply_refreshed(self) -> None:
        """Keep what the refresher read; runs on the request path, so the caches have one writer."""
        assert self._refresher is not None
        now = monotonic()
        for job in self._refresher.collect():
            self._pending.difference_update(job.rows)
            if job.answers is None:  # the store failed: the rows expire and are read on the request path
                continue
            for view, view_keys, answer in zip(job.views, job.keys, job.answers, strict=True):
                self.keys.put(view, view_keys, answer, self.defaults[self.views.index(view)], job.read_at)
            if self._slab.size + len(job.rows) > self.limit:  # the rows may be gone since (a full cache)
                self._slab = Slab(self._width, (len(self.views),))
            self._reassemble(job.rows, now)

    def _reassemble(self, keys: list[Key], now: float) -> None:
        """Rebuild the rows of ``keys`` from the key cache where it holds all their views' rows.

        Never empties the row cache: during a lookup, the rows it found must stay where they are.
        """
        indexes = []
        whole = np.ones(len(keys), dtype=bool)
        for view, pick in zip(self.views, self._view_keys, strict=True):
            slab = self.keys.slab(view)
            if slab is None:
                return
            index, stale = slab.find(list(map(pick, keys)), now)
            whole &= ~stale
            indexes.append((slab, index))
        rows = np.flatnonzero(whole)
        if not len(rows):
            return
        values = np.concatenate([slab.values[index[rows]] for slab, index in indexes], axis=1)
        seconds = np.stack([slab.seconds[index[rows]] for slab, index in indexes], axis=1)
        self._keep([keys[k] for k in rows.tolist()], seconds, values, now)
        self.refreshed += len(rows)


@dataclass
class _Job:
    """One background read: ``keys`` of ``views`` from the store, to renew the entity keys ``rows``."""

    fetch: Fetch
    views: list[ViewSpec]
    keys: list[list[Key]]  # per view, distinct
    rows: list[Key]
    answers: list[tuple[np.ndarray, np.ndarray]] | None = None  # None: not read yet, or the read failed
    read_at: float = 0.0


class Refresher:
    """Reads from the store in a thread of its own; what it read is kept by the request path.

    The thread only calls ``fetch`` (a network round trip, mostly spent outside the GIL) and
    hands the answers back; it never touches the caches, so they need no lock. Started on the
    first job; a daemon, so a server that exits does not wait for it.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: deque[_Job] = deque()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._queued = 0  # jobs submitted and not finished (both threads count: under ``_lock``)
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return bool(self._done)

    def submit(self, job: _Job) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="feature-refresh", daemon=True)
            self._thread.start()
        with self._lock:
            self._queued += 1
            self._idle.clear()
        self._jobs.put(job)

    def collect(self) -> list[_Job]:
        """The jobs finished since the last call."""
        finished = []
        while self._done:
            finished.append(self._done.popleft())
        return finished

    def wait(self, timeout_s: float) -> bool:
        """Whether every job submitted so far finished within ``timeout_s``."""
        return self._idle.wait(timeout_s)

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.read_at = monotonic()
                job.answers = job.fetch(job.views, job.keys)
            except Exception:  # the store is down or slow: the request path reads and fails open
                log.debug("background read for %d rows failed", len(job.rows), exc_info=True)
                job.answers = None
            self._done.append(job)
            with self._lock:
                self._queued -= 1
                if self._queued == 0:
                    self._idle.set()


class _Context:
    """The rows of one context, and their final values for each range of request times asked so far."""

    __slots__ = ("cuts", "finals", "index", "keys", "seconds", "until", "values")

    def __init__(
        self, keys: list[Any], values: np.ndarray, seconds: np.ndarray, ttls: np.ndarray, until: float
    ) -> None:
        self.keys = keys  # the row key of each row
        self.index = {key: i for i, key in enumerate(keys)}
        self.values = values  # nulls as defaults, the ttl not applied
        self.seconds = seconds  # event seconds per view
        self.until = until  # ``monotonic``: the soonest the row cache may change one of these rows
        # Each row's view passes its ttl at ``seconds + ttl``: request times between two such cuts
        # expire the same views, so each range's final values are worked out once (rows of hourly
        # materializations share their event times, so a context has few cuts).
        self.cuts: list[float] = np.unique(seconds + ttls).tolist()
        self.finals: dict[int, np.ndarray] = {}


class ContextMemo:
    """The final rows of recent reads, per context: one probe and one gather for a whole auction.

    A bid-filter read asks for many row keys (partners) that share every other join key (the
    context: publisher, country, format, device type). The row cache answers each entity key on
    its own: a dictionary probe per partner, then masks for what is due, expired and past its ttl,
    a dozen numpy operations per auction. This memo keeps what the row cache answered per context,
    with the ttl rule already applied, and answers a context whose partners it holds with one
    dictionary probe per partner and one gather.

    A context is kept from its second read on: keeping one costs about a fifth of a lookup, which
    a context that never comes back would not repay (measured on random contexts, a quarter of
    whose rows the row cache finds: 200 -> 246 µs per lookup when every context was kept).

    It never serves anything the row cache would not: a context's rows are kept only until the
    soonest of them is due or expires there (``RowCache.until``). The ttl rule, which depends on
    the request's time, is applied once per range of request times between two of the rows' ttl
    boundaries, and that result is kept for the next request in the same range.

    Args:
        ttls: each view's ttl limit (``ViewSpec.ttl_limit``), in the rows' view order.
        column_view: the view of each value column.
        defaults: the row a view past its ttl takes (per column).
        limit: rows kept (and contexts noted as read once); a full memo starts again empty.
    """

    def __init__(self, ttls: np.ndarray, column_view: np.ndarray, defaults: np.ndarray, limit: int = 100_000) -> None:
        self.ttls = ttls
        self.column_view = column_view
        self.defaults = defaults
        self.limit = limit
        self.hits = 0
        self.shape: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None = None
        self._contexts: dict[Key, _Context] = {}
        self._seen: set[Key] = set()  # contexts read once, not kept yet
        self._rows = 0

    def get(self, context: Key, row_keys: Sequence[Any], at_s: float, *, count: bool = True) -> np.ndarray | None:
        """The final rows of ``row_keys`` in ``context`` at request time ``at_s`` (a copy), or None.

        The rows as ``shape`` makes them, when it is set. ``count``: count them in ``hits`` (not
        when the caller has just put them there).
        """
        held = self._contexts.get(context)
        if held is None or not row_keys or monotonic() >= held.until:
            return None
        try:
            rows = itemgetter(*row_keys)(held.index)
        except KeyError:  # a row key it does not hold
            return None
        cut = bisect_left(held.cuts, at_s)  # how many cuts lie before ``at_s``: which range it is in
        final = held.finals.get(cut)
        if final is None:
            final = held.finals[cut] = self._final(held, at_s)
        self.hits += len(row_keys) if count else 0
        return final.take(rows if len(row_keys) > 1 else (rows,), axis=0)

    def set_shape(self, shape: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None) -> None:
        """Answer ``shape(final rows, their row keys)`` instead of the final rows (worked out once per range).

        What is kept so far is dropped.
        """
        self.shape = shape
        self._contexts.clear()
        self._seen.clear()
        self._rows = 0

    def put(self, context: Key, row_keys: Sequence[Any], values: np.ndarray, seconds: np.ndarray, until: float) -> None:
        """Keep (copies of) the rows the row cache answered for ``row_keys`` in ``context`` (read before).

        Args:
            context: the values of the other join keys.
            row_keys: the row key (partner) of each row (a key given twice is kept once).
            values: the rows, nulls as defaults, the ttl not applied.
            seconds: their event seconds per view.
            until: ``RowCache.until`` of these rows.
        """
        held = self._contexts.get(context)
        if held is None and context not in self._seen:  # read once so far: kept from the second read on
            if len(self._seen) >= self.limit:
                self._seen.clear()
            self._seen.add(context)
            return
        first: dict[Any, int] = {}
        for k, key in enumerate(row_keys):
            first.setdefault(key, k)
        if held is not None and monotonic() < held.until:  # add the rows it lacks; the others are the same rows
            new = [k for key, k in first.items() if key not in held.index]
            if not new:
                return
            keys = held.keys + [row_keys[k] for k in new]
            values, seconds = np.concatenate((held.values, values[new])), np.concatenate((held.seconds, seconds[new]))
            until, added = min(until, held.until), len(new)
        else:
            keys = list(first)
            values, seconds = values[list(first.values())], seconds[list(first.values())]  # copies
            added = len(keys) - (len(held.keys) if held is not None else 0)
        if self._rows + added > self.limit:
            self._contexts.clear()
            self._seen.clear()
            added = len(keys)
            self._rows = 0
        self._rows += added
        self._contexts[context] = _Context(keys, values, seconds, self.ttls, until)

    def _final(self, held: _Context, at_s: float) -> np.ndarray:
        """The context's values with the ttl rule applied at ``at_s`` (shaped, when a shape is set)."""
        expired = too_old(held.seconds, self.ttls, at_s)
        final = held.values.copy()
        if expired.any():
            np.copyto(final, self.defaults, where=expired[:, self.column_view])
        return final if self.shape is None else self.shape(final, held.keys)


def fill_nulls(values: np.ndarray, defaults: np.ndarray) -> np.ndarray:
    """A copy of ``values`` with each null (NaN) replaced by its column's default."""
    return np.where(np.isnan(values), defaults, values)


def _picker(positions: Sequence[int]) -> Callable[[Key], Key]:
    """The tuple of a key's values at ``positions`` (itemgetter alone gives a bare value for one)."""
    if len(positions) == 1:
        (position,) = positions
        return lambda key: (key[position],)
    return itemgetter(*positions)
