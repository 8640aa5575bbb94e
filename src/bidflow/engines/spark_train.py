"""Training with ``xgboost.spark.SparkXGBClassifier``: the same ``TrainedModel`` bundle as ``bidflow.modeling.train``.

The rows stay in Spark; what defines the model is the pandas path's own code, run where the rows are:

* the time split is ``fit``'s (the latest ``validation_hours`` clock hours validate; early stopping
  watches them through ``validation_indicator_col``);
* category vocabularies come from value counts taken in Spark and turned into vocabularies by
  ``CategoryEncoder.from_counts`` (``CategoryEncoder.fit``'s rule);
* each partition is encoded by ``feature_matrix`` and ``labels`` (``mapInPandas``), so the booster
  reads exactly the matrix the pandas trainer and the model server build;
* the booster is cut to its best iteration and named after the spec's columns, so servers, MLflow
  and ``bidflow.serving`` load it like any other;
* metrics are ``classification_metrics`` of the cut booster's scores (computed per partition, then
  the label and score columns are gathered: 16 bytes a row);
* the validation hours are gathered to the driver: the filter policy is chosen on them by
  ``train.with_policy`` and the run's figures are drawn from them. They bound the driver's memory
  (``validation_hours`` of rows), not the training data.

Not on Spark: ``category_order: rate`` (its out-of-fold codes) and ``refit``; both raise ``EngineError``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bidflow.errors import EngineError, ModelError
from bidflow.modeling.dataset import CategoryEncoder, FeatureSpec, feature_matrix, labels, too_few_hours
from bidflow.modeling.train import TrainedModel, trained_model, with_policy, with_scores, xgb_params

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas as pd
    from pyspark.sql import DataFrame

    from bidflow.config import EvaluateSettings, TrainSettings

FEATURES: Final = "__features"
LABEL: Final = "__label"
IS_VALID: Final = "__is_valid"
SCORE: Final = "__score"


@dataclass(frozen=True)
class SparkFit:
    """A model trained on Spark and its validation rows, gathered to the driver as pandas."""

    model: TrainedModel
    validation: pd.DataFrame


def check_settings(cfg: TrainSettings, refit: bool, category_order: str) -> None:
    """Raise ``EngineError`` for settings the Spark trainer does not implement."""
    if refit or category_order != "frequency":
        raise EngineError(
            "train.engine: spark trains with frequency-ordered categories and without refit",
            where="train.engine",
            got=f"refit={refit}, category_order={category_order}",
            hint="set refit: false and category_order: frequency for this kind, or engine: pandas",
        )


def fit(
    rows: DataFrame,
    spec: FeatureSpec,
    cfg: TrainSettings,
    *,
    time_column: str = "ts",
    policy: EvaluateSettings | None = None,
    partner_column: str = "partner",
    refit: bool = False,
    category_order: str = "frequency",
    num_workers: int | None = None,
) -> SparkFit:
    """``bidflow.modeling.train.fit`` on a Spark frame: time split, early stopping, metrics, thresholds.

    Args:
        rows: all training rows, with the spec's columns, its label and ``time_column``.
        spec: the feature specification.
        cfg: the kind's ``train`` settings.
        time_column: the rows' UTC timestamps.
        policy: for a bid filter, the ``evaluate`` settings its thresholds are chosen with.
        partner_column: the column the thresholds are per value of.
        refit, category_order: as ``train.fit``; only the defaults run on Spark.
        num_workers: xgboost workers (Spark tasks); default the session's default parallelism.

    Raises:
        EngineError: a setting the Spark trainer does not implement.
        ModelError: the data covers too few hours, or a split lacks one of the labels.
    """
    from pyspark.sql import functions as F
    from xgboost.spark import SparkXGBClassifier

    check_settings(cfg, refit, category_order)
    missing = [c for c in (*spec.names, spec.label, time_column) if c not in rows.columns]
    if missing:
        raise ModelError(f"training data lacks {len(missing)} column(s) the model needs", got=", ".join(missing[:12]))
    started = time.perf_counter()
    valid_from = latest_hours_start(rows, time_column, cfg.validation_hours)
    hour = F.date_trunc("hour", F.col(time_column).cast("timestamp"))
    rows = rows.withColumn(IS_VALID, hour >= F.lit(valid_from))
    _check_labels(rows, spec)
    encoder = _encoder(rows.where(~F.col(IS_VALID)), spec, cfg.min_category_count)
    encoded = _encoded(rows, spec, encoder).cache()

    params = xgb_params(cfg)
    workers = num_workers or max(1, min(rows.sparkSession.sparkContext.defaultParallelism, 8))
    estimator = SparkXGBClassifier(
        features_col=FEATURES,
        label_col=LABEL,
        validation_indicator_col=IS_VALID,
        num_workers=workers,
        n_estimators=cfg.n_estimators,
        early_stopping_rounds=cfg.early_stopping_rounds,
        eval_metric=params["eval_metric"],
        tree_method="hist",
        max_depth=cfg.max_depth,
        learning_rate=cfg.learning_rate,
        min_child_weight=cfg.min_child_weight,
        subsample=cfg.subsample,
        colsample_bytree=cfg.colsample_bytree,
        reg_lambda=cfg.reg_lambda,
        max_bin=cfg.max_bin,
        random_state=cfg.seed,
        missing=float("nan"),
    )
    try:
        booster = estimator.fit(encoded).get_booster()
    except Exception as exc:  # xgboost.spark surfaces worker failures as Py4J/Spark errors
        raise ModelError("xgboost.spark training failed", got=f"{type(exc).__name__}: {exc}"[:400]) from exc
    stopped_at = booster.attr("best_iteration")  # unset when early stopping never triggered
    best = int(stopped_at) + 1 if stopped_at is not None else booster.num_boosted_rounds()
    booster = booster[:best]  # keep only the validated trees, as the pandas trainer does
    booster.feature_names = list(spec.names)
    seconds = time.perf_counter() - started

    model = trained_model(booster, spec, encoder, cfg, best, engine="spark", spark_workers=workers)
    scored = _scores(encoded, model)
    encoded.unpersist()
    train_part, valid_part = scored[~scored[IS_VALID]], scored[scored[IS_VALID]]
    model = with_scores(model, (train_part[LABEL], train_part[SCORE]), (valid_part[LABEL], valid_part[SCORE]), seconds)
    model = replace(model, info=model.info | {"validation_from": valid_from.isoformat()})
    validation = rows.where(F.col(IS_VALID)).drop(IS_VALID).toPandas()
    if policy is not None:
        model = with_policy(model, validation, policy, partner_column)
    return SparkFit(model, validation)


def latest_hours_start(rows: DataFrame, time_column: str, hours: int) -> Any:
    """First of the latest ``hours`` distinct clock hours of the rows (``bidflow.modeling.dataset.latest_hours``' rule).

    Raises:
        ModelError: the rows cover ``hours`` hours or fewer.
    """
    from datetime import UTC, datetime

    from pyspark.sql import functions as F

    # Epoch seconds, not timestamps: Spark hands timestamps to Python in the process's local zone.
    hour = F.unix_seconds(F.date_trunc("hour", F.col(time_column).cast("timestamp")))
    distinct = sorted(r[0] for r in rows.select(hour.alias("h")).distinct().collect())
    if len(distinct) <= hours:
        raise too_few_hours(len(distinct), hours)
    return datetime.fromtimestamp(distinct[-hours], UTC)


def _check_labels(rows: DataFrame, spec: FeatureSpec) -> None:
    from pyspark.sql import functions as F

    label = F.col(spec.label).cast("double")
    stats = rows.groupBy(IS_VALID).agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(label).alias("positive"),
        F.sum((~label.isin(0.0, 1.0) | label.isNull()).cast("long")).alias("bad"),
    )
    found = {bool(r[IS_VALID]): r for r in stats.collect()}
    if any(r["bad"] for r in found.values()):
        raise ModelError(f"label '{spec.label}' must be 0 or 1 on every row")
    for name, is_valid in (("training", False), ("validation", True)):
        r = found.get(is_valid)
        n, positive = (int(r["n"]), int(r["positive"] or 0)) if r is not None else (0, 0)
        if n == 0 or positive in (0, n):
            raise ModelError(
                f"{name} rows must hold both labels",
                got=f"{n} rows, {positive} positive",
                hint="use a longer time window",
            )


def _encoder(train_rows: DataFrame, spec: FeatureSpec, min_count: int) -> CategoryEncoder:
    """Vocabularies from value counts on the training rows (``CategoryEncoder.from_counts``)."""
    import pandas as pd

    counts = {}
    for column in spec.categorical:
        got = train_rows.where(train_rows[column].isNotNull()).groupBy(column).count().toPandas()
        counts[column] = pd.Series(got["count"].to_numpy(np.int64), index=pd.Index(got[column]))
    return CategoryEncoder.from_counts(counts, min_count)


def _encoded(rows: DataFrame, spec: FeatureSpec, encoder: CategoryEncoder) -> DataFrame:
    """(features array, label, validation flag) per row, encoded by the pandas path's own functions."""
    import pandas as pd

    def encode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            x = feature_matrix(batch, spec, encoder)
            yield pd.DataFrame({FEATURES: list(x), LABEL: labels(batch, spec), IS_VALID: batch[IS_VALID]})

    columns = rows.select(*spec.names, spec.label, IS_VALID)
    return columns.mapInPandas(encode, f"{FEATURES} array<float>, {LABEL} float, {IS_VALID} boolean")


def _scores(encoded: DataFrame, model: TrainedModel) -> pd.DataFrame:
    """Label, validation flag and the cut booster's score of every row, gathered to the driver."""
    import pandas as pd

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            width = len(model.spec.names)
            x = np.stack(list(batch[FEATURES])) if len(batch) else np.empty((0, width), np.float32)
            p = model.predict_matrix(x.astype(np.float32))
            yield pd.DataFrame({LABEL: batch[LABEL], IS_VALID: batch[IS_VALID], SCORE: p})

    schema = f"{LABEL} float, {IS_VALID} boolean, {SCORE} double"
    out: pd.DataFrame = encoded.mapInPandas(score, schema).toPandas()
    return out
