"""The online reader's Redis backend: Feast's Redis layout read in one round trip per request.

Feast keeps one hash per entity key (+ project), a field per feature (murmur3 of ``view:feature``)
and ``_ts:<view>``. A Lua script gathers every HMGET server-side and answers two strings, the byte
length of every value and the values back to back, so the client parses two replies instead of
thousands; they are decoded as fixed-width records with numpy (``fetch``) or, for the few keys of
a small read, one record at a time with ``struct`` (``fetch_few``; ``online_records``).

This module is the one place that touches Feast's private Redis helpers (``redis_client``,
``view_fields``); the stream processor's writer (``online_writer``) uses them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bidflow.errors import FeatureStoreError
from bidflow.features.online_backend import FetchShape, Lookups, Row, fetch_shape
from bidflow.features.online_records import (
    PAYLOAD,
    KeyEncoder,
    decode_second,
    decode_seconds,
    decode_value,
    decode_values,
    pack,
)
from bidflow.features.spec import ServiceSpec, ViewSpec

if TYPE_CHECKING:
    import redis
    from feast import FeatureStore

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


def redis_client(connection_string: str, **settings: Any) -> redis.Redis:
    """A redis-py client for Feast's Redis connection string (``host:port,db=N,password=...``), as Feast builds it."""
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, kwargs = RedisOnlineStore._parse_connection_string(connection_string)
    return redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **(kwargs | settings))


def view_fields(view: str, features: Sequence[str]) -> list[bytes]:
    """The hash fields Feast writes a view's row under: its timestamp field, then murmur3 of ``view:feature``."""
    from feast.infra.online_stores.helpers import _mmh3

    return [f"_ts:{view}".encode(), *(_mmh3(f"{view}:{f}") for f in features)]


def _bulk(item: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(item), item)


def call_script(client: redis.Redis, command: bytes, script: str, what: str) -> Any:
    """Send one packed EVALSHA ``command`` on a pooled connection and return its reply.

    A server that does not know the script (new, restarted or flushed) gets ``script`` loaded and the
    command once more; a connection that failed mid-reply is dropped, so no caller reads a half reply.

    Raises:
        FeatureStoreError: Redis refused or could not be reached (``what``: read or write, for the message).
    """
    from redis.exceptions import NoScriptError, RedisError

    pool = client.connection_pool
    try:
        for attempt in (1, 2):
            connection = pool.get_connection()
            try:
                connection.send_packed_command([command])  # type: ignore[no-untyped-call]
                return connection.read_response()
            except NoScriptError:
                if attempt == 2:
                    raise
                client.script_load(script)
            except Exception:
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
            finally:
                pool.release(connection)
    except RedisError as exc:
        raise FeatureStoreError(f"Redis online {what} failed", where=str(client), got=str(exc),
                                hint="is Redis up?") from exc  # fmt: skip
    raise AssertionError("unreachable")


