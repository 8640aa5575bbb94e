"""The feature store against real Redis (online) and PostgreSQL (registry) on 127.0.0.1.

Each test uses its own Feast project name in a dedicated Redis database number, and deletes its
keys afterwards; the PostgreSQL test creates and drops its own database. Unreachable services
fail the tests (fixtures ``redis_url`` / ``postgres_dsn``), they are never skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

from bidflow.data.batch import read_frame
from bidflow.errors import FeatureStoreError
from bidflow.features import store as feature_store
from bidflow.features.online import OnlineFeatureReader
from tests.unit.features.support import check_train_serve_consistency, features_config

pytestmark = pytest.mark.integration

REDIS_DB = 11  # bidflow feature-store tests only


@pytest.fixture
def redis_target(redis_url: str) -> Iterator[tuple[str, str]]:
    """(Feast connection string, unique project); removes the project's keys afterwards."""
    import redis

    url = urlparse(redis_url)
    project = f"bidflow_it_{uuid.uuid4().hex[:10]}"
    yield f"{url.hostname}:{url.port or 6379},db={REDIS_DB}", project
    client = redis.Redis(host=url.hostname or "127.0.0.1", port=url.port or 6379, db=REDIS_DB)
    suffix = project.encode()
    stale = [key for key in client.scan_iter(count=1000) if key.endswith(suffix)]
    if stale:
        client.delete(*stale)
    client.close()


def compare_paths(store: Any, ingested: Path, at: Any) -> None:
    """The direct Redis path and ``get_online_features`` agree on logged requests."""
    reader = OnlineFeatureReader(store, "bid_filter")
    assert reader.backend == "redis"
    logged = read_frame(ingested)
    partners = [*sorted(logged["partner"].unique()), "never_seen"]
    for _, request in logged.drop_duplicates("auction_id").sample(15, random_state=3).iterrows():
        keys = {
            "partner": partners,
            "publisher_id": request["publisher_id"],
            "country": request["country"],
            "format": request["format"],
            "device_type": int(request["device_type"]),
        }
        np.testing.assert_array_equal(reader.read(keys, at=at), reader.read_via_feast(keys, at=at))
    reader.close()


def test_redis_serving_matches_training_and_get_online_features(
    redis_target: tuple[str, str], ingested: Path, tmp_path: Path
) -> None:
    connection, project = redis_target
    cfg = features_config(tmp_path, project=project)
    store = feature_store.open_store(cfg, {"online_store": {"type": "redis", "connection_string": connection}})
    counts = check_train_serve_consistency(store, cfg, ingested)
    assert counts["live"] > 0 and counts["defaults"] > 0
    last = read_frame(ingested)["ts"].max()
    compare_paths(store, ingested, last + timedelta(minutes=30))


def test_materialize_into_unreachable_redis_is_a_clear_error(tmp_path: Path, ingested: Path) -> None:
    from bidflow.data.batch import read_batch
    from bidflow.features.build import build_bid_features, write_tables

    cfg = features_config(tmp_path)
    write_tables(build_bid_features(read_batch(ingested)), cfg.offline)
    store = feature_store.open_store(cfg, {"online_store": {"type": "redis", "connection_string": "127.0.0.1:1"}})
    feature_store.apply(store, cfg)
    last = read_frame(ingested)["ts"].max().to_pydatetime()
    with pytest.raises(FeatureStoreError, match="Redis online store is unreachable"):
        feature_store.materialize(store, last - timedelta(days=1), last, ["partner_stats"])


@pytest.fixture
def registry_database(postgres_dsn: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the SQL registry; its SQLAlchemy URL."""
    import psycopg

    name = f"bidflow_feast_{uuid.uuid4().hex[:10]}"
    url = urlparse(postgres_dsn)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://{url.username}@{url.hostname}:{url.port or 5432}/{name}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_production_yaml_sql_registry_and_redis(
    registry_database: str,
    redis_target: tuple[str, str],
    ingested: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """feature_store.production.yaml as shipped, pointed at local PostgreSQL, Redis and parquet."""
    from bidflow.data.batch import read_batch
    from bidflow.features.build import build_bid_features, write_tables

    connection, project = redis_target
    monkeypatch.setenv("BIDFLOW_FEAST_REGISTRY_URL", registry_database)
    monkeypatch.setenv("BIDFLOW_FEAST_REDIS", connection)
    cfg = features_config(tmp_path, project=project, environment="production")
    store = feature_store.open_store(cfg)
    assert store.config.registry.registry_type == "sql" and store.config.online_store.type == "redis"
    write_tables(build_bid_features(read_batch(ingested)), cfg.offline)
    summary = feature_store.apply(store, cfg)
    assert summary.feature_services == ["bid_filter", "ctr", "fraud"]
    last = read_frame(ingested)["ts"].max().to_pydatetime()
    views = [v.view for v in OnlineFeatureReader(store, "bid_filter", direct=False).spec.views]
    feature_store.materialize(store, last - timedelta(days=1), last, views)
    # a second process (the model server) sees the registry through PostgreSQL only
    server = feature_store.open_store(cfg)
    compare_paths(server, ingested, last)
    store.registry.teardown()


def test_reader_reloads_its_script_when_redis_forgot_it(
    redis_target: tuple[str, str], ingested: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted Redis has no scripts: the reader loads its own on NOSCRIPT and answers."""
    from bidflow.features import online_redis as online

    connection, project = redis_target
    # A never-seen variant of the script (same code, unique comment) is "forgotten" by construction,
    # without flushing the scripts of everyone else on this shared server.
    monkeypatch.setattr(online, "_GATHER_LUA", online._GATHER_LUA + f"\n-- {uuid.uuid4().hex}\n")
    cfg = features_config(tmp_path, project=project)
    from bidflow.data.batch import read_batch
    from bidflow.features.build import build_bid_features, write_tables

    write_tables(build_bid_features(read_batch(ingested)), cfg.offline)
    store = feature_store.open_store(cfg, {"online_store": {"type": "redis", "connection_string": connection}})
    feature_store.apply(store, cfg)
    last = read_frame(ingested)["ts"].max().to_pydatetime()
    feature_store.materialize(store, last - timedelta(days=1), last, ["partner_stats"])
    reader = OnlineFeatureReader(store, "bid_filter")
    keys = {"partner": ["atlas"], "publisher_id": "p", "country": "USA", "format": "banner", "device_type": 2}
    np.testing.assert_array_equal(reader.read(keys, at=last), reader.read_via_feast(keys, at=last))
    reader.close()
