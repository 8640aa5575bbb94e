"""The services the integration tests rely on answer real requests on 127.0.0.1."""

from __future__ import annotations

import uuid

import psycopg
import pytest
import redis

pytestmark = pytest.mark.integration


def test_redis_round_trip(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"bidflow-test:{uuid.uuid4()}"
    client.set(key, b"1", ex=30)
    assert client.get(key) == b"1"
    client.delete(key)


def test_postgres_round_trip(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute("select current_setting('server_version_num')::int").fetchone()
    assert row is not None and row[0] >= 120000
