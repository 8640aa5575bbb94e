"""``bidflow features build``: trailing-window aggregates, written as Feast's offline sources.

Every table has one row per (entity, hour end ``E``) while the entity had any traffic in its
longest window, stamped ``event_timestamp = E``; a window of ``w`` hours covers ``[E - w, E)``.
A point-in-time join for a request at ``t`` therefore only ever sees rows with ``E <= t``, built
from traffic strictly before ``E``: no leakage. Rows are never stamped after the end of the data
(``until``): a row for an hour that was not ingested yet would claim it had no traffic.

Small counts are shrunk towards a prior (a Beta/Bayesian average):

    rate = (events + m * prior) / (trials + m)

with ``m`` pseudo-trials. Slices (partner x publisher, x country, ...) shrink towards the
partner's own 24 h rate, the partner towards all partners' 24 h rate, a publisher's fill rate
towards all publishers'. A slice with 2 calls and 1 bid thus reads close to the partner's rate,
not 50 %. Means (price, latency) are shrunk the same way with ``m`` pseudo-observations.

Everything is vectorised: one arrow group-by turns the raw rows into hourly sums per entity,
then trailing windows are differences of cumulative sums found by binary search, so the cost
is O(n log n) in hourly groups, not in windows x rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bidflow.errors import InputError
from bidflow.features.ipinyou import CTR_KEYS, impression_hours

TIMESTAMP: Final = "event_timestamp"
MS_PER_HOUR: Final = 3_600_000

BID_WINDOWS: Final = (1, 24)
CTR_WINDOWS: Final = (1, 24)
PRIOR_CALLS: Final = 20.0  # pseudo-calls behind every smoothed call rate
PRIOR_BIDS: Final = 5.0  # pseudo-bids behind every smoothed mean price
PRIOR_IMPRESSIONS: Final = 500.0  # pseudo-impressions behind a smoothed CTR (CTR ~ 1 %: ~5 pseudo-clicks)

# Offline source tables (file names under the offline base; feature_repo/sources.py reads them).
PARTNER_SLICES: Final = {
    "partner_publisher_stats": "publisher_id",
    "partner_country_stats": "country",
    "partner_format_stats": "format",
    "partner_device_stats": "device_type",
}
BID_TABLES: Final = ("partner_stats", *PARTNER_SLICES, "publisher_stats")
CTR_TABLES: Final = {f"ctr_{'slot' if key == 'slotid' else key}_stats": key for key in CTR_KEYS}


@dataclass
class BuildSummary:
    """What a build wrote: rows per table, where, and the span of event timestamps."""

    out: str
    rows: dict[str, int] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None
    seconds: float = 0.0


# --- generic trailing windows ------------------------------------------------------------------


@dataclass(frozen=True)
class _Windows:
    """Window sums for every (entity, hour end) with traffic in the longest window."""

    keys: pd.DataFrame  # key columns, one row per output row
    end: np.ndarray  # int64 epoch hour of the window end (= event timestamp)
    sums: dict[tuple[str, int], np.ndarray]  # (column, window hours) -> sum over [end - w, end)


def _window_sums(
    hourly: pd.DataFrame, keys: Sequence[str], columns: Sequence[str], windows: Sequence[int], last_end: int
) -> _Windows:
    """Trailing-window sums of ``columns`` from one row per (``keys``, ``hour``).

    Output hour ends run from the first active hour + 1 to ``last_end`` (inclusive), for as long
    as the entity had a row within the longest window.
    """
    widest = max(windows)
    codes = hourly.groupby(list(keys), sort=False, observed=True).ngroup().to_numpy(np.int64)
    hours = hourly["hour"].to_numpy(np.int64)
    order = np.lexsort((hours, codes))
    codes, hours = codes[order], hours[order]
    values = {name: hourly[name].to_numpy()[order] for name in columns}
    # Each active hour h makes ends h+1 .. h+widest live; overlapping spans merge into segments.
    breaks = np.ones(len(codes), dtype=bool)
    breaks[1:] = (codes[1:] != codes[:-1]) | (hours[1:] > hours[:-1] + widest)
    starts = np.flatnonzero(breaks)
    lasts = np.append(starts[1:], len(codes)) - 1
    seg_first = hours[starts] + 1
    seg_last = np.minimum(hours[lasts] + widest, last_end)
    lengths = np.maximum(seg_last - seg_first + 1, 0)
    total = int(lengths.sum())
    out_code = np.repeat(codes[starts], lengths)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out_end = np.repeat(seg_first, lengths) + offsets
    # Sorted composite keys make "rows of this entity in [end - w, end)" two binary searches.
    base = int(hours.min()) - widest
    span = int(last_end) - base + 1
    composite = codes * span + (hours - base)
    target = out_code * span + (out_end - base)
    upper = np.searchsorted(composite, target, side="left")
    sums: dict[tuple[str, int], np.ndarray] = {}
    for name, column in values.items():
        cumulative = np.concatenate(([0], np.cumsum(column)))
        for w in windows:
            lower = np.searchsorted(composite, target - w, side="left")
            sums[(name, w)] = cumulative[upper] - cumulative[lower]
    first_rows = np.empty(int(codes.max()) + 1 if len(codes) else 0, dtype=np.int64)
    first_rows[codes] = order  # any row of the group carries its keys
    key_frame = hourly[list(keys)].iloc[first_rows[out_code]].reset_index(drop=True)
    return _Windows(keys=key_frame, end=out_end, sums=sums)


def _shrink(total: np.ndarray, n: np.ndarray, prior: np.ndarray | float, strength: float) -> np.ndarray:
    """``(total + strength * prior) / (n + strength)``; the raw mean where the prior is undefined."""
    prior_arr = np.broadcast_to(np.asarray(prior, dtype=np.float64), np.shape(total))
    known = np.isfinite(prior_arr)
    with np.errstate(invalid="ignore", divide="ignore"):
        shrunk = (total + strength * np.where(known, prior_arr, 0.0)) / (n + strength)
        raw = np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)
    return np.where(known, shrunk, raw)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _frame(windows: _Windows, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    frame = windows.keys.copy()
    frame[TIMESTAMP] = pd.to_datetime(windows.end * MS_PER_HOUR, unit="ms", utc=True)
    for name, values in columns.items():
        frame[name] = values
    return frame


def _overall(windows: _Windows, name: str, w: int) -> pd.Series:
    """Sum of ``name`` over the window per hour end, for a table keyed by one constant."""
    return pd.Series(windows.sums[(name, w)], index=windows.end)


def _at(series: pd.Series, ends: np.ndarray) -> np.ndarray:
    """``series`` (indexed by hour end) at each of ``ends``; NaN where it has no value."""
    return series.reindex(ends).to_numpy(dtype=np.float64)


# --- bid filter -------------------------------------------------------------------------------


def _hourly(table: pa.Table, keys: Sequence[str], sums: Mapping[str, str]) -> pd.DataFrame:
    """One row per (``keys``, hour) with the sums of ``sums``' columns, renamed to its values."""
    grouped = table.group_by([*keys, "hour"], use_threads=True).aggregate([(column, "sum") for column in sums])
    renames = {f"{column}_sum": name for column, name in sums.items()}
    frame: pd.DataFrame = grouped.rename_columns([renames.get(n, n) for n in grouped.column_names]).to_pandas()
    return frame