class RedisBackend:
    """Feast's Redis layout: one hash per entity key (+ project), a field per feature, ``_ts:<view>``.

    ``timeout_s`` (None: redis-py's defaults, or the connection string's ``socket_timeout``) bounds
    every connect and read, and turns redis-py's retries off: its default (retries with a backoff)
    would turn one failed read into seconds of waiting.

    The EVALSHA command is written as RESP bytes from cached pieces (each entity key's bulk string,
    the fields section per request shape) and sent on a pooled redis-py connection: packing ~200
    arguments through redis-py on every request would cost a third of the latency budget.
    """

    name = "redis"

    def __init__(self, store: FeatureStore, spec: ServiceSpec, *, timeout_s: float | None = None) -> None:
        import hashlib

        from redis.backoff import NoBackoff
        from redis.retry import Retry

        settings: dict[str, Any] = {}
        if timeout_s is not None:  # every socket wait bounded, a failed connection not retried
            settings = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
            settings["retry"] = Retry(NoBackoff(), 0)
        self._client = redis_client(store.config.online_store.connection_string, **settings)
        self._sha = hashlib.sha1(_GATHER_LUA.encode()).hexdigest().encode()
        self._keys = KeyEncoder(spec, store.project.encode("utf-8"), wrap=_bulk)
        self._fields = {view.name: view_fields(view.view, view.features) for view in spec.views}
        self._argv: dict[FetchShape, tuple[bytes, int]] = {}
        self._layouts: dict[FetchShape, _Layout] = {}

    def fetch(self, views: Sequence[ViewSpec], lookups: Sequence[Lookups]) -> list[tuple[np.ndarray, np.ndarray]]:
        counts = tuple(len(lookup.keys) for lookup in lookups)
        shape = fetch_shape(views, counts)
        lengths, data = self._gather(views, [lookup.keys for lookup in lookups], counts, shape)
        records = pack(np.frombuffer(lengths, dtype=np.uint8), np.frombuffer(data, dtype=np.uint8))
        layout = self._layouts.get(shape) or self._layout(views, counts)
        seconds = decode_seconds(records[layout.stamps])
        values = decode_values(records[layout.values])
        return layout.split(seconds, values)

    def fetch_few(self, views: Sequence[ViewSpec], keys: Sequence[Sequence[tuple[Any, ...]]]) -> list[list[Row]]:
        """``fetch`` for a few keys, as plain Python: per view, per key, (event seconds, values; NaN for null).

        The same command and reply as ``fetch``, decoded record by record with ``struct`` rather than
        packed into an array and decoded with numpy, whose fixed cost per call is most of the work for a
        few records. Keys are taken as given (a key asked twice is fetched twice). A test holds the
        answers equal to ``fetch``'s.
        """
        counts = tuple(len(view_keys) for view_keys in keys)
        lengths, data = self._gather(views, keys, counts, fetch_shape(views, counts))
        out: list[list[Row]] = []
        record = start = 0  # the record and its first byte: per key, its stamp, then its features
        for view, count in zip(views, counts, strict=True):
            width = len(view.features)
            rows: list[Row] = []
            for _ in range(count):
                end = start + lengths[record]
                seconds = decode_second(data[start:end])
                values = []
                for _ in range(width):
                    record += 1
                    start, end = end, end + lengths[record]
                    values.append(decode_value(data[start:end]))
                rows.append((seconds, values))
                record, start = record + 1, end
            out.append(rows)
        return out

    def _gather(
        self, views: Sequence[ViewSpec], keys: Sequence[Sequence[tuple[Any, ...]]], counts: tuple[int, ...],
        shape: FetchShape,
    ) -> tuple[bytes, bytes]:  # fmt: skip
        """One EVALSHA of the gather script for ``keys`` (per view): the values' lengths and the values."""
        encoded = [self._keys(view.name, key) for view, view_keys in zip(views, keys, strict=True) for key in view_keys]
        argv, nargs = self._argv.get(shape) or self._argv_for(views, counts)
        head = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (
            3 + len(encoded) + nargs,
            _bulk(self._sha),
            _bulk(b"%d" % len(encoded)),
        )
        lengths, data = self._call(b"".join([head, *encoded, argv]))
        if len(lengths) and max(lengths) > PAYLOAD:
            raise FeatureStoreError("online feature value too long to be numeric", got=f"{max(lengths)} bytes")
        return lengths, data

    def _call(self, command: bytes) -> tuple[bytes, bytes]:
        lengths, data = call_script(self._client, command, _GATHER_LUA, "read")
        return bytes(lengths), bytes(data)

    def _argv_for(self, views: Sequence[ViewSpec], counts: tuple[int, ...]) -> tuple[bytes, int]:
        args: list[bytes] = [b"%d" % len(views)]
        for view, count in zip(views, counts, strict=True):
            fields = self._fields[view.name]
            args += [b"%d" % count, b"%d" % len(fields), *fields]
        packed = (b"".join(_bulk(a) for a in args), len(args))
        self._argv[fetch_shape(views, counts)] = packed
        return packed

    def _layout(self, views: Sequence[ViewSpec], counts: tuple[int, ...]) -> _Layout:
        shapes = [(count, len(view.features)) for view, count in zip(views, counts, strict=True)]
        # Records come per key as [timestamp, feature 1 .. feature F], view after view.
        widths = np.concatenate([np.full(count, width + 1) for count, width in shapes]).astype(np.intp)
        stamps = np.concatenate(([0], np.cumsum(widths)[:-1])).astype(np.intp)
        is_value = np.ones(int(widths.sum()), dtype=bool)
        is_value[stamps] = False
        layout = _Layout(stamps, np.flatnonzero(is_value), shapes)
        self._layouts[fetch_shape(views, counts)] = layout
        return layout

    def close(self) -> None:
        self._client.close()
