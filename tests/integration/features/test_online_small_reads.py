"""The online reader's small-read path against real Redis: the same answers as the bulk path, value for value.

The fraud FeatureService's three velocity views hold the rows the stream processor writes from real
TalkingData clicks, plus a few keys whose hashes are written by hand in Feast's layout with values
the processor never writes (float, negative int64, int32, bool, null, a missing field, no timestamp,
a row past its ttl), so that every decoding and serving rule meets both paths. The test has its own
Feast project and stream key in Redis database 11 (feature-store tests) and deletes them afterwards.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from bidflow.config import StreamConfig
from bidflow.features import store as feature_store
from bidflow.features.online import SMALL_READ_ROWS, OnlineFeatureReader
from bidflow.features.online_backend import Lookups
from bidflow.features.online_redis import RedisBackend, view_fields
from bidflow.features.online_writer import RedisSink
from bidflow.features.streaming import ClickStream, StreamProcessor, connect
from bidflow.features.talkingdata import read_clicks
from bidflow.features.velocity import clicks_from_frame
from tests.conftest import SHARED_DATA
from tests.unit.features.support import features_config

pytestmark = pytest.mark.integration

REDIS_DB = 11  # bidflow feature-store tests only
CLICKS = SHARED_DATA / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
ID_KEYS = ("ip", "app", "device", "os")
CRAFTED_IP = 9_000_000_000  # above any TalkingData ip: the hand-written keys


@dataclass
class Filled:
    store: Any
    keys: pd.DataFrame  # (ip, app, device, os) rows with rows in the store, the crafted ones first
    latest_s: int  # the latest click time written


def crafted_rows() -> list[tuple[tuple[int, int, int, int], dict[str, tuple[bytes | None, list[bytes | None]]]]]:
    """Keys with hand-written hashes: per view, (serialized Timestamp or None, serialized Values or None)."""
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    def stamp(seconds: int, nanos: int = 0) -> bytes:
        return Timestamp(seconds=seconds, nanos=nanos).SerializeToString()

    def value(**kwargs: Any) -> bytes:
        return Value(**kwargs).SerializeToString()

    at = 1_510_100_000  # within a day of the sample's last clicks
    return [
        (
            (CRAFTED_IP, 1, 1, 1),
            {  # every numeric encoding a feature can arrive in
                "fraud_ip_velocity": (
                    stamp(at),
                    [value(float_val=2.5), value(int64_val=-(2**40)), value(int32_val=-7)],
                ),
                "fraud_ip_app_velocity": (stamp(at, 999), [value(bool_val=True), value(bool_val=False)]),
                "fraud_ip_device_os_velocity": (
                    stamp(at),
                    [value(int64_val=2**53 + 1), value(double_val=-0.0), value(double_val=1e300)],
                ),
            },
        ),
        (
            (CRAFTED_IP + 1, 2, 2, 2),
            {  # nulls, a missing field, a view without a timestamp, another's NaN
                "fraud_ip_velocity": (stamp(at), [value(), None, value(double_val=float("nan"))]),
                "fraud_ip_app_velocity": (None, [value(int64_val=5), value(int64_val=6)]),
                "fraud_ip_device_os_velocity": (stamp(at - 10), [None, None, None]),
            },
        ),
        (
            (CRAFTED_IP + 2, 3, 3, 3),
            {  # a row past the ttl (a day) at the sample's end, and one just inside
                "fraud_ip_velocity": (stamp(at - 3 * 86_400), [value(double_val=1.0)] * 3),
                "fraud_ip_app_velocity": (stamp(at - 86_400 + 60), [value(double_val=2.0)] * 2),
                "fraud_ip_device_os_velocity": (
                    stamp(at),
                    [value(unix_timestamp_val=1_700_000_000), value(int64_val=0), value(double_val=3.0)],
                ),
            },
        ),
    ]


@pytest.fixture(scope="module")
def filled(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    url = urlparse(redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    project = f"bidflow_small_{uuid.uuid4().hex[:10]}"
    cfg = features_config(tmp_path_factory.mktemp("small-reads"), project=project)
    store = feature_store.open_store(cfg, {"online_store": {"type": "redis", "connection_string":
                                                            f"{host}:{port},db={REDIS_DB}"}})  # fmt: skip
    feature_store.apply(store, cfg)
    client = connect(f"redis://{host}:{port}/{REDIS_DB}")
    try:
        clicks = read_clicks(CLICKS)
        part = clicks[clicks["day"] == "2017-11-08"].iloc[:3_000]
        settings = StreamConfig(redis_url=f"redis://{host}:{port}/{REDIS_DB}", stream=f"{project}:clicks",
                                batch=2_000, block_ms=10)  # fmt: skip
        ClickStream(client, settings.stream).publish(list(clicks_from_frame(part)))
        processor = StreamProcessor(client, RedisSink(store), settings)
        processor.start()
        assert processor.run_until_idle() == len(part)
        processor.close()
        reader = OnlineFeatureReader(store, "fraud")
        encode = reader._backend._keys  # type: ignore[union-attr]  # Feast's key bytes, RESP-wrapped
        rows = crafted_rows()
        for key, views in rows:
            for view in reader.spec.views:
                stamp, values = views[view.view]
                wrapped = encode(view.name, tuple(key[ID_KEYS.index(k)] for k in view.join_keys))
                redis_key = wrapped[wrapped.index(b"\r\n") + 2 : -2]  # the bulk string's payload
                fields = view_fields(view.view, view.features)
                mapping = {f: v for f, v in zip(fields, [stamp, *values], strict=True) if v is not None}
                client.hset(redis_key, mapping=mapping)  # type: ignore[arg-type]
        reader.close()
        crafted = pd.DataFrame([key for key, _ in rows], columns=list(ID_KEYS))
        keys = pd.concat([crafted, part[list(ID_KEYS)].drop_duplicates()], ignore_index=True)
        yield Filled(store, keys, int(part["ts"].max()))
    finally:
        stale = list(client.scan_iter(match=f"*{project}*", count=10_000))
        if stale:
            client.delete(*stale)
        client.close()


def entity_rows(keys: pd.DataFrame, picks: list[int]) -> dict[str, list[str]]:
    """The read's entities as the tabular server passes them: one string per row and key."""
    return {k: [str(keys[k].iloc[i]) for i in picks] for k in ID_KEYS}