def _priors(overall: _Windows, ends: np.ndarray, rates: Mapping[str, tuple[str, str]]) -> dict[str, np.ndarray]:
    """All-entity 24 h ratios (``name -> (numerator, denominator)``) at each hour end."""
    return {
        name: _ratio(_at(_overall(overall, top, 24), ends), _at(_overall(overall, bottom, 24), ends))
        for name, (top, bottom) in rates.items()
    }


_CALL_SUMS: Final = {"n": "calls", "bid": "bids", "timeout": "timeouts", "error": "errors", "price": "price"}


def build_bid_features(calls: pa.Table, until: datetime | None = None) -> dict[str, pd.DataFrame]:
    """The bid-filter offline tables from ingested rows (``bidflow.data.ingest.parquet_schema``).

    Args:
        calls: one row per auction x partner called.
        until: end of the data (exclusive); rows are stamped up to it. Default: the end of the
            last hour with data.

    Returns:
        Table name -> frame with the key columns, ``event_timestamp`` and the features.
    """
    if calls.num_rows == 0:
        raise InputError("no auction rows to build features from", hint="ingest some traffic first")
    hour = pc.divide(calls["ts"].cast(pa.int64()), MS_PER_HOUR)  # integer division: ts >= 0
    status = calls["status"]
    bid = calls["bid"].cast(pa.int64())
    table = pa.table(
        {
            "hour": hour,
            "partner": calls["partner"],
            "publisher_id": calls["publisher_id"],
            "country": calls["country"],
            "format": calls["format"],
            "device_type": calls["device_type"].cast(pa.int64()),
            "auction_id": calls["auction_id"],
            "bidfloor": calls["bidfloor"],
            "all": pa.repeat(pa.scalar("all"), calls.num_rows),
            "n": pa.repeat(pa.scalar(1, pa.int64()), calls.num_rows),
            "bid": bid,
            "timeout": pc.equal(status, "timeout").cast(pa.int64()),
            "error": pc.equal(status, "error").cast(pa.int64()),
            "price": pc.if_else(pc.equal(bid, 1), pc.fill_null(calls["price"], 0.0), 0.0),
            "latency": calls["latency_ms"].cast(pa.float64()),
        }
    )
    last_end = _last_end(int(pc.max(hour).as_py()), until)
    partner_sums = _CALL_SUMS | {"latency": "latency"}
    overall = _window_sums(_hourly(table, ["all"], partner_sums), ["all"], list(partner_sums.values()), (24,), last_end)
    partners = _window_sums(
        _hourly(table, ["partner"], partner_sums), ["partner"], list(partner_sums.values()), BID_WINDOWS, last_end
    )
    prior = _priors(
        overall,
        partners.end,
        {
            "bid": ("bids", "calls"),
            "price": ("price", "bids"),
            "timeout": ("timeouts", "calls"),
            "error": ("errors", "calls"),
            "latency": ("latency", "calls"),
        },
    )
    columns: dict[str, np.ndarray] = {}
    for w in BID_WINDOWS:
        s = {name: partners.sums[(name, w)] for name in partner_sums.values()}
        columns |= {
            f"calls_{w}h": s["calls"].astype(np.int64),
            f"bid_rate_{w}h": _shrink(s["bids"], s["calls"], prior["bid"], PRIOR_CALLS),
            f"mean_price_{w}h": _shrink(s["price"], s["bids"], prior["price"], PRIOR_BIDS),
            f"timeout_rate_{w}h": _shrink(s["timeouts"], s["calls"], prior["timeout"], PRIOR_CALLS),
            f"error_rate_{w}h": _shrink(s["errors"], s["calls"], prior["error"], PRIOR_CALLS),
            f"mean_latency_ms_{w}h": _shrink(s["latency"], s["calls"], prior["latency"], PRIOR_CALLS),
        }
    tables = {"partner_stats": _frame(partners, columns)}
    partner_prior = tables["partner_stats"][["partner", TIMESTAMP, "bid_rate_24h", "mean_price_24h"]]

    slice_sums = {"n": "calls", "bid": "bids", "price": "price"}
    for name, key in PARTNER_SLICES.items():
        sliced = _window_sums(
            _hourly(table, ["partner", key], slice_sums),
            ["partner", key],
            list(slice_sums.values()),
            BID_WINDOWS,
            last_end,
        )
        frame = _frame(sliced, {})
        # A live slice row always has a live partner row at the same hour end (its calls count there).
        priors = frame.merge(partner_prior, on=["partner", TIMESTAMP], how="left", validate="many_to_one")
        for w in BID_WINDOWS:
            s = {n: sliced.sums[(n, w)] for n in slice_sums.values()}
            frame[f"calls_{w}h"] = s["calls"].astype(np.int64)
            frame[f"bid_rate_{w}h"] = _shrink(s["bids"], s["calls"], priors["bid_rate_24h"].to_numpy(), PRIOR_CALLS)
            frame[f"mean_price_{w}h"] = _shrink(s["price"], s["bids"], priors["mean_price_24h"].to_numpy(), PRIOR_BIDS)
        tables[name] = frame

    tables["publisher_stats"] = _publisher_stats(table, last_end)
    keys = {"partner_stats": ["partner"], "publisher_stats": ["publisher_id"]}
    return {name: _sorted(frame, keys.get(name) or ["partner", PARTNER_SLICES[name]]) for name, frame in tables.items()}


