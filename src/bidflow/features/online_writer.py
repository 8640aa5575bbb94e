"""Writing streaming feature rows into Feast's Redis online store: through Feast's push API, or directly.

Both sinks take rows as ``VelocityState.rows`` gives them (per view: key -> (event second, values))
and leave the same bytes in Redis (a test holds them equal), so ``OnlineFeatureReader`` and
``get_online_features`` read either one.

* ``FeastPushSink``: ``FeatureStore.push(<view>_push, frame, to=PushMode.ONLINE)``, Feast's own path
  for stream-computed features. Feast's Redis writer skips a row whose timestamp is not newer than the
  stored one; a late click or a second batch in the same second rewrites a key's row at the *same*
  timestamp, so this sink needs the online store's ``skip_dedup: true`` (it refuses to start
  without it rather than lose updates).
* ``RedisSink`` (the processor's default): the same hash layout written by a Lua script, one call
  per view and batch. Feast's push builds a DataFrame, Arrow tables and a protobuf per value, and reads
  every key's old timestamp first; bench/README.md has both sinks' rates.

Feast's Redis layout: one hash per entity key (Feast's v3 serialized key + project), a field per
feature (murmur3 of ``view:feature``) holding a serialized ``Value``, and ``_ts:<view>`` holding a
serialized ``Timestamp``. The few Feast internals this needs are named here and in ``online_redis``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Protocol

from bidflow.errors import FeatureStoreError
from bidflow.features.velocity import FEATURES, KEYS, Row

if TYPE_CHECKING:
    from feast import FeatureStore

Rows = Mapping[str, Mapping[tuple[int, ...], Row]]
_INT64_TAG: Final = b"\x20"  # Value.int64_val: field 4, varint
_DOUBLE_TAG: Final = b"\x29"  # Value.double_val: field 5, 64-bit
_SECONDS_TAG: Final = b"\x08"  # Timestamp.seconds: field 1, varint
_DOUBLE: Final = struct.Struct("<d")


class Sink(Protocol):
    """Where the processor's rows go."""

    def write(self, rows: Rows) -> int:
        """Write every row; the number written."""
        ...

    def close(self) -> None: ...


# Writes one view's rows server-side, so the client sends one command per view and parses one reply
# instead of one per row. KEYS: the entity keys. ARGV: the key expiry in seconds (0: none), the
# number of fields F, the F field names, then F values per key, key after key.
_WRITE_LUA: Final = """
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local base = 2 + n
local args = {}
for k = 1, #KEYS do
  local at = base + (k - 1) * n
  for i = 1, n do
    args[2 * i - 1] = ARGV[2 + i]
    args[2 * i] = ARGV[at + i]
  end
  redis.call('HSET', KEYS[k], unpack(args))
  if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
end
return #KEYS
"""


@lru_cache(maxsize=1 << 16)
def _varint(value: int) -> bytes:
    """A protobuf varint (negative values as 10-byte two's complement, as protobuf writes int64).

    Cached: counts are small numbers and a batch stamps many rows with the same second.
    """
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bulk(item: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(item), item)


_NULL: Final = _bulk(b"")  # an empty Value: null, which the reader turns into the feature's default


@lru_cache(maxsize=1 << 16)
def _int64(value: int) -> bytes:
    """A serialized ``Value(int64_val=value)`` as a RESP bulk string."""
    return _bulk(_INT64_TAG + _varint(int(value)))


def _double(value: float) -> bytes:
    """A serialized ``Value(double_val=value)`` as a RESP bulk string; NaN as null (as Feast's push writes it)."""
    if value != value:  # NaN
        return _NULL
    return _bulk(_DOUBLE_TAG + _DOUBLE.pack(value))


@lru_cache(maxsize=1 << 12)
def _stamp(seconds: int) -> bytes:
    """A serialized ``Timestamp(seconds=...)`` as a RESP bulk string."""
    return _bulk(_SECONDS_TAG + _varint(seconds))


