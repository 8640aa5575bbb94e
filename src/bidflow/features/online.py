"""Online features for the model server: one FeatureService, many entity rows, one round trip.

``OnlineFeatureReader.read`` returns a float matrix, one row per entity row, whose columns are the
FeatureService's features (``reader.feature_names``, read from the registry). An entity with no
live row -- never materialized, or its row is older than the view's ttl, or a value is null --
gets the view's defaults: the same values ``bidflow.features.store.training_set`` fills in, so a
model sees identical vectors in training and serving.

Two ways to read, which a test holds equal value for value:

* ``read_via_feast``: ``FeatureStore.get_online_features`` with the FeatureService. Simple, but
  ~10 ms for 30 partners x 6 views (protobuf objects per value, registry lookups per call).
* the direct path (default): the keys Feast materialized, in Feast's own format, fetched in one
  round trip by a backend (``online_redis``: a Lua script that gathers every HMGET server-side;
  ``online_sqlite``: one UNION ALL query) and decoded with numpy from fixed-width records
  (``online_records``) instead of one protobuf object per value.

The direct path has two shapes, which a test holds equal value for value: the bulk one above, for
the bid filter's hundreds of rows, and, on Redis, a small-read one for a few rows (the fraud
server's one click per request): the same round trip, its records decoded one by one with
``struct`` and the serving rules applied in plain Python, because for a handful of values the bulk
path's numpy calls cost several times the round trip itself.

Many reads ask for rows that differ in one join key and share all the others (a model server's
request: one row per candidate, one context). A reader told which key that is (``RowLayout``)
answers them through ``features`` and, with a cache, keeps the final rows per context.

Feast's online read does not apply the ttl (0.67 returns whatever was materialized last); both
paths here do, as the offline point-in-time join does, so a stale row is a default on both sides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bidflow.errors import FeatureStoreError
from bidflow.features.cache import CacheStats, ContextMemo, RowCache, fill_nulls
from bidflow.features.online_backend import Backend, Lookups, Row
from bidflow.features.online_records import RECORD, decode_seconds, decode_values
from bidflow.features.online_redis import RedisBackend
from bidflow.features.online_sqlite import SqliteBackend
from bidflow.features.spec import ServiceSpec, ViewSpec, service_spec, too_old

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = ["RECORD", "OnlineFeatureReader", "RowLayout", "decode_seconds", "decode_values"]

log = logging.getLogger(__name__)

# Reads of at most this many rows take the small-read path (Redis, no cache). The small path pays per
# record and per key (it neither packs nor deduplicates), the bulk path a fixed cost for its numpy
# calls, so the two cross somewhere above a few rows; measured on the fraud service they cross between
# 16 and 24 rows (bench/README.md, "Reading the fraud serving rows"), and 16 keeps every read on the
# cheaper side.
SMALL_READ_ROWS: Final = 16


@dataclass(frozen=True)
class RowLayout:
    """Which join key differs from row to row in a ``features`` read; the other join keys are the shared context.

    Args:
        row_key: the join key with one value per row (e.g. the candidate the row scores).
        context: the join keys every row of one read shares, in the order ``features`` takes their values.
    """

    row_key: str
    context: tuple[str, ...]


class OnlineFeatureReader:
    """Reads one FeatureService's features for many entity rows at once.

    Create one per process (it reads the registry once) and reuse it for every request.

    Args:
        store: the feature store (its online store config says where to read).
        service: the FeatureService to serve.
        layout: which join key varies per row in ``features`` reads (None: the reader answers ``read``
            only). With a cache, and when the layout names every join key of the service, the
            final rows of recent reads are kept per context (``bidflow.features.cache.ContextMemo``).
        direct: read Feast's keys directly (fast); ``False`` goes through ``get_online_features``.
        cache_s: keep what the store answered for each view's keys this many seconds (0: ask
            every time). The store changes once per materialization (hourly here), so a model
            server can afford a few seconds of lag for not paying a round trip per auction; the
            ttl is still applied at each request's own time. Direct reads only.
        refresh: with a cache, read rows that are due again in a background thread and serve
            them meanwhile (``bidflow.features.cache``), so that a request seldom waits on the
            store; for servers.
        timeout_s: the longest a direct Redis read may wait on a socket (connect or reply), with
            no retry (None: redis-py's defaults). Direct reads only: ``get_online_features``
            uses Feast's client, whose socket timeouts are set in the connection string.
        small_reads: uncached direct Redis reads of at most this many rows take the small-read path
            (module docstring; 0: never). Both paths answer the same values.
    """

    def __init__(
        self,
        store: FeatureStore,
        service: str,
        *,
        layout: RowLayout | None = None,
        direct: bool = True,
        cache_s: float = 0.0,
        refresh: bool = False,
        timeout_s: float | None = None,
        small_reads: int = SMALL_READ_ROWS,
    ) -> None:
        self.spec: ServiceSpec = service_spec(store, service)
        self._store = store
        self._service = store.get_feature_service(service)
        self._defaults = self.spec.defaults
        self._slices = list(self.spec.slices().values())
        self._view_defaults = [self._defaults[s] for s in self._slices]
        self._key_types = {k: t for v in self.spec.views for k, t in zip(v.join_keys, v.key_types, strict=True)}
        self._backend: Backend | None = _direct_backend(store, self.spec, timeout_s) if direct else None
        self._ttls = np.array([view.ttl_limit for view in self.spec.views])
        # The small-read path's own copies, as Python floats: it settles a few values without numpy.
        self._few = self._backend if isinstance(self._backend, RedisBackend) and small_reads > 0 else None
        self._few_rows = small_reads
        self._few_views = [(view.join_keys, view.ttl_limit, d.tolist()) for view, d in
                           zip(self.spec.views, self._view_defaults, strict=True)]  # fmt: skip
        # The view of each output column: a (rows x views) expiry mask widened to (rows x columns).
        self._column_view = np.repeat(np.arange(len(self.spec.views)), [len(view.features) for view in self.spec.views])
        self._cache = (
            RowCache(self.spec.views, self.spec.join_keys, self._view_defaults, cache_s, refresh=refresh)
            if cache_s > 0 and self._backend is not None
            else None
        )
        self._shape: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None = None
        self._layout = layout
        # The entities dict of a ``features`` read, key by key: built once, not per read.
        self._layout_keys = (layout.row_key, *layout.context) if layout is not None else None
        # Reads whose rows share one context are answered per context in front of the rows.
        self._memo = (
            ContextMemo(self._ttls, self._column_view, self._defaults)
            if self._cache is not None
            and layout is not None
            and set(self.spec.join_keys) == {layout.row_key, *layout.context}
            else None
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Column names of the returned matrices, in order (``<view>__<feature>``)."""
        return self.spec.columns

    @property
    def defaults(self) -> np.ndarray:
        """The row an entity with no live features gets."""
        return self._defaults.copy()

    @property
    def backend(self) -> str:
        """``redis`` | ``sqlite`` (direct reads) or ``feast`` (``get_online_features``)."""
        return "feast" if self._backend is None else self._backend.name

    def features(self, row_keys: Sequence[Any], *context: Any, at: datetime | float | None = None) -> np.ndarray:
        """Features of rows that share one context: row ``i`` is ``row_keys[i]`` in ``context``.

        Needs the reader's ``layout``: ``row_keys`` are values of its ``row_key``, ``context`` the
        values of its ``context`` keys, in that order.

        Args:
            row_keys: one value of the layout's row key per row (rows come back in this order).
            context: the values of the layout's context keys, shared by every row.
            at: the request time (default: now; a naive datetime is UTC); rows older than their
                view's ttl at ``at`` are served as defaults.
        """
        at_s = _seconds(at)
        memo = self._memo
        if memo is not None and (found := memo.get(context, row_keys, at_s)) is not None:
            return found
        keys = self._layout_keys
        if keys is None or len(context) != len(keys) - 1:
            raise FeatureStoreError(
                f"online read for '{self.spec.name}' by row and context does not match the reader's layout",
                expected="no layout" if keys is None else f"{keys[0]} per row; context {', '.join(keys[1:])}",
                got=f"{len(context)} context values",
                hint="construct the reader with the layout of its rows (OnlineFeatureReader(..., layout=...))",
            )
        rows = self.read(dict(zip(keys, (row_keys, *context), strict=True)), at=at_s)
        # The read kept the rows in the memo: shaped there once, for this read and the next ones in the context.
        if memo is not None and (found := memo.get(context, row_keys, at_s, count=False)) is not None:
            return found
        return rows if self._shape is None else self._shape(rows, row_keys)

    def set_shape(self, shape: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None) -> None:
        """Have ``features`` answer ``shape(rows, row_keys)`` instead of the rows.

        A model server's assembler turns the service's rows into its own matrix layout
        (``bidflow.serving.assemble.BidFilterAssembler.rows``); with a cache, the context memo keeps
        the shaped rows, so that work is done once per context and range of request times, not
        once per request. ``shape`` must work row by row: its row ``i`` depends only on row ``i``
        and row key ``i`` (the memo answers a read with some of the rows it shaped).
        """
        self._shape = shape
        if self._memo is not None:
            self._memo.set_shape(shape)

    def read(
        self, entities: Mapping[str, Sequence[Any] | str | int], *, at: datetime | float | None = None
    ) -> np.ndarray:
        """Features for ``n`` entity rows: ``entities`` maps each join key to ``n`` values or one scalar.

        Returns:
            float64 array of shape ``(n, len(feature_names))``.
        """
        n, columns = self._columns(entities)
        if n == 0:
            return np.empty((0, len(self._defaults)))
        if self._backend is None:
            return self.read_via_feast(entities, at=at)
        if self._cache is not None:
            return self._read_cached(self._cache, n, columns, _seconds(at))
        if self._few is not None and n <= self._few_rows:
            return self._read_few(self._few, n, columns, at)
        lookups = [self._lookups(view, columns, n) for view in self.spec.views]
        fetched = self._backend.fetch(self.spec.views, lookups)
        return self._assemble(n, [lookup.inverse for lookup in lookups], fetched, _seconds(at))

    @property
    def cache_stats(self) -> CacheStats:
        """What the cache answered and what it read from the store, since the start (zeros without a cache).

        Rows the context memo answered count as rows the row cache answered: they are its rows.
        """
        if self._cache is None:
            return CacheStats(0, 0, 0, 0)
        stats = self._cache.stats
        return stats._replace(rows_hit=stats.rows_hit + (self._memo.hits if self._memo is not None else 0))

    def read_via_feast(
        self, entities: Mapping[str, Sequence[Any] | str | int], *, at: datetime | float | None = None
    ) -> np.ndarray:
        """``read`` through ``FeatureStore.get_online_features`` (the reference the direct path must equal)."""
        n, columns = self._columns(entities)
        rows = {key: list(values) if isinstance(values, list) else [values] * n for key, values in columns.items()}
        response = self._store.get_online_features(
            features=self._service, entity_rows=rows, full_feature_names=True
        ).to_dict(include_event_timestamps=True)
        at_s = _seconds(at)
        out = np.empty((n, len(self._defaults)))
        for view, where, defaults in zip(self.spec.views, self._slices, self._view_defaults, strict=True):
            values = np.array(
                [[np.nan if v is None else float(v) for v in response[c]] for c in view.columns], dtype=np.float64
            ).T
            seconds = np.asarray(response[view.columns[0] + "__ts"], dtype=np.float64)
            out[:, where] = _settle(values, seconds, view, defaults, at_s)
        return out

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()  # first: its thread may be reading through the backend
        if self._backend is not None:
            self._backend.close()

    # --- internals ---

    def _columns(self, entities: Mapping[str, Sequence[Any] | str | int]) -> tuple[int, dict[str, Any]]:
        missing = [k for k in self.spec.join_keys if k not in entities]
        if missing:
            raise FeatureStoreError(
                f"online read for '{self.spec.name}' lacks join keys",
                expected=", ".join(self.spec.join_keys),
                got=f"missing {missing}",
            )
        columns: dict[str, Any] = {}
        n = 1
        for key in self.spec.join_keys:
            cast = int if self._key_types[key] == "Int64" else str
            value = entities[key]
            if isinstance(value, str | int | np.integer):
                columns[key] = cast(value)
            else:
                columns[key] = [cast(v) for v in value]
                n = len(columns[key]) if n == 1 else n
        for key, value in columns.items():
            if isinstance(value, list) and len(value) != n:
                raise FeatureStoreError("online read key columns differ in length", where=key, got=str(len(value)))
        return n, columns

    @staticmethod
    def _lookups(view: ViewSpec, columns: Mapping[str, Any], n: int) -> Lookups:
        values = [columns[k] for k in view.join_keys]
        if not any(isinstance(v, list) for v in values):
            return Lookups([tuple(values)], None)
        rows = [v if isinstance(v, list) else [v] * n for v in values]
        index: dict[tuple[Any, ...], int] = {}
        inverse = np.fromiter((index.setdefault(key, len(index)) for key in zip(*rows, strict=True)), np.intp, n)
        return Lookups(list(index), inverse)

    def _assemble(
        self,
        n: int,
        inverses: Sequence[np.ndarray | None],
        fetched: Sequence[tuple[np.ndarray, np.ndarray]],
        at_s: float,
    ) -> np.ndarray:
        """The output matrix; a view's rows are in row order already (or one row for all) where its inverse is None."""
        out = np.empty((n, len(self._defaults)))
        for view, where, defaults, inverse, (seconds, values) in zip(
            self.spec.views, self._slices, self._view_defaults, inverses, fetched, strict=True
        ):
            settled = _settle(values, seconds, view, defaults, at_s)
            out[:, where] = settled if inverse is None else settled[inverse]
        return out

    def _read_few(
        self, backend: RedisBackend, n: int, columns: Mapping[str, Any], at: datetime | float | None
    ) -> np.ndarray:
        """``read``'s answer for a few rows: each row's keys fetched as they are, nulls and ttl applied per value.

        The rules are ``_settle``'s, written for Python floats: a row older than its view's ttl at
        ``at`` (taken after the fetch, as the bulk path takes it) is all defaults, else each null
        (NaN) is its feature's default.
        """
        keys: list[list[tuple[Any, ...]]] = []
        for join_keys, _, _ in self._few_views:
            values = [columns[k] for k in join_keys]
            keys.append([tuple(v[i] if isinstance(v, list) else v for v in values) for i in range(n)])
        answers = backend.fetch_few(self.spec.views, keys)
        at_s = _seconds(at)
        out: list[list[float]] = []
        for i in range(n):
            row: list[float] = []
            for (_, ttl, defaults), answer in zip(self._few_views, answers, strict=True):
                row += _settle_row(answer[i], ttl, defaults, at_s)
            out.append(row)
        return np.array(out, dtype=np.float64)

    def _read_cached(self, cache: RowCache, n: int, columns: Mapping[str, Any], at_s: float) -> np.ndarray:
        """The output matrix from the cache, whose rows have their nulls as defaults: the ttl is left to apply."""
        keys = _entity_keys(self.spec.join_keys, columns, n)
        values, seconds = cache.rows(self._fetch, keys)
        layout = self._layout
        if self._memo is not None and layout is not None:
            row_keys = columns.get(layout.row_key)
            if isinstance(row_keys, list):
                context = tuple(columns[key] for key in layout.context)
                if not any(isinstance(value, list) for value in context):
                    self._memo.put(context, row_keys, values, seconds, cache.until(keys))
        expired = too_old(seconds, self._ttls, at_s)  # every view at once
        if expired.any():  # one masked copy: a masked assignment per view cost about 2 µs each
            np.copyto(values, self._defaults, where=expired[:, self._column_view])
        return values

    def _fetch(
        self, views: Sequence[ViewSpec], keys: Sequence[list[tuple[Any, ...]]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        assert self._backend is not None  # the cache exists only with a direct backend
        return self._backend.fetch(views, [Lookups(view_keys, None) for view_keys in keys])


def _entity_keys(join_keys: Sequence[str], columns: Mapping[str, Any], n: int) -> list[tuple[Any, ...]]:
    """Every row's values of ``join_keys`` (a scalar column repeats on every row)."""
    values = [columns[k] if isinstance(columns[k], list) else repeat(columns[k], n) for k in join_keys]
    return list(zip(*values, strict=False))


def _settle(values: np.ndarray, seconds: np.ndarray, view: ViewSpec, defaults: np.ndarray, at_s: float) -> np.ndarray:
    """Apply the serving rules: null (NaN) -> default; a row older than the ttl -> all defaults."""
    return _expire(fill_nulls(values, defaults), seconds, view, defaults, at_s)


def _settle_row(found: Row, ttl: float, defaults: list[float], at_s: float) -> list[float]:
    """``_settle`` for one key's row of one view, on Python floats (``too_old``'s comparison, as it is)."""
    seconds, values = found
    if seconds < at_s - ttl:
        return defaults
    return [d if v != v else v for v, d in zip(values, defaults, strict=True)]  # v != v: NaN, a null


def _expire(values: np.ndarray, seconds: np.ndarray, view: ViewSpec, defaults: np.ndarray, at_s: float) -> np.ndarray:
    """Rows older than the view's ttl at ``at_s`` become all defaults (in place: pass a copy)."""
    expired = too_old(seconds, view.ttl_limit, at_s)
    if expired.any():
        values[expired] = defaults
    return values


def _seconds(at: datetime | float | None) -> float:
    """Epoch seconds of ``at``: now when None; a naive datetime is UTC (never the server's zone)."""
    if at is None:
        return time.time()
    if isinstance(at, datetime):
        return (at.replace(tzinfo=UTC) if at.tzinfo is None else at).timestamp()
    return float(at)


def _direct_backend(store: FeatureStore, spec: ServiceSpec, timeout_s: float | None) -> Backend | None:
    """The direct backend for the store's online store, or None where only ``get_online_features`` reads it right."""
    config = store.config
    if config.registry.enable_online_feature_view_versioning:
        log.info("online feature view versioning is on: reading through get_online_features")
        return None
    if config.entity_key_serialization_version != 3:
        return None
    kind = config.online_store.type
    if kind == "sqlite":
        return SqliteBackend(store, spec)
    if kind == "redis" and str(config.online_store.redis_type.value) == "redis":
        return RedisBackend(store, spec, timeout_s=timeout_s)
    log.info("no direct reader for online store %s: reading through get_online_features", kind)
    return None
