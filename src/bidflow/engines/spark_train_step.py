"""``bidflow train`` with ``train.engine: spark``: the kind's rows are read, joined and trained in Spark.

The step keeps ``bidflow.modeling.steps.train_step``'s contract (the latest ``holdout_hours`` left out
when no ``until`` is given, the same split, MLflow run, registration and bundle), but no training row
passes through pandas on the driver:

* a kind trained on ingested auction logs is read by Spark (``spark_features.read_calls``); another
  kind's rows come from its own loader, which reads its file in pandas, and cross to Spark once;
* the Feast service's point-in-time features are joined in Spark (``spark_training_set``), or read
  from a training set the ``training-set`` step wrote (``training_set=``);
* ``spark_train.fit`` trains with ``xgboost.spark``; only the validation hours come back to the
  driver (for the filter policy and the run's figures).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bidflow.errors import InputError
from bidflow.kinds import kind as kind_of

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from bidflow.config import Config
    from bidflow.modeling.dataset import FeatureSpec
    from bidflow.modeling.inputs import FeatureSource
    from bidflow.modeling.steps import TrainOutcome


def train_step(
    config: Config,
    kind: str,
    *,
    source: str | Path | None = None,
    training_set: str | Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    feature_source: FeatureSource | None = None,
    register: bool = True,
    out_dir: Path | None = None,
) -> TrainOutcome:
    """Train ``kind`` with ``xgboost.spark``, log the run to MLflow and register it as ``candidate``.

    Args:
        config: the configuration (``spark:`` configures the session).
        kind: a registered model kind (``bidflow kinds``).
        source: the kind's data, a folder or (for rows Spark reads) a URI (default: its ``default_source``);
            the run records its version.
        training_set: a parquet folder or URI the ``training-set`` step wrote for this kind: its
            rows are trained on as they are (the hold-out, ``since`` and ``until`` still apply).
        since: first UTC time to train on.
        until: end (exclusive) of the training window.
        feature_source: ``feast`` or ``request`` (default ``train.feature_source``).
        register: create a registered version and point ``candidate`` at it.
        out_dir: also save the model bundle there.

    Raises:
        EngineError: a setting the Spark trainer does not implement, or Spark does not start.
        ModelError: too few hours, or a split lacks a label.
        InputError: the training set is not there.
    """
    from bidflow.engines import spark_train
    from bidflow.engines.spark import spark_session
    from bidflow.modeling import steps
    from bidflow.modeling.inputs import TIME

    chosen = kind_of(config, kind)
    chosen.require_tabular("train")
    settings = config.train.for_kind(kind)
    spark_train.check_settings(settings, settings.refit, settings.category_order)  # before paying for the session
    path: str | Path = source if source is not None else chosen.default_source(config)
    spark = spark_session(config.spark)
    holdout = None if until is not None else config.evaluate.for_kind(kind).holdout_hours
    if training_set is not None:
        rows, spec = _written_rows(spark, config, kind, str(training_set), since, until, holdout)
    else:
        rows, spec = _joined_rows(spark, config, kind, path, since, until, holdout, feature_source)
    fitted = spark_train.fit(
        rows,
        spec,
        settings,
        time_column=TIME,
        policy=config.evaluate.for_kind(kind) if chosen.thresholded else None,
        partner_column=chosen.partner_column or "partner",
    )
    model = fitted.model
    used = int(model.info["train_rows"]) + int(model.info["valid_rows"])
    data = path if training_set is None or source is not None else training_set
    return steps.record_training(
        config, kind, model, fitted.validation, data=data, rows=used, register=register, out_dir=out_dir
    )


def _joined_rows(
    spark: SparkSession,
    config: Config,
    kind: str,
    path: str | Path,
    since: datetime | None,
    until: datetime | None,
    holdout: int | None,
    feature_source: FeatureSource | None,
) -> tuple[DataFrame, FeatureSpec]:
    """The kind's rows without the hold-out, with its service's point-in-time features joined in Spark."""
    from bidflow.engines import spark_features, spark_training_set
    from bidflow.engines.spark_pandas import to_spark
    from bidflow.features.spec import service_spec
    from bidflow.features.store import open_store
    from bidflow.modeling import inputs

    chosen = kind_of(config, kind)
    if chosen.pipeline_source == "raw_logs":
        rows = spark_features.read_calls(spark, path, since, until)
        if holdout is not None:
            rows = _without_latest(rows, inputs.TIME, holdout)
    else:  # the kind's loader parses its own file format; its rows cross to Spark once
        frame = inputs.load_rows(config, kind, source=Path(path), since=since, until=until)
        if holdout is not None:
            frame, _ = inputs.split_holdout(frame, holdout)
        rows = to_spark(spark, frame)
    if (feature_source or config.train.for_kind(kind).feature_source) == "request":
        return rows, chosen.spec((), None)
    service = inputs.feature_service(config, kind)
    store = open_store(config.features)
    spec = service_spec(store, service)
    entities = spark_training_set.entity_rows(rows, spec, time_column=inputs.TIME)
    joined = spark_training_set.training_set(entities, spec, spark_training_set.view_sources(store, spec))
    return joined.withColumnRenamed(spark_training_set.TIMESTAMP, inputs.TIME), chosen.spec(spec.columns, service)


def _written_rows(
    spark: SparkSession,
    config: Config,
    kind: str,
    uri: str,
    since: datetime | None,
    until: datetime | None,
    holdout: int | None,
) -> tuple[DataFrame, FeatureSpec]:
    """A training set the ``training-set`` step wrote, in the window and without the hold-out."""
    from pyspark.sql import functions as F

    from bidflow.engines.spark_training_set import TIMESTAMP
    from bidflow.features.spec import service_spec
    from bidflow.features.store import open_store
    from bidflow.modeling import inputs

    if "://" not in uri and not Path(uri).exists():
        raise InputError(
            "training set not found",
            where=uri,
            hint="write it first: python -m bidflow.engines.spark_jobs training-set",
        )
    service = inputs.feature_service(config, kind)
    columns = service_spec(open_store(config.features), service).columns
    rows = spark.read.parquet(uri).withColumnRenamed(TIMESTAMP, inputs.TIME)
    if since is not None:
        rows = rows.where(F.col(inputs.TIME) >= F.lit(since))
    if until is not None:
        rows = rows.where(F.col(inputs.TIME) < F.lit(until))
    if holdout is not None:
        rows = _without_latest(rows, inputs.TIME, holdout)
    return rows, kind_of(config, kind).spec(columns, service)


def _without_latest(rows: DataFrame, time_column: str, hours: int) -> DataFrame:
    """``rows`` before their latest ``hours`` distinct clock hours (``inputs.split_holdout``'s training part)."""
    from pyspark.sql import functions as F

    from bidflow.engines.spark_train import latest_hours_start

    start = latest_hours_start(rows, time_column, hours)
    return rows.where(F.date_trunc("hour", F.col(time_column).cast("timestamp")) < F.lit(start))