def check_views(store: FeatureStore) -> dict[str, tuple[str, ...]]:
    """The registry's velocity views have the join keys and features the processor writes, in order.

    Returns:
        view -> the Feast type name of each feature (``Int64`` | ``Float64``).

    Raises:
        FeatureStoreError: a view is missing or declares other keys, features or types.
    """
    from bidflow.features.store import feast_errors

    types = {}
    for view, features in FEATURES.items():
        with feast_errors(store):
            found = store.get_feature_view(view)
        keys = tuple(column.name for column in found.entity_columns)
        names = tuple(feature.name for feature in found.features)
        types[view] = tuple(str(feature.dtype) for feature in found.features)
        if sorted(keys) != sorted(KEYS[view]) or names != features or not set(types[view]) <= {"Int64", "Float64"}:
            raise FeatureStoreError(
                "a velocity feature view does not match what the stream processor writes",
                where=f"feature view {view}",
                expected=f"keys {KEYS[view]}, features {features} (Int64 or Float64)",
                got=f"keys {keys}, features {names} {types[view]}",
                hint="feature_repo/feature_views.py and bidflow.features.velocity must agree; "
                "run `bidflow features apply`",
            )
    return types


class RedisSink:
    """Rows in Feast's Redis layout, one EVALSHA per view and ``write`` (``_WRITE_LUA``).

    Args:
        store: a feature store with a Redis online store (where to write, and the project name).
        key_ttl_s: each key's Redis expiry, refreshed on every write (None: keys stay). A key with no
            click for a day only holds defaults-to-be, so expiring it bounds Redis' memory.
        timeout_s: socket timeout of the connection (None: redis-py's default).
    """

    def __init__(self, store: FeatureStore, *, key_ttl_s: int | None = None, timeout_s: float | None = None) -> None:
        import hashlib

        from feast.value_type import ValueType

        from bidflow.features.online_redis import redis_client, view_fields

        online = store.config.online_store
        if getattr(online, "type", None) != "redis":
            raise FeatureStoreError(
                "the stream processor writes a Redis online store",
                expected="online_store.type: redis",
                got=str(getattr(online, "type", online)),
            )
        types = check_views(store)
        settings = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s} if timeout_s is not None else {}
        self._client = redis_client(online.connection_string, **settings)
        self._sha = _bulk(hashlib.sha1(_WRITE_LUA.encode()).hexdigest().encode())
        self._project = store.project.encode("utf-8")
        ttl = _bulk(b"%d" % (key_ttl_s or 0))
        self._prefix: dict[str, bytes] = {}
        self._order: dict[str, list[int]] = {}
        self._argv: dict[str, tuple[bytes, int]] = {}  # per view: (ttl, F, field names) packed, and their count
        self._encoders: dict[str, tuple[Any, ...]] = {}
        for view, keys in KEYS.items():
            ordered = sorted(range(len(keys)), key=lambda i: keys[i])  # Feast sorts join keys by name
            self._order[view] = ordered
            head = [struct.pack("<I", len(keys))]
            for i in ordered:
                name = keys[i].encode("utf-8")
                head.append(struct.pack("<II", ValueType.STRING.value, len(name)) + name)
            self._prefix[view] = b"".join(head)
            fields = view_fields(view, FEATURES[view])
            argv = [ttl, _bulk(b"%d" % len(fields)), *(_bulk(f) for f in fields)]
            self._argv[view] = (b"".join(argv), len(argv))
            self._encoders[view] = tuple(_int64 if kind == "Int64" else _double for kind in types[view])
        # Every join key is an INT64, so a view's serialized key has one length and one layout: its RESP
        # bulk string is constant bytes around the key values in Feast's (sorted) order (``_key_packer``).
        self._key_head = {
            view: b"$%d\r\n" % (len(self._prefix[view]) + 16 * len(keys) + len(self._project))
            for view, keys in KEYS.items()
        }
        self._int64_type = ValueType.INT64.value
        self._key_packers = {view: self._key_packer(view) for view in KEYS}
        self._value_block: dict[str, Any] = {
            view: lru_cache(maxsize=1 << 14)(self._block_for(self._encoders[view])) for view in KEYS
        }

    @staticmethod
    def _block_for(encoders: tuple[Any, ...]) -> Any:
        def block(features: tuple[float, ...]) -> bytes:
            return b"".join([encode(value) for encode, value in zip(encoders, features, strict=True)])

        return block

    def entity_key(self, view: str, key: Sequence[int]) -> bytes:
        """Feast's Redis key of ``key`` in ``view`` (v3 serialized entity key + project)."""
        return self._bulk_key(view, key)[:-2].split(b"\r\n", 1)[1]

    def _bulk_key(self, view: str, key: Sequence[int]) -> bytes:
        return self._key_packers[view](key)

    def _key_packer(self, view: str) -> Callable[[Sequence[int]], bytes]:
        """``key`` -> its RESP bulk string, for one view: constant bytes around one struct.pack of the values."""
        marker = struct.pack("<II", self._int64_type, 8)  # before every value: its type and its length
        before = self._key_head[view] + self._prefix[view] + marker
        after = self._project + b"\r\n"
        first, *rest = self._order[view]
        pack = struct.Struct("<q" + "8sq" * len(rest)).pack
        if not rest:
            return lambda key: before + pack(key[first]) + after
        if len(rest) == 1:
            (second,) = rest
            return lambda key: before + pack(key[first], marker, key[second]) + after
        second, third = rest
        return lambda key: before + pack(key[first], marker, key[second], marker, key[third]) + after

    def write(self, rows: Rows) -> int:
        written = 0
        for view, view_rows in rows.items():
            if not view_rows:
                continue
            block = self._value_block[view]
            names: list[bytes] = []
            values: list[bytes] = []
            bulk_key = self._bulk_key
            for key, (at, features) in view_rows.items():
                names.append(bulk_key(view, key))
                values.append(_stamp(at))
                values.append(block(features))
            argv, nargv = self._argv[view]
            nvalues = len(names) * (1 + len(FEATURES[view]))
            head = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (3 + len(names) + nargv + nvalues, self._sha,
                                                      _bulk(b"%d" % len(names)))  # fmt: skip
            self._call(b"".join([head, *names, argv, *values]))
            written += len(names)
        return written

    def _call(self, command: bytes) -> None:
        from bidflow.features.online_redis import call_script

        call_script(self._client, command, _WRITE_LUA, "write")

    def close(self) -> None:
        self._client.close()


