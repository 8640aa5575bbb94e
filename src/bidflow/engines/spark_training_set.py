"""Point-in-time training sets on Spark, equal to ``bidflow.features.store.build_training_set``.

What a FeatureService serves (views, join keys, features, defaults, ttl) and where each view's rows
are come from the Feast registry through ``bidflow.features.spec`` and ``bidflow.features.store``;
the join itself runs here, on the views' offline parquet, with the rule Feast's offline stores
apply and the pandas path keeps:

* an entity row at ``t`` gets the latest feature row of its keys stamped at or before ``t`` and
  not older than the view's ttl (``bidflow.features.spec.too_old``);
* with no such row, or a null/NaN feature, it gets the view's default (what the online reader
  serves); no entity row is ever dropped or duplicated.

As in the pandas path, an entity time strictly inside an hour is looked up at the hour plus one
second when every row of the view is stamped on the hour and its ttl is whole hours (the answer
cannot change, see ``bidflow.features.store._lookup_times``): the join then runs on the distinct
(keys, hour) lookups, a few thousand per view instead of one per call, and is joined back on those
keys. The as-of join is a union of lookups and feature rows, ordered per key by time with feature
rows first at equal times, carrying the latest feature row forward: one sort, no range join.

Row order is not kept (a distributed frame has none to keep); every entity row is there once.
``tests/integration/spark`` compares the rows with the Feast training set of the same entities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bidflow.errors import FeatureStoreError

if TYPE_CHECKING:
    from feast import FeatureStore
    from pyspark.sql import Column, DataFrame, SparkSession

    from bidflow.features.spec import ServiceSpec, ViewSpec

TIMESTAMP: Final = "event_timestamp"
_AT: Final = "__at"
_SIDE: Final = "__side"
_HIT: Final = "__hit"
_FEATURE_TIME: Final = "__feature_time"
SECONDS_PER_HOUR: Final = 3600


@dataclass(frozen=True)
class ViewSource:
    """One view of a service and the offline rows it reads."""

    view: ViewSpec
    uri: str
    timestamp_field: str


def view_sources(store: FeatureStore, spec: ServiceSpec) -> list[ViewSource]:
    """The offline source of every view of ``spec``, from the store's registry.

    Raises:
        FeatureStoreError: a view's source is not a parquet file source, or is not built yet.
    """
    from bidflow.features.store import check_offline_sources, offline_source

    check_offline_sources(store, [v.view for v in spec.views])
    return [ViewSource(view, *offline_source(store, view.view)) for view in spec.views]


def entity_rows(rows: DataFrame, spec: ServiceSpec, time_column: str = "ts") -> DataFrame:
    """Rows (ingested calls, or any rows holding the service's join keys) as entity rows.

    ``time_column`` becomes ``event_timestamp`` and each join key takes its registered type, as
    ``bidflow.features.store.bid_filter_entities`` and ``_entity_frame`` do for pandas.

    Raises:
        FeatureStoreError: a join key or the time column is missing, or a join key is null.
    """
    from pyspark.sql import functions as F

    frame = rows.withColumnRenamed(time_column, TIMESTAMP) if time_column != TIMESTAMP else rows
    needed = [*spec.join_keys, TIMESTAMP]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise FeatureStoreError(
            f"entity rows lack columns the '{spec.name}' service needs",
            expected=", ".join(needed),
            got=f"missing {absent}",
        )
    clashes = [c for c in spec.columns if c in frame.columns]
    if clashes:
        raise FeatureStoreError("entity rows already have feature columns", got=", ".join(clashes[:5]))
    types = {k: t for view in spec.views for k, t in zip(view.join_keys, view.key_types, strict=True)}
    for key, kind in types.items():
        frame = frame.withColumn(key, F.col(key).cast("long" if kind == "Int64" else "string"))
    nulls = frame.where(F.greatest(*(F.col(k).isNull() for k in types))).limit(1).count()
    if nulls:
        missing = [k for k in types if frame.where(F.col(k).isNull()).limit(1).count()]
        raise FeatureStoreError(f"entity rows have missing values in join key '{missing[0]}'")
    return frame.withColumn(TIMESTAMP, F.col(TIMESTAMP).cast("timestamp"))


def training_set(entities: DataFrame, spec: ServiceSpec, sources: Sequence[ViewSource]) -> DataFrame:
    """``entities`` (``entity_rows``) with the point-in-time features of every view of ``spec`` appended.

    Columns: the entity columns, then ``spec.columns`` in order, all float64 (as the pandas path).
    Every view's lookups are taken from the entity rows themselves, not from the previous view's
    join: chained, each join would recompute all the joins before it.
    """
    from pyspark.sql import functions as F

    spark = entities.sparkSession
    times = [f"{_AT}{i}" for i in range(len(sources))]
    stamps = F.col(TIMESTAMP)
    base = entities.select("*", *(_lookup_time(spark, s, stamps).alias(t) for s, t in zip(sources, times, strict=True)))
    out = base
    for source, at in zip(sources, times, strict=True):
        keys = [*source.view.join_keys, at]
        out = out.join(_answers(spark, base.select(*keys).distinct(), source, at), keys, "left")
    return out.select(*entities.columns, *spec.columns)


def _view_rows(spark: SparkSession, source: ViewSource) -> DataFrame:
    """The view's offline rows: its typed keys, its time as ``_AT`` and its features as doubles."""
    from pyspark.sql import functions as F

    view = source.view
    rows = spark.read.parquet(source.uri)
    absent = [c for c in [*view.join_keys, source.timestamp_field, *view.features] if c not in rows.columns]
    if absent:
        raise FeatureStoreError(
            f"offline rows of view '{view.view}' lack columns its definition names",
            where=source.uri,
            got=f"missing {absent}",
            hint="rebuild the features (`bidflow features build`) for this feature repository",
        )
    types = dict(zip(view.join_keys, view.key_types, strict=True))
    return rows.select(
        *(F.col(k).cast("long" if types[k] == "Int64" else "string").alias(k) for k in view.join_keys),
        F.col(source.timestamp_field).cast("timestamp").alias(_AT),
        *(F.col(f).cast("double").alias(f) for f in view.features),
    )


def _answers(spark: SparkSession, lookups: DataFrame, source: ViewSource, at: str) -> DataFrame:
    """One row per distinct (keys, ``at``) lookup with the view's feature columns, defaults filled."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    view = source.view
    keys = list(view.join_keys)
    rows = _view_rows(spark, source)
    hit = F.struct(F.col(_AT).alias(_FEATURE_TIME), *(F.col(f) for f in view.features))
    feature_side = rows.select(*keys, _AT, F.lit(0).alias(_SIDE), hit.alias(_HIT))
    hit_type = feature_side.schema[_HIT].dataType
    lookup_side = lookups.select(
        *keys, F.col(at).alias(_AT), F.lit(1).alias(_SIDE), F.lit(None).cast(hit_type).alias(_HIT)
    )
    # Feature rows sort before lookups at the same time: a row stamped t is visible at t.
    order = Window.partitionBy(*keys).orderBy(_AT, _SIDE).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    answered = (
        lookup_side.unionByName(feature_side)
        .withColumn(_HIT, F.last(_HIT, ignorenulls=True).over(order))
        .where(F.col(_SIDE) == 1)
    )
    live = F.col(_HIT).isNotNull()
    if view.ttl_seconds is not None:
        oldest = F.col(_AT) - F.make_dt_interval(secs=F.lit(view.ttl_seconds))
        live = live & (F.col(f"{_HIT}.{_FEATURE_TIME}") >= oldest)
    values = [
        F.when(live, _defaulted(F.col(f"{_HIT}.{feature}"), default)).otherwise(F.lit(default)).alias(column)
        for feature, default, column in zip(view.features, view.defaults, view.columns, strict=True)
    ]
    return answered.select(*keys, F.col(_AT).alias(at), *values)


def _defaulted(value: Column, default: float) -> Column:
    """``value``, or ``default`` where it is null or NaN (the pandas path fills every NaN it gets)."""
    from pyspark.sql import functions as F

    return F.coalesce(F.nanvl(value, F.lit(None).cast("double")), F.lit(default).cast("double"))


def _lookup_time(spark: SparkSession, source: ViewSource, times: Column) -> Column:
    """``times``, or where every row of the view is on the hour and its ttl whole hours, hour + 1 s inside an hour."""
    from pyspark.sql import functions as F

    ttl = source.view.ttl_seconds
    rows = _view_rows(spark, source)
    off_hour = rows.where(F.unix_micros(F.col(_AT)) % F.lit(SECONDS_PER_HOUR * 1_000_000) != 0).limit(1).count()
    if (ttl is not None and ttl % SECONDS_PER_HOUR) or off_hour:
        return times
    floor = F.date_trunc("hour", times)
    return F.when(times == floor, times).otherwise(floor + F.make_dt_interval(secs=F.lit(1)))
