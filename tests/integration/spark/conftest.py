"""A real local Spark session (local[2], loopback only) and the small ingested batch the tests compare on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bidflow.config import Config, SparkConfig
from tests.unit.modeling.conftest import bid_parquet

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["bid_parquet"]

REPO = Path(__file__).resolve().parents[3]

# Small and quiet: two task slots, two shuffle partitions, no UI, bound to loopback only.
SPARK = SparkConfig(
    master="local[2]",
    driver_memory="1g",
    shuffle_partitions=2,
    conf={
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    },
)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    from bidflow.engines.spark import spark_session

    # The JVM otherwise resolves the host name and may pick an outside interface for its services.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = spark_session(SPARK)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def feature_config(root: Path, project: str, **sections: Any) -> Config:
    """A configuration with its own offline folder, Feast registry and MLflow store under ``root``."""
    (root / "feast").mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "paths": {"reports": str(root / "reports")},
        "features": {
            "repo": str(REPO / "feature_repo"),
            "offline": str(root / "features"),
            "state": str(root / "feast"),
            "project": project,
        },
        "train": {"n_estimators": 40, "max_depth": 4, "nthread": 1},
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "artifacts")},
        "spark": SPARK.model_dump(),
    }
    for name, values in sections.items():
        data[name] = data.get(name, {}) | values
    return Config.model_validate(data)


@pytest.fixture(scope="session")
def spark_built(spark: SparkSession, bid_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A feature store whose offline views were built on Spark from ``bid_parquet``, applied."""
    from bidflow.engines import spark_jobs
    from bidflow.features import store as feature_store

    root = tmp_path_factory.mktemp("spark-store")
    config = feature_config(root, "bidflow_spark_test", paths={"parquet": str(bid_parquet)})
    spark_jobs.build_features(config)
    store = feature_store.open_store(config.features)
    feature_store.apply(store, config.features)
    return config