def _publisher_stats(table: pa.Table, last_end: int) -> pd.DataFrame:
    """Per publisher: auctions, fill and floors; an auction counts once however many partners it called."""
    auctions = table.group_by(["auction_id", "publisher_id", "hour", "bidfloor", "all"], use_threads=True).aggregate(
        [("bid", "max")]
    )
    floor = auctions["bidfloor"]
    per_auction = pa.table(
        {
            "hour": auctions["hour"],
            "publisher_id": auctions["publisher_id"],
            "all": auctions["all"],
            "n": pa.repeat(pa.scalar(1, pa.int64()), auctions.num_rows),
            "filled": auctions["bid_max"],
            "floor": floor,
            "floor_sq": pc.multiply(floor, floor),
            "floored": pc.greater(floor, 0.0).cast(pa.int64()),
        }
    )
    sums = {"n": "auctions", "filled": "filled", "floor": "floor", "floor_sq": "floor_sq", "floored": "floored"}
    overall = _window_sums(_hourly(per_auction, ["all"], sums), ["all"], list(sums.values()), (24,), last_end)
    publishers = _window_sums(
        _hourly(per_auction, ["publisher_id"], sums), ["publisher_id"], list(sums.values()), BID_WINDOWS, last_end
    )
    prior = _priors(overall, publishers.end, {"fill": ("filled", "auctions")})
    n = publishers.sums[("auctions", 24)]
    mean = _ratio(publishers.sums[("floor", 24)], n)
    variance = _ratio(publishers.sums[("floor_sq", 24)], n) - mean**2
    return _frame(
        publishers,
        {
            "auctions_1h": publishers.sums[("auctions", 1)].astype(np.int64),
            "auctions_24h": n.astype(np.int64),
            "fill_rate_24h": _shrink(publishers.sums[("filled", 24)], n, prior["fill"], PRIOR_CALLS),
            "floor_mean_24h": mean,
            "floor_std_24h": np.sqrt(np.maximum(variance, 0.0)),
            "floored_share_24h": _ratio(publishers.sums[("floored", 24)], n),
        },
    )


