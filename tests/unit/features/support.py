"""Helpers shared by the unit and integration tests of ``bidflow.features``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from bidflow.config import FeaturesConfig
from bidflow.data.ingest import parquet_schema
from tests.conftest import REPO

FEATURE_REPO = REPO / "feature_repo"
T0 = datetime(2026, 11, 2, 10, tzinfo=UTC)
WriteViews = Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], None]


def features_config(root: Path, project: str = "bidflow_unit", **extra: Any) -> FeaturesConfig:
    """Settings that keep every file of the store (registry, SQLite, offline parquet) under ``root``."""
    return FeaturesConfig(repo=FEATURE_REPO, offline=root / "offline", state=root / "state", project=project, **extra)


def view_frame(view: Any, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows of ``view``'s offline source: every column of its schema, features 0 unless given."""
    columns: dict[str, Any] = {}
    for entity in view.entity_columns:
        kind = np.int64 if str(entity.dtype) == "Int64" else object
        columns[entity.name] = pd.Series([row[entity.name] for row in rows], dtype=kind)
    columns["event_timestamp"] = pd.to_datetime([row["event_timestamp"] for row in rows], utc=True)
    for feature in view.features:
        kind = np.int64 if str(feature.dtype) == "Int64" else np.float64
        columns[feature.name] = pd.Series([row.get(feature.name, 0) for row in rows], dtype=kind)
    return pd.DataFrame(columns)


def calls_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Ingested rows (``parquet_schema``) from a few given columns; the rest get plain values."""
    schema = parquet_schema()
    base: dict[str, Any] = {
        "auction_id": "a",
        "partner": "atlas",
        "status": "nobid",
        "price": None,
        "latency_ms": 50,
        "channel": "site",
        "publisher_id": "pub",
        "category": "IAB1",
        "format": "banner",
        "ad_size": "300x250",
        "bidfloor": 0.0,
        "device_type": 2,
        "os": "ios",
        "country": "USA",
        "region": "CA",
    }
    filled = []
    for row in rows:
        full = base | dict(row)
        full["bid"] = 1 if full["status"] == "bid" else 0
        for field in schema:
            full.setdefault(field.name, 0)
        filled.append(full)
    return pa.Table.from_pylist(filled, schema=schema)


def check_train_serve_consistency(
    store: Any, cfg: FeaturesConfig, ingested: Path, auctions: int = 24
) -> dict[str, int]:
    """Serve features for logged requests exactly as the model server would, and compare with training.

    Builds and applies the offline tables from the ingested parquet, samples ``auctions`` logged
    requests (plus copies of a few moved past the end of the data, where rows age beyond the ttl),
    then walks forward in time: before serving a request, the online store is materialized up to the
    request's time; the reader's vector for each candidate partner must equal that request's row
    of the point-in-time training set. Feature rows sit on whole hours, so materializing up to the
    first request of an hour leaves the store exactly as materializing up to any later one in it.

    Returns:
        Counts of compared rows, rows with some live feature, and rows entirely on defaults.
    """
    import numpy as np

    from bidflow.data.batch import read_batch
    from bidflow.features import store as feature_store
    from bidflow.features.build import build_bid_features, write_tables
    from bidflow.features.online import OnlineFeatureReader
    from bidflow.serving.bid_filter_features import LAYOUT

    calls = read_batch(ingested)
    tables = build_bid_features(calls)
    for frame in tables.values():
        assert (frame["event_timestamp"].dt.floor("h") == frame["event_timestamp"]).all()
    write_tables(tables, cfg.offline)
    feature_store.apply(store, cfg)

    logged = calls.to_pandas()
    chosen = pd.Series(logged["auction_id"].unique()).sample(auctions, random_state=7).tolist()
    sample = logged[logged["auction_id"].isin(chosen)]
    late = sample[sample["auction_id"].isin(chosen[:4])].copy()
    shift = [1.5, 1.5, 3.5, 3.5]  # hours after the last logged hour: within, then beyond the 2 h ttl
    last_hour = logged["ts"].max().floor("h")
    for auction, hours in zip(chosen[:4], shift, strict=True):
        rows = late["auction_id"] == auction
        late.loc[rows, "ts"] = last_hour + pd.Timedelta(hours=hours) + pd.Timedelta(minutes=7)
        late.loc[rows, "auction_id"] = f"late-{auction}"
    requests = pd.concat([sample, late], ignore_index=True).sort_values(["ts", "auction_id"], kind="stable")

    training = feature_store.training_set(store, feature_store.bid_filter_entities(requests), "bid_filter")
    reader = OnlineFeatureReader(store, "bid_filter", layout=LAYOUT)
    columns = list(reader.feature_names)
    bid_views = [view.view for view in reader.spec.views]
    materialized_to = None
    counts = {"rows": 0, "live": 0, "defaults": 0}
    for auction, rows in training.groupby("auction_id", sort=False):
        ts = rows["event_timestamp"].iloc[0].to_pydatetime()
        if materialized_to is None or ts.replace(minute=0, second=0, microsecond=0) > materialized_to:
            start = materialized_to or ts - timedelta(days=2)
            feature_store.materialize(store, start, ts, bid_views)
            materialized_to = ts
        first = rows.iloc[0]
        served = reader.features(
            list(rows["partner"]),
            str(first["publisher_id"]),
            str(first["country"]),
            str(first["format"]),
            int(first["device_type"]),
            at=ts,
        )
        trained = rows[columns].to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(served, trained, err_msg=f"auction {auction} at {ts}")
        live = ~(served == reader.defaults) & ~np.isnan(served)
        counts["rows"] += len(rows)
        counts["live"] += int(live.any(axis=1).sum())
        counts["defaults"] += int((~live.any(axis=1)).sum())
    reader.close()
    return counts
