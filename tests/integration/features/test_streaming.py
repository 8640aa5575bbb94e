"""The streaming velocity pipeline against real Redis: TalkingData clicks -> Redis Stream -> processor -> online store.

Each test has its own Feast project, stream key and checkpoint key in Redis database 12 (streaming
tests only) and deletes them afterwards. What is checked against what: the online store, read with
the serving reader, against the offline rows (``bidflow.features.velocity.offline_tables``) that
training sets are made from, at the same timestamps.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from bidflow.config import StreamConfig
from bidflow.errors import FeatureStoreError
from bidflow.features import store as feature_store
from bidflow.features.online import OnlineFeatureReader
from bidflow.features.online_writer import FeastPushSink, RedisSink
from bidflow.features.streaming import ClickStream, StreamProcessor, connect
from bidflow.features.talkingdata import read_clicks
from bidflow.features.velocity import KEYS, VIEWS, Click, clicks_from_frame, offline_tables
from tests.conftest import SHARED_DATA
from tests.unit.features.support import features_config

pytestmark = pytest.mark.integration

REDIS_DB = 12  # streaming feature tests only
CLICKS = SHARED_DATA / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
ID_KEYS = ["ip", "app", "device", "os"]


@pytest.fixture(scope="module")
def clicks() -> pd.DataFrame:
    return read_clicks(CLICKS)


@dataclass
class Setup:
    store: Any
    client: Any
    settings: StreamConfig
    connection: str
    project: str
    tmp: Path

    def processor(self, **settings: Any) -> StreamProcessor:
        return StreamProcessor(self.client, RedisSink(self.store), self.settings.model_copy(update=settings))

    def publish(self, frame: pd.DataFrame | list[Click]) -> None:
        clicks = list(clicks_from_frame(frame)) if isinstance(frame, pd.DataFrame) else frame
        ClickStream(self.client, self.settings.stream).publish(clicks)

    def reader(self) -> OnlineFeatureReader:
        return OnlineFeatureReader(self.store, "fraud")


@pytest.fixture
def setup(redis_url: str, tmp_path: Path) -> Iterator[Setup]:
    url = urlparse(redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    project = f"bidflow_stream_{uuid.uuid4().hex[:10]}"
    connection = f"{host}:{port},db={REDIS_DB}"
    cfg = features_config(tmp_path, project=project)
    store = feature_store.open_store(cfg, {"online_store": {"type": "redis", "connection_string": connection}})
    feature_store.apply(store, cfg)
    client = connect(f"redis://{host}:{port}/{REDIS_DB}")
    settings = StreamConfig(
        redis_url=f"redis://{host}:{port}/{REDIS_DB}", stream=f"{project}:clicks", batch=2_000, block_ms=10
    )
    yield Setup(store, client, settings, connection, project, tmp_path)
    stale = list(client.scan_iter(match=f"*{project}*", count=10_000))
    if stale:
        client.delete(*stale)
    client.close()


def latest_rows(tables: dict[str, pd.DataFrame], until_s: int) -> dict[str, pd.DataFrame]:
    """Each key's offline row as of ``until_s`` (the point-in-time lookup at that second)."""
    out = {}
    for view, table in tables.items():
        upto = table[table["event_timestamp"] <= pd.Timestamp(until_s, unit="s", tz="UTC")]
        out[view] = upto.drop_duplicates(list(KEYS[view]), keep="last")
    return out


def offline_matrix(keys: pd.DataFrame, tables: dict[str, pd.DataFrame], until_s: int) -> np.ndarray:
    """The fraud service's columns for ``keys`` rows, from the offline rows as of ``until_s``."""
    parts = []
    for view, table in latest_rows(tables, until_s).items():
        merged = keys.merge(table, on=list(KEYS[view]), how="left")
        features = [c for c in table.columns if c not in KEYS[view] and c != "event_timestamp"]
        parts.append(merged[features].to_numpy(dtype=np.float64))
    return np.hstack(parts)


def online_matrix(reader: OnlineFeatureReader, keys: pd.DataFrame, at_s: int) -> np.ndarray:
    return reader.read({k: keys[k].tolist() for k in ID_KEYS}, at=float(at_s))


def assert_online_equals_offline(setup: Setup, accepted: pd.DataFrame, keys: pd.DataFrame, at_s: int) -> None:
    tables = offline_tables(accepted)
    reader = setup.reader()
    np.testing.assert_array_equal(online_matrix(reader, keys, at_s), offline_matrix(keys, tables, at_s))
    reader.close()