# --- CTR (iPinYou) ----------------------------------------------------------------------------


def build_ctr_features(impressions: pd.DataFrame, day: datetime) -> dict[str, pd.DataFrame]:
    """Historical impressions, clicks and smoothed CTR per domain, slot, region and exchange.

    Args:
        impressions: the iPinYou rows (``bidflow.features.ipinyou.read_ipinyou``).
        day: UTC midnight the rows' ``hour`` is placed on.
    """
    if impressions.empty:
        raise InputError("no impressions to build CTR features from")
    hours = impression_hours(impressions, day)
    table = pa.table(
        {
            "hour": pa.array(hours, pa.int64()),
            "n": pa.repeat(pa.scalar(1, pa.int64()), len(impressions)),
            "click": pa.array(impressions["click"].to_numpy(np.int64)),
            "all": pa.repeat(pa.scalar("all"), len(impressions)),
            **{key: pa.array(impressions[key].to_numpy(), pa.string()) for key in CTR_KEYS},
        }
    )
    # The sample is one complete day: the last window ends when its last hour does.
    last_end = int(hours.max()) + 1
    sums = {"n": "impressions", "click": "clicks"}
    overall = _window_sums(_hourly(table, ["all"], sums), ["all"], list(sums.values()), (24,), last_end)
    tables: dict[str, pd.DataFrame] = {}
    for name, key in CTR_TABLES.items():
        windows = _window_sums(_hourly(table, [key], sums), [key], list(sums.values()), CTR_WINDOWS, last_end)
        prior = _priors(overall, windows.end, {"click_rate": ("clicks", "impressions")})["click_rate"]
        columns: dict[str, np.ndarray] = {}
        for w in CTR_WINDOWS:
            n, clicks = windows.sums[("impressions", w)], windows.sums[("clicks", w)]
            columns |= {
                f"impressions_{w}h": n.astype(np.int64),
                f"clicks_{w}h": clicks.astype(np.int64),
                f"ctr_{w}h": _shrink(clicks, n, prior, PRIOR_IMPRESSIONS),
            }
        tables[name] = _sorted(_frame(windows, columns), [key])
    return tables


# --- output -----------------------------------------------------------------------------------


def write_tables(tables: Mapping[str, pd.DataFrame], out: str | Path, started: float | None = None) -> BuildSummary:
    """Write each table to ``out/<name>.parquet`` (a local folder or an ``s3://`` URI).

    Each file is written to a temporary name first and moved into place, so a reader (a running
    materialization) never sees half a file.
    """
    summary = BuildSummary(out=str(out))
    for name, frame in tables.items():
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        target = f"{str(out).rstrip('/')}/{name}.parquet"
        if "://" in str(out):
            pq.write_table(arrow, target, compression="zstd")
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.tmp")
            pq.write_table(arrow, staging, compression="zstd")
            staging.replace(path)
        summary.rows[name] = len(frame)
        if len(frame):
            first, last = frame[TIMESTAMP].min().to_pydatetime(), frame[TIMESTAMP].max().to_pydatetime()
            summary.first = first if summary.first is None else min(summary.first, first)
            summary.last = last if summary.last is None else max(summary.last, last)
    if started is not None:
        summary.seconds = time.perf_counter() - started
    return summary


def _last_end(last_hour: int, until: datetime | None) -> int:
    if until is None:
        return last_hour + 1
    until_ms = int(until.timestamp() * 1000)
    return min(last_hour + max(BID_WINDOWS), until_ms // MS_PER_HOUR)


def _sorted(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return frame.sort_values([TIMESTAMP, *keys], kind="stable").reset_index(drop=True)
