"""``train.engine: spark``: xgboost.spark trains the same bundle, scoring within noise of the pandas trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bidflow.config import Config
from bidflow.data.batch import read_frame
from bidflow.modeling import inputs, steps, train
from bidflow.modeling.metrics import auc

pytestmark = [pytest.mark.integration, pytest.mark.spark]

# Two boosters on ~40k rows differ by their row sampling and by how xgboost.spark's workers
# sketch histograms; on this data the pandas model's hold-out AUC is ~0.80, and a difference of
# a hundredth is what reseeding the pandas trainer alone gives.
AUC_NOISE = 0.015


def _with_engine(config: Config, engine: str) -> Config:
    data = config.model_dump(by_alias=True)
    data["train"]["engine"] = engine
    return Config.model_validate(data)


def test_spark_trained_model_scores_the_held_out_hour_like_the_pandas_one(
    spark_built: Config, bid_parquet: Path, tmp_path: Path
) -> None:
    rows = read_frame(bid_parquet)
    _, held_out = inputs.split_holdout(rows, spark_built.evaluate.holdout_hours)
    held_out, _ = inputs.with_features(held_out, spark_built, "bid_filter", "feast")

    pandas_run = steps.train_step(_with_engine(spark_built, "pandas"), "bid_filter", register=False)
    spark_run = steps.train_step(
        _with_engine(spark_built, "spark"), "bid_filter", register=False, out_dir=tmp_path / "model"
    )
    by_pandas, by_spark = pandas_run.model, spark_run.model
    assert by_spark.info["engine"] == "spark" and "engine" not in by_pandas.info
    # The same rows, vocabularies and columns went in; the same split was validated on.
    assert spark_run.rows == pandas_run.rows
    assert by_spark.spec == by_pandas.spec
    assert by_spark.encoder.vocabularies == by_pandas.encoder.vocabularies
    assert by_spark.info["validation_from"] == by_pandas.info["validation_from"]
    assert by_spark.booster.num_boosted_rounds() == by_spark.best_iteration
    assert by_spark.policy is not None and set(by_spark.policy.thresholds) == set(by_pandas.policy.thresholds)

    y = held_out["bid"].to_numpy(np.float64)
    pandas_auc, spark_auc = auc(y, by_pandas.predict(held_out)), auc(y, by_spark.predict(held_out))
    assert pandas_auc > 0.7
    assert abs(spark_auc - pandas_auc) <= AUC_NOISE, (spark_auc, pandas_auc)

    # The bundle the servers load: the saved model scores exactly as the trained one.
    loaded = train.load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(held_out), by_spark.predict(held_out))
    assert loaded.booster.feature_names == list(by_spark.spec.names)


def test_settings_the_spark_trainer_lacks_are_refused_before_training(spark_built: Config) -> None:
    from bidflow.errors import EngineError

    data = spark_built.model_dump(by_alias=True)
    data["train"] |= {"engine": "spark", "refit": True}
    with pytest.raises(EngineError, match="without refit"):
        steps.train_step(Config.model_validate(data), "bid_filter", register=False)
