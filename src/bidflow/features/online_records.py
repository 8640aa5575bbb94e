"""Feast's online storage format: entity keys encoded as Feast writes them, stored values decoded in bulk.

Both direct backends (``online_redis``, ``online_sqlite``) look rows up by Feast's serialized entity
keys and get back serialized ``Value`` / ``Timestamp`` protobufs. Numeric features fit in a few
bytes, so each is packed into a fixed-width record (a length byte, then up to ``PAYLOAD`` bytes)
and decoded with numpy, column by column, instead of one protobuf object per value.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from bidflow.features.spec import ServiceSpec, ViewSpec

RECORD: Final = 13  # one length byte + up to 12 bytes of a serialized Value / Timestamp protobuf
PAYLOAD: Final = RECORD - 1
_KEY_CACHE_LIMIT: Final = 200_000
# Protobuf tags of the Value oneof fields a numeric feature can have (field << 3 | wire type).
_DOUBLE, _FLOAT, _INT32, _INT64, _BOOL = 0x29, 0x35, 0x18, 0x20, 0x38
_TS_SECONDS: Final = 0x08  # google.protobuf.Timestamp.seconds
_U32: Final = struct.Struct("<I")
_I64: Final = struct.Struct("<q")
_F64: Final = struct.Struct("<d")
_F32: Final = struct.Struct("<f")
_INTEGERS: Final = frozenset((_INT64, _INT32, _BOOL))
_VARINT_BYTES: Final = 10  # the most a protobuf varint takes; the bulk decoder reads no more either


class KeyEncoder:
    """Feast's serialized entity keys for (view, key values), cached: partners repeat on every request.

    The bytes are Feast's ``serialize_entity_key`` (version 3) written directly: the key count, each
    join key's name and each value in join-key-name order, every part length-prefixed. Building them
    through protobuf objects is paid by every key a server reads for the first time (a click's IP
    usually is), and was several times the cost of the read itself for a click (bench/README.md, "Reading
    the fraud serving rows"); written with ``struct`` it is a small share. A value the
    direct form cannot write (an int outside int64, a string that is not UTF-8) goes through Feast's
    own function, which raises its own error. A test holds both byte-equal.
    """

    def __init__(self, spec: ServiceSpec, suffix: bytes, wrap: Callable[[bytes], bytes] | None = None) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value, ValueType

        self._serialize = serialize_entity_key
        self._entity_key = EntityKey
        self._value = Value
        self._suffix = suffix
        self._wrap = wrap
        self._views = {view.name: view for view in spec.views}
        self._cache: dict[tuple[str, tuple[Any, ...]], bytes] = {}
        self._string_tag = _U32.pack(ValueType.STRING)
        self._int64_head = _U32.pack(ValueType.INT64) + _U32.pack(8)  # type, then the value's 8-byte length
        self._plans = {view.name: self._plan(view, ValueType.STRING) for view in spec.views}

    def __call__(self, view: str, key: tuple[Any, ...]) -> bytes:
        cached = self._cache.get((view, key))
        if cached is not None:
            return cached
        try:
            encoded = self._direct(view, key)
        except (struct.error, UnicodeEncodeError):  # Feast's own path raises its own error for this value
            encoded = self._via_feast(view, key)
        encoded += self._suffix
        if self._wrap is not None:
            encoded = self._wrap(encoded)
        if len(self._cache) >= _KEY_CACHE_LIMIT:
            self._cache.clear()
        self._cache[(view, key)] = encoded
        return encoded

    def _direct(self, view: str, key: tuple[Any, ...]) -> bytes:
        """``serialize_entity_key`` v3 of ``key`` from the view's fixed head and the values in join-key-name order."""
        head, order = self._plans[view]
        parts = [head]
        for position, is_int in order:
            value = key[position]
            if is_int:
                parts.append(self._int64_head + _I64.pack(int(value)))
            else:
                raw = str(value).encode("utf-8")
                parts.append(self._string_tag + _U32.pack(len(raw)) + raw)
        return b"".join(parts)

    @staticmethod
    def _plan(view: ViewSpec, string_type: int) -> tuple[bytes, list[tuple[int, bool]]]:
        """The bytes before a view's values (key count, the join keys' names) and where each value comes from.

        Feast sorts (join key, value) pairs; join keys are distinct, so that is the order of the names.
        """
        ranked = sorted(range(len(view.join_keys)), key=lambda i: view.join_keys[i])
        head = [_U32.pack(len(ranked))]
        for i in ranked:
            name = view.join_keys[i].encode("utf-8")
            head += [_U32.pack(string_type), _U32.pack(len(name)), name]
        return b"".join(head), [(i, view.key_types[i] == "Int64") for i in ranked]

    def _via_feast(self, view: str, key: tuple[Any, ...]) -> bytes:
        spec = self._views[view]
        values = [
            self._value(int64_val=int(v)) if kind == "Int64" else self._value(string_val=str(v))
            for v, kind in zip(key, spec.key_types, strict=True)
        ]
        encoded: bytes = self._serialize(
            self._entity_key(join_keys=list(spec.join_keys), entity_values=values), entity_key_serialization_version=3
        )
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


def decode_value(raw: bytes) -> float:
    """One serialized feast ``Value`` as ``decode_values`` decodes it in bulk (NaN for null), without numpy.

    For a handful of values (a click's three views) numpy's fixed cost per call is most of the work;
    a test holds both decoders equal.
    """
    length = len(raw)
    if length == 0:
        return math.nan
    tag = raw[0]
    if tag == _DOUBLE and length == 9:
        return float(_F64.unpack_from(raw, 1)[0])
    if tag == _FLOAT and length == 5:
        return float(_F32.unpack_from(raw, 1)[0])
    if tag in _INTEGERS and length > 1:
        return float(_varint(raw, 1))
    return _decode_proto(raw)


def decode_second(raw: bytes) -> float:
    """One serialized ``google.protobuf.Timestamp``'s seconds as ``decode_seconds`` decodes them (0 when absent)."""
    if len(raw) > 1 and raw[0] == _TS_SECONDS:
        return float(_varint(raw, 1))
    return 0.0


def _varint(raw: bytes, start: int) -> int:
    """The protobuf varint at ``raw[start:]`` as int64, read as ``_varints`` reads it from a zero-padded record.

    The record ends the varint where the bytes end (its padding is zeros) and after ten bytes at most;
    the sum wraps at 64 bits, which is two's complement for negative varints.
    """
    out = shift = 0
    for byte in raw[start : start + _VARINT_BYTES]:
        out |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    out &= 0xFFFF_FFFF_FFFF_FFFF
    return out - (1 << 64) if out >= 1 << 63 else out


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
