"""The streaming velocity pipeline through Kinesis: TalkingData clicks -> a Kinesis stream -> processor -> Redis.

The Kinesis side is ``moto_server`` (moto's Kinesis emulation: a real HTTP server speaking the Kinesis
protocol, started here on 127.0.0.1), which the real boto3 client talks to; it is not AWS. The online
store and the checkpoint are real Redis (database 12, a Feast project and stream of their own per
test, deleted afterwards), and the values read online are checked against the offline rows training
uses, as ``test_streaming.py`` does for the Redis Stream.

What moto does not emulate is exercised by injecting the service's answers into the real client
(botocore's ``before-call`` event): an expired shard iterator, and a shard closed by resharding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.config import KinesisConfig, StreamConfig
from bidflow.errors import FeatureStoreError
from bidflow.features.kinesis_source import KinesisClickStream, KinesisSource, kinesis_client
from bidflow.features.online_writer import RedisSink
from bidflow.features.streaming import StreamProcessor
from bidflow.features.velocity import Click, clicks_from_frame, offline_tables
from tests.integration.features.test_streaming import (
    CLICKS,
    ID_KEYS,
    Crash,
    CrashingSink,
    Setup,
    assert_online_equals_offline,
    busy_stretch,
    clicks,
    offline_matrix,
    online_matrix,
    setup,
)
from tests.moto_server import CREDENTIALS, moto_endpoint

__all__ = ["clicks", "moto_endpoint", "setup"]  # fixtures, shared with test_streaming.py and tests/moto_server.py

pytestmark = pytest.mark.integration

REGION = "us-east-1"


# moto accepts any credentials; set them so the SDK's chain never looks further (an instance profile, ~/.aws).
class Kinesis:
    """One test's Kinesis stream (named after its Feast project) and the settings that point at it."""

    def __init__(self, setup: Setup, endpoint: str, shards: int = 1) -> None:
        self.setup = setup
        name = f"{setup.project}-clicks"
        self.settings = setup.settings.model_copy(update={
            "source": "kinesis",
            "kinesis": KinesisConfig(stream_name=name, region=REGION, endpoint_url=endpoint, poll_interval_s=0.01),
        })  # fmt: skip
        self.client = kinesis_client(self.settings.kinesis)
        self.client.create_stream(StreamName=name, ShardCount=shards)
        self.client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})

    def publish(self, frame: pd.DataFrame | list[Click]) -> list[str]:
        clicks = list(clicks_from_frame(frame)) if isinstance(frame, pd.DataFrame) else frame
        return KinesisClickStream(self.client, self.settings.kinesis.stream_name).publish(clicks)

    def processor(self, sink: Any = None, **settings: Any) -> StreamProcessor:
        chosen = self.settings.model_copy(update=settings)
        source = KinesisSource(self.client, chosen)
        return StreamProcessor(self.setup.client, sink or RedisSink(self.setup.store), chosen, source=source)

    def close(self) -> None:
        self.client.delete_stream(StreamName=self.settings.kinesis.stream_name)


@pytest.fixture
def kinesis(setup: Setup, moto_endpoint: str) -> Iterator[Kinesis]:
    stream = Kinesis(setup, moto_endpoint)
    yield stream
    stream.close()


def test_a_day_of_real_clicks_through_kinesis_online_equals_offline(kinesis: Kinesis, clicks: pd.DataFrame) -> None:
    """Put on Kinesis an hour at a time, every key touched in the hour reads online what training sees offline."""
    day = clicks[clicks["day"] == "2017-11-07"]
    tables = offline_tables(day)
    processor = kinesis.processor()
    assert processor.start() == 0
    reader = kinesis.setup.reader()
    hours = day["ts"] // 3600
    for hour in sorted(hours.unique()):
        chunk = day[hours == hour]
        numbers = kinesis.publish(chunk)
        assert len(numbers) == len(chunk)
        assert processor.run_until_idle() == len(chunk)
        end = int(chunk["ts"].max())
        keys = chunk[ID_KEYS].drop_duplicates()
        np.testing.assert_array_equal(online_matrix(reader, keys, end), offline_matrix(keys, tables, end))
    counters = processor.state.counters
    assert (counters.accepted, counters.duplicates, counters.late) == (len(day), 0, 0)
    # The checkpoint names the shard and the last sequence number the state includes.
    processor.checkpoint()
    assert processor.state.counters.accepted == len(day)
    reader.close()
    processor.close()