def test_a_day_of_real_clicks_online_equals_offline_hour_by_hour(setup: Setup, clicks: pd.DataFrame) -> None:
    """Streamed an hour at a time, every key touched in the hour reads online what training sees offline."""
    day = clicks[clicks["day"] == "2017-11-07"]
    tables = offline_tables(day)
    processor = setup.processor()
    assert processor.start() == 0
    reader = setup.reader()
    hours = day["ts"] // 3600
    checked = 0
    for hour in sorted(hours.unique()):
        chunk = day[hours == hour]
        setup.publish(chunk)
        assert processor.run_until_idle() == len(chunk)
        end = int(chunk["ts"].max())
        keys = chunk[ID_KEYS].drop_duplicates()
        np.testing.assert_array_equal(online_matrix(reader, keys, end), offline_matrix(keys, tables, end))
        checked += len(keys)
    assert checked >= len(day) * 0.9 and processor.state.counters.accepted == len(day)
    # Feast's own online read sees the same rows as bidflow's direct reader.
    sample = day[ID_KEYS].drop_duplicates().sample(200, random_state=1)
    at = int(day["ts"].max())
    np.testing.assert_array_equal(reader.read_via_feast({k: sample[k].tolist() for k in ID_KEYS}, at=float(at)),
                                  online_matrix(reader, sample, at))  # fmt: skip
    reader.close()
    processor.close()


def busy_stretch(clicks: pd.DataFrame, n: int = 3_000) -> pd.DataFrame:
    return clicks[clicks["day"] == "2017-11-08"].iloc[:n]


def test_out_of_order_clicks_within_lateness_count_and_later_ones_are_dropped(
    setup: Setup, clicks: pd.DataFrame
) -> None:
    lateness = setup.settings.allowed_lateness_s
    part = busy_stretch(clicks)
    rng = random.Random(5)
    ordered = list(clicks_from_frame(part))
    arrival = sorted(ordered, key=lambda c: c.ts + rng.uniform(0, lateness))  # each at most `lateness` late
    setup.publish(arrival)
    processor = setup.processor()
    processor.start()
    processor.run_until_idle()
    assert processor.state.counters.late == 0
    # Too late: 10 clicks on the stretch's own keys, stamped two lateness periods behind the latest.
    latest = int(part["ts"].max())
    stale = [c._replace(event_id=f"late-{i}", ts=latest - 2 * lateness - 1) for i, c in enumerate(ordered[-10:])]
    setup.publish(stale)
    processor.run_until_idle()
    assert processor.state.counters.late == len(stale)
    keys = part[ID_KEYS].drop_duplicates()
    assert_online_equals_offline(setup, part, keys, latest)  # the in-order stretch, without the late ones
    processor.close()


def test_duplicate_deliveries_are_counted_once(setup: Setup, clicks: pd.DataFrame) -> None:
    """A redelivery soon after the original is skipped as a duplicate; a much later one is dropped as late."""
    part = busy_stretch(clicks)
    ordered = list(clicks_from_frame(part))
    twice = 0
    for start in range(0, len(ordered), 10):  # some clicks delivered twice, right after their batch
        setup.publish(ordered[start : start + 10] + ordered[start : start + 10 : 3])
        twice += len(ordered[start : start + 10 : 3])
    setup.publish(ordered[:500])  # and the first 500 once more, long after
    processor = setup.processor()
    processor.start()
    processor.run_until_idle()
    counters = processor.state.counters
    assert counters.accepted == len(ordered)
    assert counters.duplicates >= twice and counters.duplicates + counters.late == twice + 500
    assert_online_equals_offline(setup, part, part[ID_KEYS].drop_duplicates(), int(part["ts"].max()))
    processor.close()


class Crash(Exception):
    pass


class CrashingSink(RedisSink):
    """Writes ``before`` batches, then fails: the processor dies between reading a batch and acknowledging it."""

    def __init__(self, store: Any, before: int) -> None:
        super().__init__(store)
        self.left = before

    def write(self, rows: Any) -> int:
        if self.left == 0:
            raise Crash
        self.left -= 1
        return super().write(rows)


