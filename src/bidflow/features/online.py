"""Online features for the model server: one FeatureService, all candidate partners, one round trip.

``OnlineFeatureReader.features`` returns a float matrix, one row per partner, whose columns are
the FeatureService's features (``reader.feature_names``, read from the registry). An entity with no
live row -- never materialized, or its row is older than the view's ttl, or a value is null --
gets the view's defaults: the same values ``bidflow.features.store.training_set`` fills in, so a
model sees identical vectors in training and serving.

Two ways to read, which a test holds equal value for value:

* ``read_via_feast``: ``FeatureStore.get_online_features`` with the FeatureService. Simple, but
  ~10 ms for 30 partners x 6 views (protobuf objects per value, registry lookups per call).
* the direct path (default): the keys Feast materialized, in Feast's own format (entity keys from
  ``serialize_entity_key``, Redis hash fields from Feast's murmur3 of ``view:feature``, SQLite
  tables ``<project>_<view>``), fetched in one round trip -- a Lua script that gathers every
  HMGET server-side on Redis, one UNION ALL query on SQLite -- and decoded with numpy from
  fixed-width records instead of one protobuf object per value.

Feast's online read does not apply the ttl (0.67 returns whatever was materialized last); both
paths here do, as the offline point-in-time join does, so a stale row is a default on both sides.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from bidflow.errors import FeatureStoreError
from bidflow.features.cache import CacheStats, ContextMemo, RowCache, fill_nulls
from bidflow.features.spec import ServiceSpec, ViewSpec, service_spec, too_old

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

_ROW_KEY: Final = "partner"  # the bid filter's per-row join key; the others are the auction's context
_CONTEXT: Final = ("publisher_id", "country", "format", "device_type")
RECORD: Final = 13  # one length byte + up to 12 bytes of a serialized Value / Timestamp protobuf
_PAYLOAD: Final = RECORD - 1
_KEY_CACHE_LIMIT: Final = 200_000
# Protobuf tags of the Value oneof fields a numeric feature can have (field << 3 | wire type).
_DOUBLE, _FLOAT, _INT32, _INT64, _BOOL = 0x29, 0x35, 0x18, 0x20, 0x38
_TS_SECONDS: Final = 0x08  # google.protobuf.Timestamp.seconds

# Gathers the HMGET replies for many keys server-side, so the client parses two strings instead of
# thousands of replies: the byte length of every value (one byte each) and the values back to back.
# KEYS: entity keys in order. ARGV: number of views, then per view: its number of keys, its number
# of fields, the fields (timestamp field first). A missing field counts as an empty value.
_GATHER_LUA: Final = """
local lens, data, n = {}, {}, 0
local k, a = 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local nkeys, nfields = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local fields = {unpack(ARGV, a + 2, a + 1 + nfields)}
  a = a + 2 + nfields
  for _ = 1, nkeys do
    local values = redis.call('HMGET', KEYS[k], unpack(fields))
    k = k + 1
    for i = 1, nfields do
      local v = values[i] or ''
      if #v > 12 then return redis.error_reply('bidflow: feature value of ' .. #v .. ' bytes') end
      n = n + 1
      lens[n], data[n] = #v, v
    end
  end