def test_small_reads_equal_bulk_reads(filled: Filled) -> None:
    """Random reads of 1 to SMALL_READ_ROWS rows (repeats, never-seen keys, stale rows) answer the same matrix."""
    small = OnlineFeatureReader(filled.store, "fraud")
    bulk = OnlineFeatureReader(filled.store, "fraud", small_reads=0)
    rng = random.Random(7)
    keys = pd.concat([filled.keys, pd.DataFrame([(1, 2, 3, 4), (CRAFTED_IP, 9, 9, 9)], columns=list(ID_KEYS))],
                     ignore_index=True)  # never-seen keys, whole or in part  # fmt: skip
    crafted = [0, 1, 2, len(keys) - 1]
    moments = [filled.latest_s, filled.latest_s + 3_600, 1_510_100_000 + 86_400, filled.latest_s + 2 * 86_400]
    reads = 0
    for n in [*range(1, SMALL_READ_ROWS + 1), *([1] * 40), *([3] * 20)]:
        picks = [rng.randrange(len(keys)) for _ in range(n)]
        if rng.random() < 0.5:
            picks[rng.randrange(n)] = rng.choice(crafted)
        if n > 1 and rng.random() < 0.3:
            picks[-1] = picks[0]  # one key twice in a read
        entities = entity_rows(keys, picks)
        for at in moments:
            got, want = small.read(entities, at=float(at)), bulk.read(entities, at=float(at))
            assert got.dtype == want.dtype == np.float64 and got.shape == want.shape == (n, len(small.feature_names))
            np.testing.assert_array_equal(got, want)
            # the same bits: -0.0 stays -0.0, every default is the default's own value
            assert got.tobytes() == want.tobytes()
            reads += 1
    # Feast's own read agrees too (the reference the bulk path is held to).
    for picks in ([0], [1], [3], [4, 5, 6]):  # not crafted key 2: Feast answers its timestamp value as no float
        entities = entity_rows(keys, picks)
        at = float(filled.latest_s)
        np.testing.assert_array_equal(small.read(entities, at=at), small.read_via_feast(entities, at=at))
    assert reads > 300
    small.close()
    bulk.close()


