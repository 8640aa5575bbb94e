"""Point-in-time training sets on Spark equal Feast's ``get_historical_features`` rows (the pandas path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.config import Config
from bidflow.data.batch import read_frame
from bidflow.engines import spark_features, spark_pandas, spark_training_set
from bidflow.features import store as feature_store
from bidflow.features.spec import service_spec

pytestmark = [pytest.mark.integration, pytest.mark.spark]
KEYS = ["auction_id", "partner"]  # one row per auction x partner called


@pytest.fixture(scope="module")
def feast_rows(spark_built: Config, bid_parquet: Path) -> pd.DataFrame:
    store = feature_store.open_store(spark_built.features)
    entities = feature_store.bid_filter_entities(read_frame(bid_parquet))
    frame = feature_store.build_training_set(store, entities, "bid_filter").frame
    return frame


def _same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for column in want.columns:
        if want[column].dtype.kind == "f":
            np.testing.assert_allclose(
                got[column].to_numpy(np.float64), want[column].to_numpy(), rtol=1e-12, atol=0, err_msg=column
            )
        else:
            pd.testing.assert_series_equal(got[column], want[column], obj=column)


def test_spark_training_set_has_feasts_rows(spark_built: Config, bid_parquet: Path, feast_rows: pd.DataFrame) -> None:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    assert spark is not None
    store = feature_store.open_store(spark_built.features)
    spec = service_spec(store, "bid_filter")
    rows = spark_training_set.entity_rows(spark_features.read_calls(spark, bid_parquet), spec)
    frame = spark_training_set.training_set(rows, spec, spark_training_set.view_sources(store, spec))
    got = spark_pandas.to_pandas(frame, feast_rows)
    got["device_type"] = got["device_type"].astype(np.int64)
    want = feast_rows.sort_values(KEYS, kind="stable").reset_index(drop=True)
    got = got.sort_values(KEYS, kind="stable").reset_index(drop=True)[list(want.columns)]
    # Some rows use defaults (a partner's first hour has no earlier row): both engines must agree there too.
    assert (want[list(spec.columns)].isna().sum().sum()) == (got[list(spec.columns)].isna().sum().sum())
    _same_rows(got, want)


def test_engine_spark_in_the_modeling_path_returns_the_same_frame(
    spark_built: Config, bid_parquet: Path, feast_rows: pd.DataFrame
) -> None:
    entities = feature_store.bid_filter_entities(read_frame(bid_parquet))
    got = spark_pandas.training_set(spark_built.features, spark_built.spark, entities, "bid_filter")
    _same_rows(got, feast_rows)  # same order too: the pandas steps around it index by position