@pytest.mark.parametrize("checkpoint", [True, False], ids=["from-checkpoint", "from-stream-start"])
def test_a_restarted_processor_rebuilds_the_counts(setup: Setup, clicks: pd.DataFrame, checkpoint: bool) -> None:
    part = busy_stretch(clicks, 6_000)
    ordered = list(clicks_from_frame(part))
    settings = setup.settings.model_copy(update={"batch": 500, "checkpoint_every_s": 3600.0})
    setup.publish(ordered[:3_000])
    first = StreamProcessor(setup.client, CrashingSink(setup.store, before=4), settings)
    first.start()
    for _ in range(3):
        first.step()
    if checkpoint:
        first.checkpoint()  # after 1,500 clicks
    with pytest.raises(Crash):
        for _ in range(3):
            first.step()  # dies on its fifth batch: read (delivered) but neither written nor acknowledged
    setup.publish(ordered[2_900:3_000])  # redelivered across the restart
    setup.publish(ordered[3_000:])
    second = StreamProcessor(setup.client, RedisSink(setup.store), settings)
    replayed = second.start()
    assert replayed == (2_500 - 1_500 if checkpoint else 2_500)  # every delivered entry after the checkpoint
    second.run_until_idle()
    counters = second.state.counters
    assert counters.accepted == len(ordered) and counters.duplicates + counters.late == 100
    pending = setup.client.xpending(settings.stream, settings.group)
    assert pending["pending"] == 0
    assert_online_equals_offline(setup, part, part[ID_KEYS].drop_duplicates(), int(part["ts"].max()))
    second.close()


def test_direct_sink_writes_the_bytes_feast_push_writes(setup: Setup, clicks: pd.DataFrame) -> None:
    part = busy_stretch(clicks, 400)
    tables = offline_tables(part)
    rows = {
        view: {
            tuple(int(v) for v in row[list(KEYS[view])]): (
                int(row["event_timestamp"].timestamp()),
                tuple(float(row[c]) for c in table.columns if c not in KEYS[view] and c != "event_timestamp"),
            )
            for _, row in table.drop_duplicates(list(KEYS[view]), keep="last").iterrows()
        }
        for view, table in tables.items()
    }
    assert any(np.isnan(v[1][2]) for v in rows[VIEWS[2]].values())  # a null seconds_since_previous too
    with pytest.raises(FeatureStoreError, match="skip_dedup"):
        FeastPushSink(setup.store)

    def dump() -> dict[bytes, dict[bytes, bytes]]:
        keys = [k for k in setup.client.scan_iter(match=f"*{setup.project}", count=10_000)]
        found = {k: setup.client.hgetall(k) for k in keys}
        if keys:
            setup.client.delete(*keys)
        return found

    pushing = feature_store.open_store(
        features_config(setup.tmp, project=setup.project),
        {"online_store": {"type": "redis", "connection_string": setup.connection, "skip_dedup": True}},
    )
    FeastPushSink(pushing).write(rows)
    by_feast = dump()
    RedisSink(setup.store).write(rows)
    assert dump() == by_feast and len(by_feast) == sum(len(r) for r in rows.values())


@pytest.mark.parametrize("sink", ["redis", "feast"])
def test_the_stream_commands_fill_the_online_store(setup: Setup, clicks: pd.DataFrame, sink: str) -> None:
    """``bidflow stream publish`` then ``bidflow stream process --idle-exit``, as a user runs them, through
    either sink (``feast``: ``FeatureStore.push``)."""
    from typer.testing import CliRunner

    from bidflow.cli import cli

    env = {
        "BIDFLOW__FEATURES__OFFLINE": str(setup.tmp / "offline"),
        "BIDFLOW__FEATURES__STATE": str(setup.tmp / "state"),
        "BIDFLOW__FEATURES__PROJECT": setup.project,
        "BIDFLOW__STREAM__REDIS_URL": setup.settings.redis_url,
        "BIDFLOW__STREAM__STREAM": setup.settings.stream,
        "BIDFLOW__STREAM__ONLINE_STORE": setup.connection,
        "BIDFLOW__FRAUD__SOURCE": str(CLICKS),
        "BIDFLOW__STREAM__SINK": sink,
    }
    for args in (["stream", "publish", "--day", "2017-11-06"], ["stream", "process", "--idle-exit"]):
        result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    day = clicks[clicks["day"] == "2017-11-06"]
    assert f"{len(day):,} accepted" in result.output
    assert_online_equals_offline(setup, day, day[ID_KEYS].drop_duplicates(), int(day["ts"].max()))
    assert setup.client.exists(f"{setup.settings.stream}:{setup.settings.group}:checkpoint")
