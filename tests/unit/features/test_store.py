"""Opening the store, applying the definitions, and point-in-time training sets."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.config import FeaturesConfig
from bidflow.errors import FeatureStoreError
from bidflow.features import store as feature_store
from bidflow.features.spec import service_spec
from tests.unit.features.support import FEATURE_REPO, T0, WriteViews, features_config

HOUR = timedelta(hours=1)
KEYS = {"publisher_id": "pub", "country": "USA", "format": "banner", "device_type": 2}


def entity_rows(rows: list[tuple[str, str, Any]]) -> pd.DataFrame:
    """(partner, publisher, timestamp) rows with the other keys fixed, plus a label column."""
    return pd.DataFrame(
        [
            KEYS | {"partner": p, "publisher_id": pub, "event_timestamp": ts, "bid": i % 2}
            for i, (p, pub, ts) in enumerate(rows)
        ]
    )


# Rows of partner "a" at T0, T0+1h, T0+2h (calls_1h = 1, 2, 3 marks which one a join picked).
PARTNER_ROWS = [
    {"partner": "a", "event_timestamp": T0 + k * HOUR, "calls_1h": k + 1, "bid_rate_1h": 0.1 * (k + 1)}
    for k in range(3)
]
PUBLISHER_ROWS = [{"publisher_id": "pub", "event_timestamp": T0, "auctions_1h": 7}]

# (partner, publisher, timestamp) -> which partner row a correct point-in-time join uses (0: none).
CASES = [
    ("a", "pub", T0 - HOUR / 2, 0),  # only rows after it: nothing may leak back
    ("a", "pub", T0 + HOUR - timedelta(seconds=1), 1),  # the 11:00 row is one second in the future
    ("a", "pub", T0 + HOUR, 2),  # a row stamped exactly at the request time is usable
    ("a", "pub2", T0 + HOUR, 2),  # same partner and time, another publisher: must not collapse
    ("a", "pub", T0 + 4 * HOUR - timedelta(seconds=1), 3),  # 12:00 row, 1 h 59 m 59 s old: within ttl
    ("a", "pub", T0 + 4 * HOUR, 3),  # exactly ttl (2 h) old: still within
    ("a", "pub", T0 + 4 * HOUR + timedelta(seconds=1), 0),  # older than ttl: a default
    ("b", "pub", T0 + HOUR, 0),  # a partner the store has never seen
]


@pytest.fixture
def crafted(write_views: WriteViews, applied: Any) -> Any:
    write_views({"partner_stats": PARTNER_ROWS, "publisher_stats": PUBLISHER_ROWS})
    return applied


def test_point_in_time_join_no_leak_latest_row_and_ttl(crafted: Any) -> None:
    entities = entity_rows([(p, pub, ts) for p, pub, ts, _ in CASES])
    result = feature_store.build_training_set(crafted, entities, "bid_filter")
    frame = result.frame
    assert len(frame) == len(CASES)
    pd.testing.assert_frame_equal(frame[entities.columns], entities.assign(event_timestamp=frame.event_timestamp))
    assert list(frame["partner_stats__calls_1h"]) == [k for *_, k in CASES]
    expected_rate = [0.1 * k if k else np.nan for *_, k in CASES]
    np.testing.assert_allclose(frame["partner_stats__bid_rate_1h"], expected_rate)
    # publisher row at T0: rows at or after T0 within 2 h see it, for pub only
    assert list(frame["publisher_stats__auctions_1h"]) == [0, 7, 7, 0, 0, 0, 0, 7]
    assert result.defaulted["partner_stats"] == 3
    # the first and the expired lookups are the ones Feast leaves out; "b" comes back with nulls
    assert result.dropped_by_feast["partner_stats"] == 2
    assert result.rows_with_defaults == len(CASES)  # no crafted row has every view


def test_defaults_come_from_the_feature_definitions(crafted: Any) -> None:
    spec = service_spec(crafted, "bid_filter")
    frame = feature_store.training_set(crafted, entity_rows([("nobody", "nowhere", T0)]), "bid_filter")
    np.testing.assert_array_equal(frame[list(spec.columns)].to_numpy(dtype=float)[0], spec.defaults)
    assert frame.attrs["rows_with_defaults"] == 1
    counts = [c for c in spec.columns if "__calls_" in c or "__auctions_" in c]
    assert counts and all(frame[c].iloc[0] == 0 for c in counts)
    assert np.isnan(frame["partner_stats__bid_rate_24h"].iloc[0])


def test_feast_file_offline_store_drops_and_collapses_entity_rows(crafted: Any) -> None:
    """Feast 0.67's own behaviour, which ``training_set`` works around (see its docstring).

    If this starts failing after a Feast upgrade, Feast changed: ``training_set`` stays correct
    either way (it asks per view for distinct lookups and rejoins), but update the docs.
    """
    entities = entity_rows([(p, pub, ts) for p, pub, ts, _ in CASES]).assign(row=range(len(CASES)))
    service = crafted.get_feature_service("bid_filter")
    got = crafted.get_historical_features(entity_df=entities, features=service, full_feature_names=True).to_df()
    kept = set(got["row"])
    assert 0 not in kept  # only future feature rows: dropped
    assert 6 not in kept  # only rows older than ttl: dropped
    assert not {2, 3} <= kept  # same partner + timestamp: collapsed into one
    assert len(got) < len(entities)


def test_training_set_needs_every_join_key(crafted: Any) -> None:
    with pytest.raises(FeatureStoreError, match="lacks columns") as info:
        feature_store.training_set(crafted, entity_rows([("a", "pub", T0)]).drop(columns="country"), "bid_filter")
    assert "country" in str(info.value)


def test_missing_offline_data_is_a_clear_error(applied: Any) -> None:
    with pytest.raises(FeatureStoreError, match="offline feature source") as info:
        feature_store.training_set(applied, entity_rows([("a", "pub", T0)]), "bid_filter")
    assert "bidflow features build" in str(info.value)
    with pytest.raises(FeatureStoreError, match="offline feature source"):
        feature_store.materialize(applied, T0 - HOUR, T0)


def test_unknown_service_is_a_clear_error(applied: Any) -> None:
    with pytest.raises(FeatureStoreError, match="not in the registry"):
        service_spec(applied, "no_such_model")


# --- configuration -------------------------------------------------------------------------------


def test_missing_repo_is_a_clear_error(tmp_path: Path) -> None:
    cfg = FeaturesConfig(repo=tmp_path / "nowhere")
    with pytest.raises(FeatureStoreError, match="feature repository not found"):
        feature_store.open_store(cfg)


def test_production_config_names_unset_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIDFLOW_FEAST_REGISTRY_URL", raising=False)
    monkeypatch.delenv("BIDFLOW_FEAST_REDIS", raising=False)
    cfg = features_config(tmp_path, environment="production")
    with pytest.raises(FeatureStoreError, match="unset environment variables") as info:
        feature_store.repo_config(cfg)
    assert "BIDFLOW_FEAST_REDIS" in str(info.value) and "BIDFLOW_FEAST_REGISTRY_URL" in str(info.value)


def test_production_config_is_redis_and_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIDFLOW_FEAST_REGISTRY_URL", "postgresql+psycopg://feast:secret@db:5432/feast")
    monkeypatch.setenv("BIDFLOW_FEAST_REDIS", "redis:6379,db=2,password=secret")
    config = feature_store.repo_config(features_config(tmp_path, environment="production", project="prod_check"))
    assert config.project == "prod_check"
    assert config.online_store.type == "redis"
    assert config.registry.registry_type == "sql"
    assert config.offline_store.type in {"file", "dask"}
    assert "secret" not in feature_store.redact(config.online_store.connection_string)
    assert "secret" not in feature_store.redact(config.registry.path)


def test_local_state_moves_registry_and_sqlite(tmp_path: Path) -> None:
    config = feature_store.repo_config(features_config(tmp_path))
    assert config.registry.path == str(tmp_path / "state" / "registry.db")
    assert config.online_store.path == str(tmp_path / "state" / "online_store.db")
    replaced = feature_store.repo_config(
        features_config(tmp_path), {"online_store": {"type": "redis", "connection_string": "127.0.0.1:1"}}
    )
    assert replaced.online_store.type == "redis"


def test_definitions_follow_the_offline_base_and_leave_no_trace(tmp_path: Path) -> None:
    before_env = os.environ.get(feature_store.OFFLINE_URI_ENV)
    objects = feature_store.load_definitions(FEATURE_REPO, "s3://bucket/features")
    paths = {o.name: o.path for o in objects if type(o).__name__ == "FileSource"}
    assert paths["partner_stats_source"] == "s3://bucket/features/partner_stats.parquet"
    assert not any(name in sys.modules for name in feature_store.DEFINITION_MODULES)
    assert os.environ.get(feature_store.OFFLINE_URI_ENV) == before_env
    # without bidflow, `feast apply` in the repo gets paths relative to feature_store.yaml
    sys.path.insert(0, str(FEATURE_REPO))
    try:
        import sources  # type: ignore[import-not-found]

        assert sources.OFFLINE_URI_ENV == feature_store.OFFLINE_URI_ENV
        os.environ.pop(sources.OFFLINE_URI_ENV, None)
        assert sources.offline_uri("x") == "data/offline/x.parquet"
    finally:
        sys.path.remove(str(FEATURE_REPO))
        sys.modules.pop("sources", None)
        if before_env is not None:
            os.environ[feature_store.OFFLINE_URI_ENV] = before_env


def test_apply_registers_every_service_and_removes_stale_objects(cfg: FeaturesConfig) -> None:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, String

    store = feature_store.open_store(cfg)
    summary = feature_store.apply(store, cfg)
    assert summary.feature_services == ["bid_filter", "ctr", "fraud"]
    assert "partner_stats" in summary.feature_views
    stray = Entity(name="stray", join_keys=["stray"], value_type=ValueType.STRING)
    store.apply(
        [
            stray,
            FeatureView(
                name="stray_view",
                entities=[stray],
                schema=[Field(name="stray", dtype=String), Field(name="x", dtype=Float64)],
                source=FileSource(path=str(cfg.offline / "stray.parquet"), timestamp_field="event_timestamp"),
            ),
        ]
    )
    again = feature_store.apply(store, cfg)
    assert again.deleted == ["Entity stray", "FeatureView stray_view"]
    assert "stray_view" not in {v.name for v in store.list_feature_views()}


def test_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    cfg = features_config(tmp_path)
    store = feature_store.open_store(
        cfg, {"online_store": {"type": "redis", "connection_string": "127.0.0.1:1,password=hunter2"}}
    )
    with pytest.raises(FeatureStoreError, match="Redis online store is unreachable") as info:
        feature_store.check_online_store(store, timeout_s=0.5)
    assert "hunter2" not in str(info.value) and "127.0.0.1:1" in str(info.value)


def test_empty_entity_frame_gives_an_empty_training_set(crafted: Any) -> None:
    empty = entity_rows([]).reindex(columns=[*KEYS, "partner", "event_timestamp"])
    frame = feature_store.training_set(crafted, empty, "bid_filter")
    assert frame.empty and "partner_stats__calls_1h" in frame.columns


def test_lookups_grouped_by_hour_give_the_exact_times_answer(crafted: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Times inside an hour share one Feast lookup; the answer must equal asking at every exact time."""
    rng = np.random.default_rng(3)
    offsets = rng.integers(-3_600, 6 * 3_600, size=300)
    offsets[:24] = np.arange(-1, 23) * 900  # on the hour, and quarter hours around it
    stamps = [T0 + timedelta(seconds=int(s)) for s in offsets]
    partners = rng.choice(["a", "b"], size=len(stamps))
    entities = entity_rows([(str(p), "pub", ts) for p, ts in zip(partners, stamps, strict=True)])
    grouped = feature_store.build_training_set(crafted, entities, "bid_filter")
    assert (
        feature_store._lookup_times(
            crafted, service_spec(crafted, "bid_filter").views[0], grouped.frame["event_timestamp"]
        ).nunique()
        < 20
    )
    monkeypatch.setattr(feature_store, "_source_on_hours", lambda store, view: False)
    exact = feature_store.build_training_set(crafted, entities, "bid_filter")
    pd.testing.assert_frame_equal(grouped.frame, exact.frame)
    assert grouped.defaulted == exact.defaulted
    assert grouped.rows_with_defaults == exact.rows_with_defaults