class FeastPushSink:
    """Rows through ``FeatureStore.push`` to each view's push source (``<view>_push``), online only."""

    def __init__(self, store: FeatureStore) -> None:
        online = store.config.online_store
        if getattr(online, "type", None) == "redis" and not getattr(online, "skip_dedup", False):
            raise FeatureStoreError(
                "Feast's Redis writer drops a row that is not newer than the stored one",
                where="online_store.skip_dedup",
                expected="true (late clicks rewrite a key's row at the same timestamp)",
                got="false",
                hint="set skip_dedup: true in the online store config, or use the direct sink",
            )
        check_views(store)
        self._store = store

    def write(self, rows: Rows) -> int:
        from feast.data_source import PushMode

        written = 0
        for view, view_rows in rows.items():
            if view_rows:
                self._store.push(f"{view}_push", push_frame(view, view_rows), to=PushMode.ONLINE)
                written += len(view_rows)
        return written

    def close(self) -> None:
        pass


def push_frame(view: str, rows: Mapping[tuple[int, ...], Row]) -> Any:
    """One view's rows as the frame ``FeatureStore.push`` takes: join keys, ``event_timestamp``, features."""
    import numpy as np
    import pandas as pd

    keys = np.array(list(rows), dtype=np.int64).reshape(len(rows), len(KEYS[view]))
    frame = pd.DataFrame({name: keys[:, i] for i, name in enumerate(KEYS[view])})
    frame["event_timestamp"] = pd.to_datetime([at for at, _ in rows.values()], unit="s", utc=True)
    values = np.array([v for _, v in rows.values()], dtype=np.float64).reshape(len(rows), len(FEATURES[view]))
    for i, name in enumerate(FEATURES[view]):
        frame[name] = values[:, i] if name == "seconds_since_previous" else values[:, i].astype(np.int64)
    return frame
