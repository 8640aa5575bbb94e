"""Feast's storage format as the online reader writes and reads it: entity-key bytes and one-record decoders.

The key bytes are held equal to Feast's own ``serialize_entity_key`` (version 3) for every feature
view of the repo (the fraud views' Int64 keys, the bid filter's string keys and its Int64
``device_type``); the one-record decoders of the small-read path to the bulk decoders.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from bidflow.features.online_records import (
    KeyEncoder,
    decode_second,
    decode_seconds,
    decode_value,
    decode_values,
    pack,
)
from bidflow.features.online_redis import _bulk
from bidflow.features.spec import ServiceSpec, ViewSpec

INT64_EDGES = [0, 1, -1, 127, 128, 255, 256, 2**31 - 1, -(2**31), 2**32, 2**53 + 1, 2**63 - 1, -(2**63)]
STRING_EDGES = ["", "a", "atlas", "ü", "日本", "🙂", "a b", "x" * 300, "0", "-1", "\x00", "USA"]


def repo_views(definitions: dict[str, Any]) -> list[ViewSpec]:
    """Every feature view of the repo with its join keys and their Feast types, as the reader's spec has them."""
    views = []
    for name, view in sorted(definitions.items()):
        if type(view).__name__ != "FeatureView":
            continue
        keys = [(column.name, str(column.dtype)) for column in view.entity_columns]
        views.append(ViewSpec(name, name, tuple(k for k, _ in keys), tuple(t for _, t in keys), (), (), None))
    return views


