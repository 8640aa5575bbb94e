"""Where a step holds a pandas frame (a CLI window, a pipeline task's rows) and its engine is Spark.

The steps that start from rows already in memory (evaluation's feature join, a kind whose loader
reads its own file format) hand them to Spark here and get pandas back with the same rows, order,
dtypes and UTC timestamps, so the code around them does not know which engine ran. Training on
Spark does not come through here: its rows stay in Spark (``bidflow.engines.spark_train_step``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bidflow.errors import FeatureStoreError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from bidflow.config import FeaturesConfig, SparkConfig

ROW: Final = "__row"


def to_spark(spark: SparkSession, frame: pd.DataFrame) -> DataFrame:
    """``frame`` as a Spark frame (through Arrow); timestamps become Spark's UTC instants."""
    return spark.createDataFrame(frame.reset_index(drop=True))


def to_pandas(frame: DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """``frame`` gathered to pandas, its timestamps back in the time zones ``like``'s columns had.

    Spark hands timestamps over as naive wall-clock times of the session zone (UTC, see
    ``bidflow.engines.spark``); columns that were zone-aware in ``like`` are made so again.
    """
    import pandas as pd

    out: pd.DataFrame = frame.toPandas()
    for column in out.columns:
        if column in like.columns and isinstance(like[column].dtype, pd.DatetimeTZDtype):
            zone = like[column].dt.tz
            stamps = pd.to_datetime(out[column]).dt.tz_localize("UTC").dt.tz_convert(zone)
            out[column] = stamps.astype(like[column].dtype)
    return out


def training_set(
    features: FeaturesConfig, spark_cfg: SparkConfig, entities: pd.DataFrame, service: str
) -> pd.DataFrame:
    """``bidflow.features.store.training_set`` computed on Spark: same rows, same order, same columns.

    Only the join keys and times cross to Spark (with a row number); the feature columns come back
    by row number and are appended to the entity frame, typed as the pandas path types it.
    """
    import numpy as np
    import pandas as pd

    from bidflow.engines import spark_training_set as pit
    from bidflow.engines.spark import spark_session
    from bidflow.features.spec import service_spec
    from bidflow.features.store import open_store

    store = open_store(features)
    spec = service_spec(store, service)
    spark = spark_session(spark_cfg)
    absent = [c for c in [*spec.join_keys, pit.TIMESTAMP] if c not in entities.columns]
    clashes = [c for c in spec.columns if c in entities.columns]
    if absent or clashes:
        raise FeatureStoreError(
            f"entity frame does not fit the '{spec.name}' service",
            expected=f"columns {', '.join([*spec.join_keys, pit.TIMESTAMP])} and no feature columns",
            got=f"missing {absent}" if absent else f"feature columns {clashes[:5]}",
        )
    frame = entities.reset_index(drop=True).copy()
    # As bidflow.features.store._entity_frame hands it back: UTC nanoseconds, keys of the registered types.
    frame[pit.TIMESTAMP] = pd.to_datetime(frame[pit.TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    for key, kind in ((k, t) for view in spec.views for k, t in zip(view.join_keys, view.key_types, strict=True)):
        frame[key] = frame[key].astype(np.int64) if kind == "Int64" else frame[key].astype(str)
    sent = frame[[*spec.join_keys, pit.TIMESTAMP]].assign(**{ROW: np.arange(len(frame), dtype=np.int64)})
    rows = pit.entity_rows(to_spark(spark, sent), spec, time_column=pit.TIMESTAMP)
    joined = pit.training_set(rows, spec, pit.view_sources(store, spec)).select(ROW, *spec.columns)
    got = joined.toPandas().set_index(ROW).reindex(np.arange(len(frame)))
    return pd.concat([frame, got[list(spec.columns)].astype(np.float64).reset_index(drop=True)], axis=1)
