"""The bid-filter views built on Spark equal the pandas builder's, row for row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.config import Config
from bidflow.data.batch import read_batch
from bidflow.features.build import BID_TABLES, TIMESTAMP, build_bid_features

pytestmark = [pytest.mark.integration, pytest.mark.spark]

# Sums are added in another order on Spark (per window, not as differences of running totals).
RTOL = 1e-9
# The floor's standard deviation is sqrt(E[x^2] - E[x]^2): where the floors of a publisher are all
# equal the variance is a rounding residue (~1e-14) and its square root ~1e-7, on either engine.
STD_ATOL = 1e-6


def _keys(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c == TIMESTAMP or frame[c].dtype == object or c == "device_type"]


def test_spark_views_equal_the_pandas_views_row_for_row(spark_built: Config, bid_parquet: Path) -> None:
    expected = build_bid_features(read_batch(bid_parquet))
    assert set(expected) == set(BID_TABLES)
    for name, want in expected.items():
        # Read back what Spark wrote, as Feast's file store reads it (a folder of part files).
        got = pd.read_parquet(Path(spark_built.features.offline) / f"{name}.parquet")
        assert list(got.columns) == list(want.columns), name
        keys = _keys(want)
        got = got.sort_values(keys, kind="stable").reset_index(drop=True)
        want = want.sort_values(keys, kind="stable").reset_index(drop=True)
        assert len(got) == len(want), name
        for column in want.columns:
            if want[column].dtype.kind == "f":
                atol = STD_ATOL if column == "floor_std_24h" else 1e-12
                np.testing.assert_allclose(
                    got[column].to_numpy(np.float64), want[column].to_numpy(), rtol=RTOL, atol=atol, err_msg=name
                )
            elif column == TIMESTAMP:  # identical instants; Spark stores microseconds, pandas nanoseconds
                assert str(got[column].dt.tz) == "UTC"
                pd.testing.assert_series_equal(got[column].astype(want[column].dtype), want[column], obj=name)
            else:  # keys and counts: identical values and types
                pd.testing.assert_series_equal(got[column], want[column], obj=f"{name}.{column}")
