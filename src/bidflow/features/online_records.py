"""Feast's online storage format: entity keys encoded as Feast writes them, stored values decoded in bulk.

Both direct backends (``online_redis``, ``online_sqlite``) look rows up by Feast's serialized entity
keys and get back serialized ``Value`` / ``Timestamp`` protobufs. Numeric features fit in a few
bytes, so each is packed into a fixed-width record (a length byte, then up to ``PAYLOAD`` bytes)
and decoded with numpy, column by column, instead of one protobuf object per value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np

from bidflow.features.spec import ServiceSpec

RECORD: Final = 13  # one length byte + up to 12 bytes of a serialized Value / Timestamp protobuf
PAYLOAD: Final = RECORD - 1
_KEY_CACHE_LIMIT: Final = 200_000
# Protobuf tags of the Value oneof fields a numeric feature can have (field << 3 | wire type).
_DOUBLE, _FLOAT, _INT32, _INT64, _BOOL = 0x29, 0x35, 0x18, 0x20, 0x38
_TS_SECONDS: Final = 0x08  # google.protobuf.Timestamp.seconds


class KeyEncoder:
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


def pack(lengths: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Fixed-width records from value lengths and the values' bytes back to back."""
    records = np.zeros((len(lengths), RECORD), dtype=np.uint8)
    records[:, 0] = lengths
    if len(data):
        starts = np.cumsum(lengths, dtype=np.intp) - lengths
        owner = np.repeat(np.arange(len(lengths), dtype=np.intp), lengths)
        offset = np.arange(len(data), dtype=np.intp) - np.repeat(starts, lengths)
        records[owner, 1 + offset] = data
    return records


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


def _decode_proto(raw: bytes) -> float:
    from feast.protos.feast.types.Value_pb2 import Value

    value = Value()
    value.ParseFromString(raw)
    field = value.WhichOneof("val")
    return np.nan if field is None else float(getattr(value, field))
