"""The whole registry flow on PostgreSQL: a throwaway database, log, register, aliases, load, drop."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from bidflow.config import RegistryConfig
from bidflow.modeling import registry
from bidflow.modeling.lineage import DataVersion
from bidflow.modeling.train import TrainedModel

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres_registry(postgres_dsn: str, tmp_path: Path) -> Iterator[RegistryConfig]:
    name = f"bidflow_mlflow_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield RegistryConfig(
            tracking_uri=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
            artifact_location=tmp_path / "artifacts",
            experiment="integration",
        )
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def test_log_register_alias_promote_load_on_postgres(
    postgres_registry: RegistryConfig, trained: TrainedModel, split_rows: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    holdout = split_rows[1]
    data = DataVersion("parquet", "f" * 64, "sha256")
    _, first = registry.log_training(postgres_registry, trained, model_name="bid_filter", data=data, example=holdout)
    assert first is not None and first.aliases == (registry.CANDIDATE,)
    assert registry.champion(postgres_registry, "bid_filter") is None
    assert registry.promote(postgres_registry, "bid_filter").champion.version == "1"

    _, second = registry.log_training(postgres_registry, trained, model_name="bid_filter", data=data, example=holdout)
    assert second is not None and second.version == "2"
    promotion = registry.promote(postgres_registry, "bid_filter")
    assert promotion.champion.version == "2"
    assert promotion.previous is not None and promotion.previous.version == "1"
    assert registry.resolve(postgres_registry, "bid_filter", "1").aliases == ()

    ref, loaded = registry.load(postgres_registry, "bid_filter", registry.CHAMPION)
    assert ref.version == "2"
    assert np.array_equal(loaded.predict(holdout), trained.predict(holdout))


def test_missing_database_is_a_registry_error(postgres_dsn: str) -> None:
    from bidflow.errors import RegistryError

    cfg = RegistryConfig(tracking_uri=f"postgresql+psycopg://postgres@127.0.0.1:5432/missing_{uuid.uuid4().hex[:8]}")
    with pytest.raises(RegistryError, match="tracking database is unreachable"):
        registry.champion(cfg, "bid_filter")