def test_duplicate_deliveries_through_kinesis_are_counted_once(kinesis: Kinesis, clicks: pd.DataFrame) -> None:
    """At-least-once delivery: records put twice (soon after, and long after) change nothing online."""
    part = busy_stretch(clicks)
    ordered = list(clicks_from_frame(part))
    twice = 0
    for start in range(0, len(ordered), 50):
        kinesis.publish(ordered[start : start + 50] + ordered[start : start + 50 : 7])
        twice += len(ordered[start : start + 50 : 7])
    kinesis.publish(ordered[:300])  # and the first 300 once more, long after
    processor = kinesis.processor()
    assert processor.start() == len(ordered) + twice + 300  # a fresh processor catches up to the tip
    assert processor.run_until_idle() == 0
    counters = processor.state.counters
    assert counters.accepted == len(ordered)
    assert counters.duplicates >= twice and counters.duplicates + counters.late == twice + 300
    assert_online_equals_offline(kinesis.setup, part, part[ID_KEYS].drop_duplicates(), int(part["ts"].max()))
    processor.close()


@pytest.mark.parametrize("checkpoint", [True, False], ids=["from-checkpoint", "from-trim-horizon"])
def test_a_restarted_kinesis_processor_resumes_exactly(
    kinesis: Kinesis, clicks: pd.DataFrame, checkpoint: bool
) -> None:
    """Stopped mid-stream (a batch read but never written), restarted: the same final values, no click twice."""
    part = busy_stretch(clicks, 6_000)
    ordered = list(clicks_from_frame(part))
    first = kinesis.processor(CrashingSink(kinesis.setup.store, before=4), batch=500, checkpoint_every_s=3600.0)
    assert first.start() == 0  # started on the empty stream: it reads the clicks batch by batch
    kinesis.publish(ordered[:3_000])
    for _ in range(3):
        first.step()
    if checkpoint:
        first.checkpoint()  # after 1,500 clicks
    with pytest.raises(Crash):
        for _ in range(3):
            first.step()  # dies on its fifth batch: read but neither written nor checkpointed
    kinesis.publish(ordered[2_900:3_000])  # redelivered across the restart
    kinesis.publish(ordered[3_000:])
    second = kinesis.processor(batch=500, checkpoint_every_s=3600.0)
    replayed = second.start()
    # From the checkpoint's sequence number (or the trim horizon) to the tip: everything not in the restored state.
    assert replayed == len(ordered) + 100 - (1_500 if checkpoint else 0)
    counters = second.state.counters
    assert counters.accepted == len(ordered) and counters.duplicates + counters.late == 100
    assert_online_equals_offline(kinesis.setup, part, part[ID_KEYS].drop_duplicates(), int(part["ts"].max()))
    # Once more from its own checkpoint, with nothing new: nothing replayed, nothing changed.
    second.checkpoint()
    third = kinesis.processor(batch=500)
    assert third.start() == 0 and third.state.counters == counters
    for processor in (second, third):
        processor.close()


def _inject(client: Any, operation: str, answer: Callable[[dict[str, Any]], dict[str, Any] | None]) -> list[int]:
    """Make the real client's ``operation`` calls answer ``answer(params)`` where it returns one (an error if the
    dict holds "Error"); None lets the call go to the server. Returns the list the calls are counted in."""
    calls: list[int] = []

    def before_call(params: dict[str, Any], **_: Any) -> Any:
        calls.append(1)
        parsed = answer(params)
        if parsed is None:
            return None
        status = 400 if "Error" in parsed else 200
        return SimpleNamespace(status_code=status, headers={}, raw=None, content=b""), parsed

    client.meta.events.register(f"before-call.kinesis.{operation}", before_call)
    return calls


def test_an_expired_shard_iterator_is_renewed_after_the_last_record(kinesis: Kinesis, clicks: pd.DataFrame) -> None:
    part = busy_stretch(clicks, 2_000)
    kinesis.publish(part)
    expired = {"Error": {"Code": "ExpiredIteratorException", "Message": "Iterator expired"}}
    calls = _inject(kinesis.client, "GetRecords", lambda _: expired if len(calls) in (3, 6) else None)
    processor = kinesis.processor(batch=300)
    processor.start()
    assert len(calls) >= 6, "the injected expiries were not reached"
    counters = processor.state.counters
    assert (counters.accepted, counters.duplicates, counters.late) == (len(part), 0, 0)
    assert_online_equals_offline(kinesis.setup, part, part[ID_KEYS].drop_duplicates(), int(part["ts"].max()))
    processor.close()


