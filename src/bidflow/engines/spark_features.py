"""The bid filter's aggregated views (``bidflow.features.build.build_bid_features``) on Spark.

The definitions are the pandas builder's, imported from it (windows, priors, pseudo-counts, table
and slice names, the ``[E - w, E)`` window convention and the ``until`` cap); only the evaluation
differs. Where the pandas builder finds window sums by binary search over cumulative sums, Spark
explodes each (entity, active hour ``h``) row into the hour ends ``h + 1 .. h + widest`` it
contributes to and sums per (entity, end), a window ``w`` counting the rows with ``end - h <= w``.
That is one shuffle per table, linear in hourly groups x the widest window (24), and it yields
exactly the pandas builder's rows: an end exists iff the entity had traffic within the widest
window before it. ``tests/integration/spark`` runs both builders on the same rows and compares
every table row for row.

A missing ratio (no trials, no prior) is null here where pandas holds NaN; parquet stores both as
null, so Feast and the training sets read the same value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.errors import InputError
from bidflow.features.build import (
    BID_WINDOWS,
    MS_PER_HOUR,
    PARTNER_SLICES,
    PRIOR_BIDS,
    PRIOR_CALLS,
    TIMESTAMP,
    BuildSummary,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SECONDS_PER_HOUR: Final = MS_PER_HOUR // 1000
# The columns the builder reads from ingested rows (``bidflow.data.ingest.parquet_schema``).
CALL_COLUMNS: Final = (
    "ts",
    "auction_id",
    "partner",
    "publisher_id",
    "country",
    "format",
    "device_type",
    "bidfloor",
    "bid",
    "status",
    "price",
    "latency_ms",
)


def read_calls(
    spark: SparkSession, path: Path | str, since: datetime | None = None, until: datetime | None = None
) -> DataFrame:
    """Ingested rows under ``path`` with ``since <= ts < until`` (what ``bidflow.data.batch.read_batch`` reads).

    Raises:
        InputError: the folder does not exist or holds no rows in the window.
    """
    from pyspark.sql import functions as F

    if "://" not in str(path) and not Path(path).exists():
        raise InputError("parquet batch not found", where=path, hint="run `bidflow ingest` first")
    # The hourly folders (hour=...) are not a partition column: the rows carry ts, as pyarrow reads them.
    # Spark, like pyarrow, skips files starting with '_' or '.' (quarantine, summary, staging).
    frame = spark.read.option("recursiveFileLookup", "true").parquet(str(path))
    if since is not None:
        frame = frame.where(F.col("ts") >= F.lit(since))
    if until is not None:
        frame = frame.where(F.col("ts") < F.lit(until))
    if frame.isEmpty():
        window = f" between {since} and {until}" if since or until else ""
        raise InputError(f"parquet batch has no rows{window}", where=path)
    return frame


def build_bid_features(calls: DataFrame, until: datetime | None = None) -> dict[str, DataFrame]:
    """The bid-filter offline tables from ingested rows, as Spark frames (same names, columns and rows as pandas).

    Args:
        calls: one row per auction x partner called (``read_calls``).
        until: end of the data (exclusive); rows are stamped up to it. Default: the end of the
            last hour with data.

    Raises:
        InputError: ``calls`` is empty.
    """
    from pyspark.sql import functions as F

    hour = (F.unix_millis(F.col("ts")) / F.lit(MS_PER_HOUR)).cast("long")  # floor: ts >= 0
    bid = F.col("bid").cast("long")
    table = calls.select(
        hour.alias("hour"),
        "partner",
        "publisher_id",
        "country",
        "format",
        F.col("device_type").cast("long").alias("device_type"),
        "auction_id",
        "bidfloor",
        F.lit(1).cast("long").alias("n"),
        bid.alias("bid"),
        (F.col("status") == "timeout").cast("long").alias("timeout"),
        (F.col("status") == "error").cast("long").alias("error"),
        F.when(bid == 1, F.coalesce(F.col("price"), F.lit(0.0))).otherwise(F.lit(0.0)).alias("price"),
        F.col("latency_ms").cast("double").alias("latency"),
    ).cache()
    last_hour = table.agg(F.max("hour")).first()
    if last_hour is None or last_hour[0] is None:
        raise InputError("no auction rows to build features from", hint="ingest some traffic first")
    last_end = _last_end(int(last_hour[0]), until)

    partner_sums = {"n": "calls", "bid": "bids", "timeout": "timeouts", "error": "errors", "price": "price"}
    partner_sums |= {"latency": "latency"}
    overall = _window_sums(_hourly(table, [], partner_sums), [], (24,), last_end)
    partners = _window_sums(_hourly(table, ["partner"], partner_sums), ["partner"], BID_WINDOWS, last_end)
    priors = overall.select(
        "end",
        _ratio("bids_24", "calls_24").alias("p_bid"),
        _ratio("price_24", "bids_24").alias("p_price"),
        _ratio("timeouts_24", "calls_24").alias("p_timeout"),
        _ratio("errors_24", "calls_24").alias("p_error"),
        _ratio("latency_24", "calls_24").alias("p_latency"),
    )
    joined = partners.join(priors, "end", "left")
    columns: list[Column] = []
    for w in BID_WINDOWS:
        calls_w = F.col(f"calls_{w}")
        columns += [
            calls_w.cast("long").alias(f"calls_{w}h"),
            _shrink(F.col(f"bids_{w}"), calls_w, F.col("p_bid"), PRIOR_CALLS).alias(f"bid_rate_{w}h"),
            _shrink(F.col(f"price_{w}"), F.col(f"bids_{w}"), F.col("p_price"), PRIOR_BIDS).alias(f"mean_price_{w}h"),
            _shrink(F.col(f"timeouts_{w}"), calls_w, F.col("p_timeout"), PRIOR_CALLS).alias(f"timeout_rate_{w}h"),
            _shrink(F.col(f"errors_{w}"), calls_w, F.col("p_error"), PRIOR_CALLS).alias(f"error_rate_{w}h"),
            _shrink(F.col(f"latency_{w}"), calls_w, F.col("p_latency"), PRIOR_CALLS).alias(f"mean_latency_ms_{w}h"),
        ]
    partner_stats = joined.select("partner", _stamp(), *columns)
    tables = {"partner_stats": partner_stats}
    partner_prior = partner_stats.select(
        "partner",
        F.col(TIMESTAMP),
        F.col("bid_rate_24h").alias("p_bid"),
        F.col("mean_price_24h").alias("p_price"),
    )

    slice_sums = {"n": "calls", "bid": "bids", "price": "price"}
    for name, key in PARTNER_SLICES.items():
        sliced = _window_sums(_hourly(table, ["partner", key], slice_sums), ["partner", key], BID_WINDOWS, last_end)
        # A live slice row always has a live partner row at the same hour end (its calls count there).
        with_prior = sliced.select("*", _stamp()).join(partner_prior, ["partner", TIMESTAMP], "left")
        slice_columns: list[Column] = []
        for w in BID_WINDOWS:
            calls_w = F.col(f"calls_{w}")
            slice_columns += [
                calls_w.cast("long").alias(f"calls_{w}h"),
                _shrink(F.col(f"bids_{w}"), calls_w, F.col("p_bid"), PRIOR_CALLS).alias(f"bid_rate_{w}h"),
                _shrink(F.col(f"price_{w}"), F.col(f"bids_{w}"), F.col("p_price"), PRIOR_BIDS).alias(
                    f"mean_price_{w}h"
                ),
            ]
        tables[name] = with_prior.select("partner", key, TIMESTAMP, *slice_columns)

    tables["publisher_stats"] = _publisher_stats(table, last_end)
    return tables


def _publisher_stats(table: DataFrame, last_end: int) -> DataFrame:
    """Per publisher: auctions, fill and floors; an auction counts once however many partners it called."""
    from pyspark.sql import functions as F

    auctions = table.groupBy("auction_id", "publisher_id", "hour", "bidfloor").agg(F.max("bid").alias("filled"))
    per_auction = auctions.select(
        "hour",
        "publisher_id",
        F.lit(1).cast("long").alias("n"),
        "filled",
        F.col("bidfloor").alias("floor"),
        (F.col("bidfloor") * F.col("bidfloor")).alias("floor_sq"),
        (F.col("bidfloor") > 0.0).cast("long").alias("floored"),
    )
    sums = {"n": "auctions", "filled": "filled", "floor": "floor", "floor_sq": "floor_sq", "floored": "floored"}
    overall = _window_sums(_hourly(per_auction, [], sums), [], (24,), last_end)
    prior = overall.select("end", _ratio("filled_24", "auctions_24").alias("p_fill"))
    publishers = _window_sums(_hourly(per_auction, ["publisher_id"], sums), ["publisher_id"], BID_WINDOWS, last_end)
    n = F.col("auctions_24")
    mean = _ratio("floor_24", "auctions_24")
    variance = _ratio("floor_sq_24", "auctions_24") - mean * mean
    return publishers.join(prior, "end", "left").select(
        "publisher_id",
        _stamp(),
        F.col("auctions_1").cast("long").alias("auctions_1h"),
        n.cast("long").alias("auctions_24h"),
        _shrink(F.col("filled_24"), n, F.col("p_fill"), PRIOR_CALLS).alias("fill_rate_24h"),
        mean.alias("floor_mean_24h"),
        # greatest() skips nulls where numpy's maximum keeps NaN: keep a null variance null.
        F.when(variance.isNull(), None).otherwise(F.sqrt(F.greatest(variance, F.lit(0.0)))).alias("floor_std_24h"),
        _ratio("floored_24", "auctions_24").alias("floored_share_24h"),
    )


def _hourly(table: DataFrame, keys: Sequence[str], sums: Mapping[str, str]) -> DataFrame:
    """One row per (``keys``, hour) with the sums of ``sums``' columns, renamed to its values."""
    from pyspark.sql import functions as F

    return table.groupBy(*keys, "hour").agg(*(F.sum(column).alias(name) for column, name in sums.items()))