def random_value(kind: str, rng: random.Random) -> Any:
    if kind == "Int64":
        return rng.choice([rng.choice(INT64_EDGES), rng.randrange(-(2**63), 2**63), rng.randrange(0, 400_000)])
    alphabet = "abcXYZ019 _-/.üé日本🙂"
    return rng.choice([rng.choice(STRING_EDGES), "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))])


def feast_bytes(view: ViewSpec, key: tuple[Any, ...]) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    values = [
        Value(int64_val=v) if kind == "Int64" else Value(string_val=v)
        for v, kind in zip(key, view.key_types, strict=True)
    ]
    encoded: bytes = serialize_entity_key(
        EntityKey(join_keys=list(view.join_keys), entity_values=values), entity_key_serialization_version=3
    )
    return encoded


def test_entity_keys_are_feasts_bytes_for_every_view(definitions: dict[str, Any]) -> None:
    views = repo_views(definitions)
    kinds = {kind for view in views for kind in view.key_types}
    assert kinds == {"Int64", "String"}  # both encodings are exercised
    assert {v.name for v in views} >= {"fraud_ip_velocity", "fraud_ip_app_velocity", "fraud_ip_device_os_velocity"}
    assert any(list(v.join_keys) != sorted(v.join_keys) for v in views)  # Feast sorts them by name
    # and a view of four keys of both types, in reverse name order
    views.append(ViewSpec("mixed", "mixed", ("z", "m", "b", "a"), ("String", "Int64", "String", "Int64"), (), (), None))
    spec = ServiceSpec("all", tuple(views))
    plain = KeyEncoder(spec, b"")
    suffixed = KeyEncoder(spec, b"project_x")
    wrapped = KeyEncoder(spec, b"project_x", wrap=_bulk)
    rng = random.Random(11)
    checked = 0
    for view in views:
        for _ in range(400):
            key = tuple(random_value(kind, rng) for kind in view.key_types)
            expected = feast_bytes(view, key)
            assert plain(view.name, key) == expected, (view.name, key)
            assert suffixed(view.name, key) == expected + b"project_x"
            assert wrapped(view.name, key) == _bulk(expected + b"project_x")
            assert plain(view.name, key) == expected  # from the cache this time
            checked += 1
    assert checked >= 400 * len(views)


def test_entity_key_values_are_cast_as_feast_is_given_them(definitions: dict[str, Any]) -> None:
    """numpy integers and numeric strings for Int64 keys, numbers for string keys: the bytes of the cast value."""
    views = {v.name: v for v in repo_views(definitions)}
    encoder = KeyEncoder(ServiceSpec("all", tuple(views.values())), b"")
    ip = views["fraud_ip_device_os_velocity"]
    assert encoder(ip.name, (np.int64(87540), "1", 13)) == feast_bytes(ip, (87540, 1, 13))
    string_view = next(v for v in views.values() if v.key_types == ("String",))
    assert encoder(string_view.name, (42,)) == feast_bytes(string_view, ("42",))


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_an_int64_key_out_of_range_raises_feasts_error(definitions: dict[str, Any], value: int) -> None:
    from feast.protos.feast.types.Value_pb2 import Value

    views = {v.name: v for v in repo_views(definitions)}
    encoder = KeyEncoder(ServiceSpec("all", tuple(views.values())), b"")
    with pytest.raises(ValueError) as feast_error:
        Value(int64_val=value)
    with pytest.raises(type(feast_error.value)):
        encoder("fraud_ip_velocity", (value,))


def test_a_string_key_utf8_cannot_write_raises_as_before(definitions: dict[str, Any]) -> None:
    views = {v.name: v for v in repo_views(definitions)}
    string_view = next(v for v in views.values() if v.key_types == ("String",))
    encoder = KeyEncoder(ServiceSpec("all", tuple(views.values())), b"")
    with pytest.raises(ValueError):  # protobuf refuses a lone surrogate (UnicodeEncodeError is a ValueError too)
        encoder(string_view.name, ("\ud800",))


def bulk_decoded(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The bulk decoders' answers for ``blobs``, packed into records as the Redis backend packs them."""
    lengths = np.array([len(b) for b in blobs], dtype=np.uint8)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    records = pack(lengths, data)
    return decode_values(records), decode_seconds(records)


def test_one_record_decoders_equal_the_bulk_decoders() -> None:
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    rng = random.Random(3)
    values = [Value(), Value(double_val=float("nan")), Value(double_val=-0.0), Value(double_val=float("inf")),
              Value(double_val=5e-324), Value(float_val=float("-inf")), Value(float_val=1e-45), Value(bool_val=True),
              Value(bool_val=False), Value(int32_val=-(2**31)), Value(unix_timestamp_val=-5)]  # fmt: skip
    values += [Value(int64_val=v) for v in INT64_EDGES]
    for _ in range(2_000):
        kind = rng.randrange(5)
        if kind == 0:
            values.append(Value(double_val=rng.uniform(-1e9, 1e9) * 10 ** rng.randrange(-300, 290)))
        elif kind == 1:
            values.append(Value(float_val=rng.uniform(-1e6, 1e6)))
        elif kind == 2:
            values.append(Value(int64_val=rng.randrange(-(2**63), 2**63)))
        elif kind == 3:
            values.append(Value(int32_val=rng.randrange(-(2**31), 2**31)))
        else:
            values.append(Value(int64_val=rng.randrange(-1000, 1000)))
    blobs = [v.SerializeToString() for v in values]
    bulk, _ = bulk_decoded(blobs)
    one = np.array([decode_value(b) for b in blobs], dtype=np.float64)
    np.testing.assert_array_equal(one, bulk)
    assert np.array_equal(np.signbit(one), np.signbit(bulk))  # -0.0 stays -0.0
    assert np.isnan(one[0]) and one[2] == 0.0 and np.signbit(one[2])

    stamps = [Timestamp(), Timestamp(nanos=5), Timestamp(seconds=-86_400), Timestamp(seconds=2**40, nanos=1)]
    stamps += [Timestamp(seconds=rng.randrange(0, 4_000_000_000), nanos=rng.randrange(10**9)) for _ in range(500)]
    stamp_blobs = [s.SerializeToString() for s in stamps] + [b""]
    _, bulk_seconds = bulk_decoded(stamp_blobs)
    one_seconds = [decode_second(b) for b in stamp_blobs]
    assert one_seconds == bulk_seconds.tolist()
    assert one_seconds[:3] == [0.0, 0.0, -86_400.0] and one_seconds[-1] == 0.0
