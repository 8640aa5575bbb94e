"""Small data and models for the modeling tests: four generated hours, one quick model, a SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bidflow.config import EvaluateConfig, IngestConfig, RegistryConfig, TrainConfig
from bidflow.data.batch import read_frame
from bidflow.data.ingest import ingest
from bidflow.data.simulate import simulate
from bidflow.kinds import bid_filter
from bidflow.modeling import inputs, train
from bidflow.modeling.train import TrainedModel
from tests.conftest import small_config

# Small and single-threaded: the test machine is shared.
QUICK = TrainConfig(
    n_estimators=60,
    early_stopping_rounds=10,
    max_depth=4,
    learning_rate=0.25,
    nthread=1,
    min_category_count=5,
)


@pytest.fixture(scope="session")
def bid_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four hours of baseline traffic (~1,200 auctions an hour), ingested."""
    raw = tmp_path_factory.mktemp("model-raw")
    simulate(small_config(hours=4, auctions_per_hour=1_200, publishers=60), raw)
    out = tmp_path_factory.mktemp("model-parquet")
    ingest(raw, out, IngestConfig(workers=1))
    return out


@pytest.fixture(scope="session")
def bid_rows(bid_parquet: Path) -> pd.DataFrame:
    return read_frame(bid_parquet)


@pytest.fixture(scope="session")
def split_rows(bid_rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows: hours 1-3, held-out rows: hour 4)."""
    return inputs.split_holdout(bid_rows, 1)


@pytest.fixture(scope="session")
def trained(split_rows: tuple[pd.DataFrame, pd.DataFrame]) -> TrainedModel:
    """A bid filter on request features, with thresholds chosen on its validation hour."""
    return train.fit(split_rows[0], bid_filter.spec(), QUICK, policy=EvaluateConfig())


@pytest.fixture(scope="session")
def registry_cfg(tmp_path_factory: pytest.TempPathFactory) -> RegistryConfig:
    """A throwaway SQLite tracking store (its schema migration takes a few seconds, so once per session)."""
    root = tmp_path_factory.mktemp("mlflow")
    return RegistryConfig(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_location=root / "artifacts", experiment="tests"
    )
