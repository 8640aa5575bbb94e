"""Choosing the click source and publisher from ``stream.source``, and the Kinesis client's configuration errors.

No network: building a boto3 client contacts nothing (the Kinesis source itself is tested against moto_server in
tests/integration/features/test_kinesis_stream.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bidflow.config import KinesisConfig, StreamConfig
from bidflow.errors import ConfigError
from bidflow.features.kinesis_source import KinesisClickStream, KinesisSource, kinesis_client
from bidflow.features.redis_source import RedisStreamSource
from bidflow.features.stream_source import open_publisher, open_source
from bidflow.features.streaming import ClickStream, connect


def test_the_source_and_publisher_follow_stream_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = connect("redis://127.0.0.1:1/0")  # never connected to: redis-py connects on the first command
    redis_settings = StreamConfig()
    assert isinstance(open_source(redis_settings, client), RedisStreamSource)
    assert isinstance(open_publisher(redis_settings), ClickStream)
    kinesis = StreamConfig(source="kinesis", kinesis=KinesisConfig(stream_name="clicks-eu", region="eu-west-1"))
    source = open_source(kinesis, client)
    assert isinstance(source, KinesisSource)
    # Each source keeps its checkpoint under its own key: one cannot misread the other's.
    assert source.checkpoint_key == "kinesis:clicks-eu:velocity:checkpoint"
    assert RedisStreamSource(client, redis_settings).checkpoint_key == "bidflow:clicks:velocity:checkpoint"
    assert isinstance(open_publisher(kinesis), KinesisClickStream)


def test_a_kinesis_stream_without_a_region_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="no AWS region") as failed:
        kinesis_client(KinesisConfig())
    assert "stream.kinesis.region" in str(failed.value)