end
local parts = {}
for i = 1, n, 4000 do parts[#parts + 1] = string.char(unpack(lens, i, math.min(i + 3999, n))) end
return {table.concat(parts), table.concat(data)}
"""


class _Lookups:
    """The distinct keys each view needs for one request, and which rows each key serves."""

    __slots__ = ("inverse", "keys")

    def __init__(self, keys: list[tuple[Any, ...]], inverse: np.ndarray | None) -> None:
        self.keys = keys
        self.inverse = inverse  # row -> index into keys; None: one key for every row


class _Backend(Protocol):
    def fetch(self, views: Sequence[ViewSpec], lookups: Sequence[_Lookups]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per view: (event seconds per key, values per key x feature; NaN for null or missing)."""
        ...

    def close(self) -> None: ...


class OnlineFeatureReader:
    """Reads one FeatureService's features for many entity rows at once.

    Create one per process (it reads the registry once) and reuse it for every request.

    Args:
        store: the feature store (its online store config says where to read).
        service: the FeatureService to serve.
        direct: read Feast's keys directly (fast); ``False`` goes through ``get_online_features``.
        cache_s: keep what the store answered for each view's keys this many seconds (0: ask
            every time). The store changes once per materialization (hourly here), so a model
            server can afford a few seconds of lag for not paying a round trip per auction; the
            ttl is still applied at each request's own time. Direct reads only.
        refresh: with a cache, read rows that are due again in a background thread and serve
            them meanwhile (``bidflow.features.cache``), so that a request seldom waits on the
            store; for servers.
    """

    def __init__(
        self,
        store: FeatureStore,
        service: str = "bid_filter",
        *,
        direct: bool = True,
        cache_s: float = 0.0,
        refresh: bool = False,
    ) -> None:
        self.spec: ServiceSpec = service_spec(store, service)
        self._store = store
        self._service = store.get_feature_service(service)
        self._defaults = self.spec.defaults
        self._slices = list(self.spec.slices().values())
        self._view_defaults = [self._defaults[s] for s in self._slices]
        self._key_types = {k: t for v in self.spec.views for k, t in zip(v.join_keys, v.key_types, strict=True)}
        self._backend: _Backend | None = _direct_backend(store, self.spec) if direct else None
        self._ttls = np.array([view.ttl_limit for view in self.spec.views])
        # The view of each output column: a (rows x views) expiry mask widened to (rows x columns).
        self._column_view = np.repeat(np.arange(len(self.spec.views)), [len(view.features) for view in self.spec.views])
        self._cache = (
            RowCache(self.spec.views, self.spec.join_keys, self._view_defaults, cache_s, refresh=refresh)
            if cache_s > 0 and self._backend is not None
            else None
        )
        self._shape: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None = None
        # The bid filter's reads share one context for all partners: answered per context in front of the rows.
        self._memo = (
            ContextMemo(self._ttls, self._column_view, self._defaults)
            if self._cache is not None and set(self.spec.join_keys) == {_ROW_KEY, *_CONTEXT}
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
        return "feast" if self._backend is None else type(self._backend).__name__.removeprefix("_").lower()

    def features(
        self,
        partners: Sequence[str],
        publisher_id: str,
        country: str,
        format: str,
        device_type: int,
        *,
        at: datetime | float | None = None,
    ) -> np.ndarray:
        """``bid_filter`` features of one request for each candidate partner (rows in ``partners`` order).

        Args:
            partners: the demand partners that could be called.
            publisher_id: the request's publisher.
            country: the device's country (ISO-3166-1 alpha-3).
            format: the impression format.
            device_type: the OpenRTB device type code.
            at: the request time (default: now; a naive datetime is UTC); rows older than their
                view's ttl at ``at`` are served as defaults.
        """
        at_s = _seconds(at)
        context = (publisher_id, country, format, device_type)
        memo = self._memo
        if memo is not None and (found := memo.get(context, partners, at_s)) is not None:
            return found
        rows = self.read(dict(zip((_ROW_KEY, *_CONTEXT), (partners, *context), strict=True)), at=at_s)
        # The read kept the rows in the memo: shaped there once, for this auction and the next ones.
        if memo is not None and (found := memo.get(context, partners, at_s, count=False)) is not None:
            return found
        return rows if self._shape is None else self._shape(rows, partners)

    def set_shape(self, shape: Callable[[np.ndarray, Sequence[Any]], np.ndarray] | None) -> None:
        """Have ``features`` answer ``shape(rows, partners)`` instead of the rows.

        A model server's assembler turns the service's rows into its own matrix layout
        (``bidflow.serving.assemble.BidFilterAssembler.rows``); with a cache, the context memo keeps
        the shaped rows, so that work is done once per context and range of request times, not
        once per auction. ``shape`` must work row by row: its row ``i`` depends only on row ``i``
        and partner ``i`` (the memo answers an auction with some of the rows it shaped).
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
    def _lookups(view: ViewSpec, columns: Mapping[str, Any], n: int) -> _Lookups:
        values = [columns[k] for k in view.join_keys]
        if not any(isinstance(v, list) for v in values):
            return _Lookups([tuple(values)], None)
        rows = [v if isinstance(v, list) else [v] * n for v in values]
        index: dict[tuple[Any, ...], int] = {}
        inverse = np.fromiter((index.setdefault(key, len(index)) for key in zip(*rows, strict=True)), np.intp, n)
        return _Lookups(list(index), inverse)

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

    def _read_cached(self, cache: RowCache, n: int, columns: Mapping[str, Any], at_s: float) -> np.ndarray:
        """The output matrix from the cache, whose rows have their nulls as defaults: the ttl is left to apply."""
        keys = _entity_keys(self.spec.join_keys, columns, n)
        values, seconds = cache.rows(self._fetch, keys)
        row_keys = columns.get(_ROW_KEY)
        if self._memo is not None and isinstance(row_keys, list):
            context = tuple(columns[key] for key in _CONTEXT)
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
        return self._backend.fetch(views, [_Lookups(view_keys, None) for view_keys in keys])


def _entity_keys(join_keys: Sequence[str], columns: Mapping[str, Any], n: int) -> list[tuple[Any, ...]]:
    """Every row's values of ``join_keys`` (a scalar column repeats on every row)."""
    values = [columns[k] if isinstance(columns[k], list) else repeat(columns[k], n) for k in join_keys]
    return list(zip(*values, strict=False))


def _settle(values: np.ndarray, seconds: np.ndarray, view: ViewSpec, defaults: np.ndarray, at_s: float) -> np.ndarray:
    """Apply the serving rules: null (NaN) -> default; a row older than the ttl -> all defaults."""
    return _expire(fill_nulls(values, defaults), seconds, view, defaults, at_s)


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


# --- decoding fixed-width records -----------------------------------------------------------------


def _varints(payload: np.ndarray) -> np.ndarray:
    """Protobuf varints starting at column 0 of ``payload`` (uint8, up to 10 columns) as int64."""
    width = min(payload.shape[1], 10)
    groups = (payload[:, :width] & 0x7F).astype(np.uint64)
    more = (payload[:, :width] & 0x80) != 0
    live = np.ones(groups.shape, dtype=np.uint64)
    live[:, 1:] = np.cumprod(more[:, :-1], axis=1)  # byte k counts if every byte before it continued
    shifts = 7 * np.arange(width, dtype=np.uint64)
    # uint64 arithmetic wraps, which is exactly two's complement for negative (10-byte) varints.
    summed: np.ndarray = ((groups << shifts) * live).sum(axis=1, dtype=np.uint64)
    return summed.view(np.int64)


def decode_values(records: np.ndarray) -> np.ndarray:
    """Serialized feast ``Value`` protobufs (records of ``RECORD`` bytes) as float64; NaN for null."""
    length, tag, body = records[:, 0], records[:, 1], records[:, 2:]
    out = np.full(len(records), np.nan)
    double = (tag == _DOUBLE) & (length == 9)
    out[double] = np.ascontiguousarray(body[double, :8]).view("<f8").ravel()
    single = (tag == _FLOAT) & (length == 5)
    out[single] = np.ascontiguousarray(body[single, :4]).view("<f4").ravel()
    integer = ((tag == _INT64) | (tag == _INT32) | (tag == _BOOL)) & (length > 1)
    if integer.any():
        out[integer] = _varints(body[integer]).astype(np.float64)
    other = (length > 0) & ~(double | single | integer)
    for i in np.flatnonzero(other):  # a numeric type encoded some other way: let protobuf decide
        out[i] = _decode_proto(bytes(records[i, 1 : 1 + int(length[i])]))
    return out


def decode_seconds(records: np.ndarray) -> np.ndarray:
    """``google.protobuf.Timestamp.seconds`` of each record (0 when absent, as Feast reads it)."""
    has = (records[:, 0] > 1) & (records[:, 1] == _TS_SECONDS)
    out = np.zeros(len(records))
    if has.any():
        out[has] = _varints(records[has, 2:]).astype(np.float64)
    return out


def _decode_proto(raw: bytes) -> float:
    from feast.protos.feast.types.Value_pb2 import Value

    value = Value()
    value.ParseFromString(raw)
    field = value.WhichOneof("val")
    return np.nan if field is None else float(getattr(value, field))


# --- direct backends --------------------------------------------------------------------------------


def _direct_backend(store: FeatureStore, spec: ServiceSpec) -> _Backend | None:
    config = store.config
    if config.registry.enable_online_feature_view_versioning:
        log.info("online feature view versioning is on: reading through get_online_features")
        return None
    if config.entity_key_serialization_version != 3:
        return None
    kind = config.online_store.type
    if kind == "sqlite":
        return _Sqlite(store, spec)
    if kind == "redis" and str(config.online_store.redis_type.value) == "redis":
        return _Redis(store, spec)
    log.info("no direct reader for online store %s: reading through get_online_features", kind)
    return None


class _KeyEncoder:
    """Feast's serialized entity keys for (view, key values), cached: partners repeat on every request."""

    def __init__(self, spec: ServiceSpec, suffix: bytes, wrap: Callable[[bytes], bytes] | None = None) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._serialize = serialize_entity_key
        self._entity_key = EntityKey
        self._value = Value
        self._suffix = suffix
        self._wrap = wrap
        self._views = {view.name: view for view in spec.views}
        self._cache: dict[tuple[str, tuple[Any, ...]], bytes] = {}

    def __call__(self, view: str, key: tuple[Any, ...]) -> bytes:
        cached = self._cache.get((view, key))
        if cached is not None:
            return cached
        spec = self._views[view]
        values = [
            self._value(int64_val=int(v)) if kind == "Int64" else self._value(string_val=str(v))
            for v, kind in zip(key, spec.key_types, strict=True)
        ]
        encoded = self._serialize(
            self._entity_key(join_keys=list(spec.join_keys), entity_values=values), entity_key_serialization_version=3
        )
        encoded += self._suffix
        if self._wrap is not None:
            encoded = self._wrap(encoded)
        if len(self._cache) >= _KEY_CACHE_LIMIT:
            self._cache.clear()
        self._cache[(view, key)] = encoded
        return encoded


class _Layout:
    """Where each view's timestamps and values sit in one request's flat records (cached per shape)."""

    __slots__ = ("shapes", "stamps", "values")

    def __init__(self, stamps: np.ndarray, values: np.ndarray, shapes: list[tuple[int, int]]) -> None:
        self.stamps = stamps
        self.values = values
        self.shapes = shapes  # (keys, features) per view

    def split(self, seconds: np.ndarray, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        key_start = value_start = 0
        for keys, features in self.shapes:
            block = values[value_start : value_start + keys * features].reshape(keys, features)
            out.append((seconds[key_start : key_start + keys], block))
            key_start += keys
            value_start += keys * features
        return out


def _pack(lengths: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Fixed-width records from value lengths and the values' bytes back to back."""
    records = np.zeros((len(lengths), RECORD), dtype=np.uint8)
    records[:, 0] = lengths
    if len(data):
        starts = np.cumsum(lengths, dtype=np.intp) - lengths
        owner = np.repeat(np.arange(len(lengths), dtype=np.intp), lengths)
        offset = np.arange(len(data), dtype=np.intp) - np.repeat(starts, lengths)
        records[owner, 1 + offset] = data
    return records


_Shape = tuple[tuple[str, int], ...]


def _shape(views: Sequence[ViewSpec], counts: tuple[int, ...]) -> _Shape:
    """Which views a fetch asks, with how many keys each: what its command, query and layout depend on."""
    return tuple(zip((view.name for view in views), counts, strict=True))


def _bulk(item: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(item), item)


class _Redis:
    """Feast's Redis layout: one hash per entity key (+ project), a field per feature, ``_ts:<view>``.

    The EVALSHA command is written as RESP bytes from cached pieces (each entity key's bulk string,
    the fields section per request shape) and sent on a pooled redis-py connection: packing ~200
    arguments through redis-py on every request would cost a third of the latency budget.
    """

    def __init__(self, store: FeatureStore, spec: ServiceSpec) -> None:
        import hashlib

        import redis
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import RedisOnlineStore

        online = store.config.online_store
        nodes, kwargs = RedisOnlineStore._parse_connection_string(online.connection_string)
        self._client = redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)
        self._sha = hashlib.sha1(_GATHER_LUA.encode()).hexdigest().encode()
        self._keys = _KeyEncoder(spec, store.project.encode("utf-8"), wrap=_bulk)
        self._fields = {
            view.name: [f"_ts:{view.view}".encode(), *(_mmh3(f"{view.view}:{f}") for f in view.features)]
            for view in spec.views
        }
        self._argv: dict[_Shape, tuple[bytes, int]] = {}
        self._layouts: dict[_Shape, _Layout] = {}

    def fetch(self, views: Sequence[ViewSpec], lookups: Sequence[_Lookups]) -> list[tuple[np.ndarray, np.ndarray]]:
        counts = tuple(len(lookup.keys) for lookup in lookups)
        shape = _shape(views, counts)
        keys = [self._keys(view.name, key) for view, lookup in zip(views, lookups, strict=True) for key in lookup.keys]
        argv, nargs = self._argv.get(shape) or self._argv_for(views, counts)
        head = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (3 + len(keys) + nargs, _bulk(self._sha), _bulk(b"%d" % len(keys)))
        lengths, data = self._call(b"".join([head, *keys, argv]))
        if len(lengths) and max(lengths) > _PAYLOAD:
            raise FeatureStoreError("online feature value too long to be numeric", got=f"{max(lengths)} bytes")
        records = _pack(np.frombuffer(lengths, dtype=np.uint8), np.frombuffer(data, dtype=np.uint8))
        layout = self._layouts.get(shape) or self._layout(views, counts)
        seconds = decode_seconds(records[layout.stamps])
        values = decode_values(records[layout.values])
        return layout.split(seconds, values)

    def _call(self, command: bytes) -> tuple[bytes, bytes]:
        from redis.exceptions import NoScriptError, RedisError

        pool = self._client.connection_pool
        try:
            for attempt in (1, 2):
                connection = pool.get_connection()
                try:
                    connection.send_packed_command([command])  # type: ignore[no-untyped-call]
                    lengths, data = connection.read_response()
                    return bytes(lengths), bytes(data)
                except NoScriptError:
                    if attempt == 2:
                        raise
                    self._client.script_load(_GATHER_LUA)  # a restarted or flushed server forgot it
                except Exception:
                    connection.disconnect()  # type: ignore[no-untyped-call]  # no half-read reply for the next caller
                    raise
                finally:
                    pool.release(connection)
        except RedisError as exc:
            raise FeatureStoreError(
                "Redis online read failed", where=str(self._client), got=str(exc), hint="is Redis up?"
            ) from exc
        raise AssertionError("unreachable")

    def _argv_for(self, views: Sequence[ViewSpec], counts: tuple[int, ...]) -> tuple[bytes, int]:
        args: list[bytes] = [b"%d" % len(views)]
        for view, count in zip(views, counts, strict=True):
            fields = self._fields[view.name]
            args += [b"%d" % count, b"%d" % len(fields), *fields]
        packed = (b"".join(_bulk(a) for a in args), len(args))
        self._argv[_shape(views, counts)] = packed
        return packed

    def _layout(self, views: Sequence[ViewSpec], counts: tuple[int, ...]) -> _Layout:
        shapes = [(count, len(view.features)) for view, count in zip(views, counts, strict=True)]
        # Records come per key as [timestamp, feature 1 .. feature F], view after view.
        widths = np.concatenate([np.full(count, width + 1) for count, width in shapes]).astype(np.intp)
        stamps = np.concatenate(([0], np.cumsum(widths)[:-1])).astype(np.intp)
        is_value = np.ones(int(widths.sum()), dtype=bool)
        is_value[stamps] = False
        layout = _Layout(stamps, np.flatnonzero(is_value), shapes)
        self._layouts[_shape(views, counts)] = layout
        return layout

    def close(self) -> None:
        self._client.close()


class _Sqlite:
    """Feast's SQLite layout: table ``<project>_<view>``, one row per (entity key, feature)."""

    def __init__(self, store: FeatureStore, spec: ServiceSpec) -> None:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        self._path = SqliteOnlineStore._get_db_path(store.config)
        # No type detection: event_ts comes back as Feast's adapter stored it, converted below.
        self._conn = sqlite3.connect(self._path, check_same_thread=False)
        self._keys = _KeyEncoder(spec, b"")
        self._tables = {view.name: _quote(f"{store.project}_{view.view}") for view in spec.views}
        self._seconds: dict[Any, float] = {}
        self._sql: dict[_Shape, str] = {}

    def fetch(self, views: Sequence[ViewSpec], lookups: Sequence[_Lookups]) -> list[tuple[np.ndarray, np.ndarray]]:
        counts = tuple(len(lookup.keys) for lookup in lookups)
        sql = self._sql.get(_shape(views, counts)) or self._query(views, counts)
        keys = [self._keys(view.name, key) for view, lookup in zip(views, lookups, strict=True) for key in lookup.keys]
        try:
            rows = self._conn.execute(sql, keys).fetchall()
        except sqlite3.OperationalError as exc:
            raise FeatureStoreError(
                "SQLite online store cannot be read",
                where=self._path,
                got=str(exc),
                hint="run `bidflow features apply`",
            ) from exc
        widths = [len(view.features) for view in views]
        stamp_base = np.concatenate(([0], np.cumsum(counts))).astype(np.intp)
        value_base = np.concatenate(([0], np.cumsum([c * w for c, w in zip(counts, widths, strict=True)])))
        seconds = np.zeros(int(stamp_base[-1]))
        values = np.full(int(value_base[-1]), np.nan)
        if rows and any(row[0] is None for row in rows):
            rows = [row for row in rows if row[0] is not None]
        if rows:
            cells, stamps, blobs, raw_ts = zip(*rows, strict=True)
            lengths = [len(b) for b in blobs]
            if max(lengths) > _PAYLOAD:
                raise FeatureStoreError("online feature value too long to be numeric", got=f"{max(lengths)} bytes")
            records = _pack(np.array(lengths, dtype=np.uint8), np.frombuffer(b"".join(blobs), dtype=np.uint8))
            values[np.array(cells, dtype=np.intp)] = decode_values(records)
            converted = {raw: self._event_seconds(raw) for raw in set(raw_ts)}
            seconds[np.array(stamps, dtype=np.intp)] = [converted[raw] for raw in raw_ts]
        return [
            (
                seconds[stamp_base[v] : stamp_base[v + 1]],
                values[value_base[v] : value_base[v + 1]].reshape(counts[v], widths[v]),
            )
            for v in range(len(views))
        ]

    def _query(self, views: Sequence[ViewSpec], counts: tuple[int, ...]) -> str:
        """One statement for every view; SQL computes where each row lands in the flat arrays.

        A row of view ``v`` for its ``pos``-th key and feature ``f`` goes to value cell
        ``value_base[v] + pos * F + f`` and to timestamp slot ``stamp_base[v] + pos``; a stored
        feature the service does not request gets a NULL cell. (Filtering on ``feature_name`` in
        SQL would turn one index range per key into one probe per key and feature: slower.)
        """
        parts = []
        stamp_base = value_base = 0
        for view, count in zip(views, counts, strict=True):
            if count == 0:
                continue
            width = len(view.features)
            keys = ",".join(f"(?,{i})" for i in range(count))
            column = " ".join(f"WHEN {_literal(f)} THEN {i}" for i, f in enumerate(view.features))
            parts.append(
                f"SELECT {value_base} + k.column2 * {width} + CASE t.feature_name {column} END, "
                f"{stamp_base} + k.column2, t.value, t.event_ts "
                f"FROM (VALUES {keys}) AS k JOIN {self._tables[view.name]} AS t ON t.entity_key = k.column1"
            )
            stamp_base += count
            value_base += count * width
        sql = " UNION ALL ".join(parts)
        self._sql[_shape(views, counts)] = sql
        return sql

    def _event_seconds(self, raw: Any) -> float:
        """Seconds as Feast's SQLite reader sees them.

        Feast stores ``int(naive_utc.timestamp())`` (a naive datetime read as local time) and reads
        it back with ``datetime.fromtimestamp`` (local) labelled UTC: the same round trip here keeps
        both paths equal whatever the server's time zone.
        """
        cached = self._seconds.get(raw)
        if cached is None:
            if isinstance(raw, int | float) or (isinstance(raw, str | bytes) and str(raw).isdigit()):
                moment = datetime.fromtimestamp(int(raw))  # local time: mirrors Feast's converter
            else:
                moment = datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))
            cached = float(int(moment.replace(tzinfo=UTC).timestamp()))
            self._seconds[raw] = cached
        return cached

    def close(self) -> None:
        self._conn.close()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