def test_fetch_few_answers_what_fetch_answers(filled: Filled) -> None:
    """Per view and key: the same event seconds and values (NaN where null or missing) from both decoders."""
    reader = OnlineFeatureReader(filled.store, "fraud")
    backend = reader._backend
    assert isinstance(backend, RedisBackend)
    views = reader.spec.views
    picks = [0, 1, 2, 3, 10, 50]
    rows = [tuple(int(filled.keys[k].iloc[i]) for k in ID_KEYS) for i in picks] + [(1, 2, 3, 4)]
    keys = [[tuple(row[ID_KEYS.index(k)] for k in view.join_keys) for row in rows] for view in views]
    few = backend.fetch_few(views, keys)
    bulk = backend.fetch(views, [Lookups(view_keys, None) for view_keys in keys])
    for (seconds, values), answers in zip(bulk, few, strict=True):
        assert [s for s, _ in answers] == seconds.tolist()
        np.testing.assert_array_equal(np.array([v for _, v in answers], dtype=np.float64), values)
    # The crafted rows hold what was written: a missing stamp reads 0, a null or missing value NaN.
    (ip_view, ip_app_view, device_view) = few
    assert ip_view[0][1] == [2.5, -(2.0**40), -7.0] and ip_app_view[0][1] == [1.0, 0.0]
    assert ip_app_view[1][0] == 0.0 and all(np.isnan(v) for v in device_view[1][1])
    assert np.isnan(ip_view[1][1][0]) and np.isnan(ip_view[1][1][1])
    assert few[0][-1][0] == 0.0 and all(np.isnan(v) for v in few[0][-1][1])  # never written
    reader.close()


@pytest.mark.parametrize(("rows", "path"), [(1, "fetch_few"), (SMALL_READ_ROWS, "fetch_few"),
                                            (SMALL_READ_ROWS + 1, "fetch")])  # fmt: skip
def test_the_number_of_rows_chooses_the_path(filled: Filled, monkeypatch: pytest.MonkeyPatch, rows: int,
                                             path: str) -> None:  # fmt: skip
    calls: list[str] = []
    for name in ("fetch", "fetch_few"):
        original = getattr(RedisBackend, name)

        def spy(self: RedisBackend, *args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(RedisBackend, name, spy)
    reader = OnlineFeatureReader(filled.store, "fraud")
    reader.read(entity_rows(filled.keys, list(range(rows))), at=float(filled.latest_s))
    assert calls == [path]
    reader.close()


def test_cached_readers_keep_their_own_path(filled: Filled) -> None:
    """A reader with a cache reads through its row cache, never the small-read path (it has its own rules)."""
    reader = OnlineFeatureReader(filled.store, "fraud", cache_s=5.0)
    bulk = OnlineFeatureReader(filled.store, "fraud", small_reads=0)
    entities = entity_rows(filled.keys, [0, 1, 2])
    at = float(filled.latest_s)
    np.testing.assert_array_equal(reader.read(entities, at=at), bulk.read(entities, at=at))
    assert reader.cache_stats.keys_missed > 0
    reader.close()
    bulk.close()
