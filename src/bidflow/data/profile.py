"""A data profile: the compact summary of a batch that later batches are compared with.

It holds what the distribution checks need and nothing else: the row count, the bid rate,
the time range, category frequencies per categorical column and decile bins per numeric
column. It is a small JSON file, versioned next to the data, so a reference does not
require keeping the reference batch itself around.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import pandas as pd

from bidflow.errors import InputError

PROFILED_CATEGORIES: Final = (
    "partner", "status", "channel", "publisher_id", "category", "format", "ad_size",
    "os", "country", "device_type", "connection_type",
)  # fmt: skip
# Not hour_of_day: a batch of later hours differs from its reference by construction.
PROFILED_NUMBERS: Final = ("bidfloor", "latency_ms", "tmax")
_TOP_CATEGORIES: Final = 2_000


class NumericBins(msgspec.Struct, frozen=True):
    edges: list[float]  # interior decile edges of the reference
    shares: list[float]  # share of rows per bin (len(edges) + 1 bins)


class DataProfile(msgspec.Struct, frozen=True):
    rows: int
    bid_rate: float
    first_ts_ms: int
    last_ts_ms: int
    categories: dict[str, dict[str, float]]  # column -> value -> share
    numbers: dict[str, NumericBins]


def build_profile(df: pd.DataFrame) -> DataProfile:
    """Profile a batch of ingested rows."""
    ts = df["ts"].astype("int64") // 1_000_000 if df["ts"].dtype.kind == "M" else df["ts"]
    categories = {column: category_shares(df[column]) for column in PROFILED_CATEGORIES}
    numbers = {}
    for column in PROFILED_NUMBERS:
        values = df[column].to_numpy(dtype=np.float64)
        edges = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9))) if len(values) else np.array([])
        numbers[column] = NumericBins(edges=edges.tolist(), shares=bin_shares(values, edges.tolist()))
    return DataProfile(
        rows=len(df),
        bid_rate=int(df["bid"].sum()) / len(df) if len(df) else 0.0,
        first_ts_ms=int(ts.min()) if len(df) else 0,
        last_ts_ms=int(ts.max()) if len(df) else 0,
        categories=categories,
        numbers=numbers,
    )


def category_shares(column: pd.Series) -> dict[str, float]:
    """The most common values' shares, most common first and ties broken by value.

    A total order keeps the profile's bytes the same on every machine: pandas' ``value_counts``
    sorts with numpy's unstable sort, whose SIMD variant (picked at run time by the CPU) puts
    tied counts in another order.
    """
    counts = Counter(column.astype(str).tolist())
    total = len(column)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:_TOP_CATEGORIES]
    return {value: count / total for value, count in ranked}


def bin_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Share of ``values`` in each bin delimited by ``edges`` (right-closed, like the quantiles)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * (len(edges) + 1)


def save_profile(profile: DataProfile, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(profile), indent=1))


def load_profile(path: Path) -> DataProfile:
    if not path.is_file():
        raise InputError(
            "reference profile not found",
            where=path,
            hint="create one from a known-good batch with `bidflow validate profile BATCH --out PATH`",
        )
    try:
        return msgspec.json.decode(path.read_bytes(), type=DataProfile)
    except msgspec.MsgspecError as exc:
        raise InputError("reference profile is not a bidflow data profile", where=path, got=str(exc)) from exc