def _window_sums(hourly: DataFrame, keys: Sequence[str], windows: Sequence[int], last_end: int) -> DataFrame:
    """Sums over ``[end - w, end)`` of every value column of ``hourly``, as ``<column>_<w>``, per (keys, end).

    Ends run over every hour end up to ``last_end`` within the widest window after an active hour.
    """
    from pyspark.sql import functions as F

    widest = max(windows)
    values = [c for c in hourly.columns if c not in (*keys, "hour")]
    exploded = hourly.select("*", F.explode(F.sequence(F.col("hour") + 1, F.col("hour") + widest)).alias("end")).where(
        F.col("end") <= F.lit(last_end)
    )
    age = F.col("end") - F.col("hour")  # 1 .. widest
    sums = [
        F.sum(F.when(age <= w, F.col(column)).otherwise(F.lit(0))).alias(f"{column}_{w}")
        for column in values
        for w in windows
    ]
    return exploded.groupBy(*keys, "end").agg(*sums)


def _ratio(numerator: str, denominator: str) -> Column:
    from pyspark.sql import functions as F

    return F.when(F.col(denominator) > 0, F.col(numerator) / F.col(denominator))


def _shrink(total: Column, n: Column, prior: Column, strength: float) -> Column:
    """``(total + strength * prior) / (n + strength)``; the raw mean where the prior is undefined."""
    from pyspark.sql import functions as F

    known = prior.isNotNull() & ~F.isnan(prior)
    raw = F.when(n > 0, total / n)
    return F.when(known, (total + F.lit(strength) * prior) / (n + F.lit(strength))).otherwise(raw).cast("double")


