"""The online reader on SQLite: the direct path equals ``get_online_features``; defaults; ttl."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from bidflow.errors import FeatureStoreError
from bidflow.features import store as feature_store
from bidflow.features.online import RECORD, OnlineFeatureReader, decode_seconds, decode_values
from bidflow.serving.bid_filter_features import LAYOUT
from tests.unit.features.support import T0, WriteViews

HOUR = timedelta(hours=1)
PARTNERS = ["a", "b", "c", "never_seen"]


def records(blobs: list[bytes]) -> np.ndarray:
    padded = b"".join(bytes((len(b),)) + b.ljust(RECORD - 1, b"\0") for b in blobs)
    return np.frombuffer(padded, dtype=np.uint8).reshape(-1, RECORD)


def test_decode_values_agrees_with_protobuf() -> None:
    from feast.protos.feast.types.Value_pb2 import Value

    values = [
        Value(double_val=1.25),
        Value(double_val=-0.0),
        Value(double_val=1e300),
        Value(double_val=float("nan")),
        Value(float_val=0.5),
        Value(int64_val=0),
        Value(int64_val=300),
        Value(int64_val=2**53),
        Value(int64_val=-1),
        Value(int64_val=-(2**40)),
        Value(int32_val=-7),
        Value(int32_val=2**31 - 1),
        Value(bool_val=True),
        Value(bool_val=False),
        Value(),  # null
        Value(unix_timestamp_val=1_700_000_000),  # another numeric encoding: decoded via protobuf
    ]
    blobs = [v.SerializeToString() for v in values]
    got = decode_values(records(blobs))
    expected = []
    for v in values:
        field = v.WhichOneof("val")
        expected.append(np.nan if field is None else float(getattr(v, field)))
    np.testing.assert_array_equal(got, np.array(expected))


def test_decode_seconds_of_feast_timestamps() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamps = [Timestamp(seconds=1_793_613_600), Timestamp(seconds=5, nanos=999), Timestamp(), Timestamp(nanos=3)]
    got = decode_seconds(records([t.SerializeToString() for t in stamps] + [b""]))
    np.testing.assert_array_equal(got, [1_793_613_600, 5, 0, 0, 0])


PARTNER_ROWS = [
    {"partner": p, "event_timestamp": T0 + k * HOUR, "calls_1h": 10 * i + k, "bid_rate_1h": 0.01 * (10 * i + k)}
    for i, p in enumerate(["a", "b", "c"])
    for k in range(3)
]
SLICE_ROWS = [
    {"partner": "a", "publisher_id": "pub", "event_timestamp": T0, "calls_24h": 5, "mean_price_24h": 1.5},
    {"partner": "b", "publisher_id": "pub", "event_timestamp": T0 + HOUR, "calls_24h": 6, "mean_price_24h": np.nan},
]
DEVICE_ROWS = [{"partner": "c", "device_type": 4, "event_timestamp": T0 + HOUR, "calls_1h": 9}]


@pytest.fixture
def materialized(write_views: WriteViews, applied: Any) -> Any:
    write_views(
        {
            "partner_stats": PARTNER_ROWS,
            "partner_publisher_stats": SLICE_ROWS,
            "partner_device_stats": DEVICE_ROWS,
            "publisher_stats": [{"publisher_id": "pub", "event_timestamp": T0, "auctions_24h": 3}],
        }
    )
    bid_views = [v.view for v in OnlineFeatureReader(applied, "bid_filter", direct=False).spec.views]
    feature_store.materialize(applied, T0 - 24 * HOUR, T0 + 2 * HOUR, bid_views)
    return applied


@pytest.mark.parametrize("minutes", [0, 59, 150, 240, 241])
def test_direct_sqlite_reads_equal_get_online_features(materialized: Any, minutes: int) -> None:
    reader = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT)
    assert reader.backend == "sqlite"
    at = T0 + 2 * HOUR + timedelta(minutes=minutes)
    direct = reader.features(PARTNERS, "pub", "USA", "banner", 4, at=at)
    via_feast = reader.read_via_feast(
        {"partner": PARTNERS, "publisher_id": "pub", "country": "USA", "format": "banner", "device_type": 4}, at=at
    )
    assert direct.shape == (len(PARTNERS), len(reader.feature_names))
    np.testing.assert_array_equal(direct, via_feast)


def test_values_defaults_and_ttl(materialized: Any) -> None:
    reader = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT)
    names = list(reader.feature_names)
    col = names.index
    fresh = reader.features(PARTNERS, "pub", "USA", "banner", 4, at=T0 + 2 * HOUR)
    # the latest materialized row of each partner: k = 2
    assert list(fresh[:, col("partner_stats__calls_1h")]) == [2, 12, 22, 0]
    partner_side = [i for i, name in enumerate(names) if not name.startswith("publisher_stats__")]
    np.testing.assert_array_equal(fresh[3, partner_side], reader.defaults[partner_side])  # never seen: defaults
    assert fresh[3, col("publisher_stats__auctions_24h")] == 3  # ... but its publisher is known
    # a null value (NaN mean price) is served as the default, like in training
    assert np.isnan(fresh[1, col("partner_publisher_stats__mean_price_24h")])
    assert fresh[1, col("partner_publisher_stats__calls_24h")] == 6
    # a's publisher row is from T0: 2 h old at T0+2h (kept), older one second later (default)
    assert fresh[0, col("partner_publisher_stats__calls_24h")] == 5
    later = reader.features(PARTNERS, "pub", "USA", "banner", 4, at=T0 + 2 * HOUR + timedelta(seconds=1))
    assert later[0, col("partner_publisher_stats__calls_24h")] == 0
    assert later[0, col("partner_stats__calls_1h")] == 2
    # partner-independent views are the same on every row
    assert set(fresh[:, col("publisher_stats__auctions_24h")]) == {3}
    stale = reader.features(PARTNERS, "pub", "USA", "banner", 4, at=T0 + 5 * HOUR)
    np.testing.assert_array_equal(stale, np.tile(reader.defaults, (len(PARTNERS), 1)))


def test_online_rows_equal_training_rows(materialized: Any) -> None:
    import pandas as pd

    reader = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT)
    at = T0 + 2 * HOUR + timedelta(minutes=30)
    online = reader.features(PARTNERS, "pub", "USA", "banner", 4, at=at)
    entities = pd.DataFrame(
        {"partner": PARTNERS, "publisher_id": "pub", "country": "USA", "format": "banner", "device_type": 4}
    ).assign(event_timestamp=at)
    offline_rows = feature_store.training_set(materialized, entities, "bid_filter")
    offline = offline_rows[list(reader.feature_names)].to_numpy(dtype=float)
    np.testing.assert_array_equal(online, offline)


def test_feature_names_come_from_the_service(materialized: Any) -> None:
    reader = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT)
    service = materialized.get_feature_service("bid_filter")
    expected = [f"{p.name}__{f.name}" for p in service.feature_view_projections for f in p.features]
    assert list(reader.feature_names) == expected
    assert len(expected) == len(set(expected)) == 42


def test_missing_join_key_is_a_clear_error(materialized: Any) -> None:
    reader = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT)
    with pytest.raises(FeatureStoreError, match="lacks join keys"):
        reader.read({"partner": ["a"], "publisher_id": "pub"})


def test_no_partners_no_rows_and_naive_times_are_utc(materialized: Any) -> None:
    reader = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT)
    assert reader.features([], "pub", "USA", "banner", 4).shape == (0, len(reader.feature_names))
    aware = reader.features(PARTNERS, "pub", "USA", "banner", 4, at=T0 + HOUR)
    naive = reader.features(PARTNERS, "pub", "USA", "banner", 4, at=(T0 + HOUR).replace(tzinfo=None))
    np.testing.assert_array_equal(aware, naive)


def test_cached_reads_equal_store_reads_until_the_cache_expires(
    materialized: Any, write_views: WriteViews, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bidflow.features import cache

    clock = [1_000.0]
    monkeypatch.setattr(cache, "monotonic", lambda: clock[0])
    plain = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT)
    cached = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT, cache_s=0.5)
    requests = [
        (PARTNERS, "pub", "USA", "banner", 4, T0 + 2 * HOUR),
        (PARTNERS[:2], "pub", "USA", "banner", 4, T0 + 2 * HOUR + timedelta(seconds=1)),  # other key lists
        (PARTNERS, "pub", "FRA", "video", 4, T0 + 2 * HOUR),  # some views hit, others miss
        (PARTNERS, "pub", "USA", "banner", 4, T0 + 5 * HOUR),  # all hit, but every row is past its ttl now
        (PARTNERS, "other", "USA", "banner", 2, T0 + 2 * HOUR),
    ]
    for partners, *keys, at in requests * 2:
        np.testing.assert_array_equal(cached.features(partners, *keys, at=at), plain.features(partners, *keys, at=at))
    stats = cached.cache_stats
    # Each (view, key) is read once: 4 partners x 5 partner views + the publisher, then new
    # countries and formats for 4 partners, then a new publisher and device type.
    assert stats.keys_missed == 4 * 5 + 1 + 4 * 2 + (4 * 2 + 1)
    # Whole rows: the second and fourth requests ask for rows of the first, and the second round
    # for rows of the first; the third and fifth need the key cache.
    assert (stats.rows_hit, stats.rows_missed) == (2 + 4 + 18, 4 + 4 + 4)
    # Only rows the row cache missed reach the key cache: the third request's rows find their
    # partner, partner x publisher, partner x device and publisher views; the fifth's their
    # partner, partner x country and partner x format views.
    assert stats.keys_hit == 4 * 3 + 4 + 4 * 3

    # New values in the store: the cache serves the old ones until it expires, then the new ones.
    write_views({"partner_stats": [row | {"calls_1h": 100 + row["calls_1h"]} for row in PARTNER_ROWS]})
    views = [v.view for v in plain.spec.views]
    feature_store.materialize(materialized, T0 - 24 * HOUR, T0 + 2 * HOUR, views)
    col = list(plain.feature_names).index("partner_stats__calls_1h")
    at = T0 + 2 * HOUR
    assert list(plain.features(PARTNERS, "pub", "USA", "banner", 4, at=at)[:, col]) == [102, 112, 122, 0]
    assert list(cached.features(PARTNERS, "pub", "USA", "banner", 4, at=at)[:, col]) == [2, 12, 22, 0]
    clock[0] += 0.5  # the cache's bound: no answer older than cache_s
    assert list(cached.features(PARTNERS, "pub", "USA", "banner", 4, at=at)[:, col]) == [102, 112, 122, 0]
    plain.close()
    cached.close()


def test_a_shape_is_applied_to_memoized_and_read_answers_alike(materialized: Any) -> None:
    def shape(rows: np.ndarray, partners: Any) -> np.ndarray:
        return np.column_stack([np.nansum(rows, axis=1), [len(p) for p in partners]])

    plain = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT)
    cached = OnlineFeatureReader(materialized, "bid_filter", layout=LAYOUT, cache_s=60)
    cached.set_shape(shape)
    requests = [
        (PARTNERS, "pub", "USA", "banner", 4, T0 + 2 * HOUR),
        (PARTNERS[1:3], "pub", "USA", "banner", 4, T0 + 2 * HOUR + timedelta(seconds=1)),  # past one row's ttl
        (PARTNERS[::-1], "pub", "USA", "banner", 4, T0 + 5 * HOUR),  # past every row's ttl
        (PARTNERS, "other", "FRA", "video", 2, T0 + 2 * HOUR),
    ]
    for partners, *keys, at in requests * 2:
        expected = shape(plain.features(partners, *keys, at=at), partners)
        np.testing.assert_array_equal(cached.features(partners, *keys, at=at), expected)
    assert cached.cache_stats.rows_hit >= 2 * len(PARTNERS)  # the second round came from the memo
    plain.close()
    cached.close()