def test_a_shard_closed_by_resharding_stops_the_processor_with_its_children(
    kinesis: Kinesis, clicks: pd.DataFrame
) -> None:
    """A closed shard's last GetRecords has no NextShardIterator (moto keeps serving one, so it is injected)."""
    part = busy_stretch(clicks, 500)
    kinesis.publish(part)
    processor = kinesis.processor()
    processor.start()
    children = [{"ShardId": "shardId-000000000001"}, {"ShardId": "shardId-000000000002"}]
    closed = {"Records": [], "MillisBehindLatest": 0, "ChildShards": children}
    _inject(kinesis.client, "GetRecords", lambda _: closed)
    processor.step()  # reaches the end of the shard
    with pytest.raises(FeatureStoreError, match="closed by resharding") as stopped:
        processor.step()
    assert "shardId-000000000001" in str(stopped.value)
    processor.close()


def test_a_resharded_or_multi_shard_stream_is_refused_at_start(kinesis: Kinesis, clicks: pd.DataFrame) -> None:
    kinesis.publish(busy_stretch(clicks, 100))
    name = kinesis.settings.kinesis.stream_name
    (shard,) = kinesis.client.list_shards(StreamName=name)["Shards"]
    middle = (int(shard["HashKeyRange"]["StartingHashKey"]) + int(shard["HashKeyRange"]["EndingHashKey"])) // 2
    kinesis.client.split_shard(StreamName=name, ShardToSplit=shard["ShardId"], NewStartingHashKey=str(middle))
    with pytest.raises(FeatureStoreError, match="one shard") as refused:
        kinesis.processor().start()
    assert "2 open shard(s)" in str(refused.value)


def test_a_checkpoint_of_another_source_is_refused(kinesis: Kinesis, clicks: pd.DataFrame) -> None:
    """A Redis Stream checkpoint under the Kinesis key (or a hand-made one) is named, not misread."""
    import msgspec

    processor = kinesis.processor()
    key = KinesisSource(kinesis.client, kinesis.settings).checkpoint_key
    state = processor.state.snapshot()
    kinesis.setup.client.set(key, msgspec.msgpack.encode({"id": "1-0", "state": state}))
    with pytest.raises(FeatureStoreError, match="no Kinesis sequence numbers"):
        processor.start()
    kinesis.setup.client.set(key, msgspec.msgpack.encode({"shards": {"shardId-000000000009": "5"}, "state": state}))
    with pytest.raises(FeatureStoreError, match="another shard"):
        kinesis.processor().start()


def test_the_stream_commands_fill_the_online_store_through_kinesis(kinesis: Kinesis, clicks: pd.DataFrame) -> None:
    """``bidflow stream publish`` then ``bidflow stream process --idle-exit`` with ``stream.source: kinesis``."""
    from typer.testing import CliRunner

    from bidflow.cli import cli

    setup, settings = kinesis.setup, kinesis.settings
    env = {
        "BIDFLOW__FEATURES__OFFLINE": str(setup.tmp / "offline"),
        "BIDFLOW__FEATURES__STATE": str(setup.tmp / "state"),
        "BIDFLOW__FEATURES__PROJECT": setup.project,
        "BIDFLOW__STREAM__REDIS_URL": settings.redis_url,
        "BIDFLOW__STREAM__ONLINE_STORE": setup.connection,
        "BIDFLOW__STREAM__SOURCE": "kinesis",
        "BIDFLOW__STREAM__KINESIS__STREAM_NAME": settings.kinesis.stream_name,
        "BIDFLOW__STREAM__KINESIS__REGION": REGION,
        "BIDFLOW__STREAM__KINESIS__ENDPOINT_URL": str(settings.kinesis.endpoint_url),
        "BIDFLOW__STREAM__KINESIS__POLL_INTERVAL_S": "0.01",
        "BIDFLOW__FRAUD__SOURCE": str(CLICKS),
    } | {key: os.environ[key] for key in CREDENTIALS}
    for args in (["stream", "publish", "--day", "2017-11-06"], ["stream", "process", "--idle-exit"]):
        result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    day = clicks[clicks["day"] == "2017-11-06"]
    # A fresh processor catches up to the tip in start(): every click is accepted before the loop begins.
    assert f"replayed {len(day):,} entries" in result.output and f"{len(day):,} accepted" in result.output
    assert_online_equals_offline(setup, day, day[ID_KEYS].drop_duplicates(), int(day["ts"].max()))
    assert setup.client.exists(KinesisSource(kinesis.client, settings).checkpoint_key)


def test_a_missing_stream_is_a_clear_error(setup: Setup, moto_endpoint: str) -> None:
    absent = KinesisConfig(stream_name=f"{setup.project}-absent", region=REGION, endpoint_url=moto_endpoint)
    settings = StreamConfig(source="kinesis", kinesis=absent)
    source = KinesisSource(kinesis_client(settings.kinesis), settings)
    with pytest.raises(FeatureStoreError, match="could not list the Kinesis stream's shards") as failed:
        source.open(None)
    assert "create the stream" in str(failed.value)