def _stamp() -> Column:
    from pyspark.sql import functions as F

    return F.timestamp_seconds(F.col("end") * F.lit(SECONDS_PER_HOUR)).alias(TIMESTAMP)


def _last_end(last_hour: int, until: datetime | None) -> int:
    # The pandas builder's rule (bidflow.features.build._last_end), on hour numbers.
    if until is None:
        return last_hour + 1
    until_ms = int(until.timestamp() * 1000)
    return min(last_hour + max(BID_WINDOWS), until_ms // MS_PER_HOUR)


def write_tables(tables: Mapping[str, DataFrame], out: str | Path) -> BuildSummary:
    """Write each table to ``out/<name>.parquet``, a folder of part files (what Spark writes, and Feast reads).

    On a local folder each table is written beside its target and moved into place, so a reader
    never sees half a table; a file the pandas builder left at the same name is replaced.
    """
    import shutil
    import time

    from pyspark.sql import functions as F

    started = time.perf_counter()
    summary = BuildSummary(out=str(out))
    for name, frame in tables.items():
        target = f"{str(out).rstrip('/')}/{name}.parquet"
        if "://" in str(out):
            frame.write.mode("overwrite").parquet(target)
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.tmp")
            frame.write.mode("overwrite").parquet(str(staging))
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            staging.replace(path)
        written = frame.sparkSession.read.parquet(target)
        # Epoch seconds, not timestamps: Spark hands timestamps to Python in the process's local zone.
        seconds = F.unix_seconds(F.col(TIMESTAMP))
        row = written.agg(F.count(F.lit(1)), F.min(seconds), F.max(seconds)).first()
        assert row is not None  # an aggregate without grouping always has one row
        summary.rows[name] = int(row[0])
        if row[0]:
            first, last = datetime.fromtimestamp(row[1], UTC), datetime.fromtimestamp(row[2], UTC)
            summary.first = first if summary.first is None else min(summary.first, first)
            summary.last = last if summary.last is None else max(summary.last, last)
    summary.seconds = time.perf_counter() - started
    return summary
