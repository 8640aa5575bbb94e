"""The bid filter: will demand partner D bid on auction R? (one row per auction x partner call)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.kinds.base import Kind

if TYPE_CHECKING:
    import pandas as pd

    from bidflow.config import Config
    from bidflow.modeling.dataset import FeatureSpec

NAME: Final = "bid_filter"
PARTNER: Final = "partner"
LABEL: Final = "bid"
# The request features the monitor watches (bidflow.monitoring.drift.MONITORED_CATEGORICAL and its
# numeric ones): spelled here so that knowing the kind does not import the monitor's numerics.
DRIFT_FEATURES: Final = (
    "channel", "category", "format", "ad_size", "os", "country", "device_type", "connection_type",
    "interstitial", "rewarded", "has_user_id", "secure", "bidfloor", "tmax",
)  # fmt: skip


def spec(feast_columns: Sequence[str] = (), feature_service: str | None = None) -> FeatureSpec:
    """Request features, the partner, and any aggregated columns of the FeatureService."""
    from bidflow.modeling.dataset import FeatureSpec
    from bidflow.openrtb.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES

    return FeatureSpec(
        names=(*CATEGORICAL_FEATURES, PARTNER, *NUMERIC_FEATURES, *feast_columns),
        categorical=(*CATEGORICAL_FEATURES, PARTNER),
        label=LABEL,
        feature_service=feature_service,
    )


def load_rows(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """Ingested partner calls (parquet partitioned by hour) in the window."""
    from bidflow.data.batch import read_frame

    return read_frame(source, since, until)


def entities(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """One entity row per auction x partner call, every column kept."""
    from bidflow.data.batch import read_frame
    from bidflow.features.store import bid_filter_entities

    return bid_filter_entities(read_frame(source, since, until))


def default_source(config: Config) -> Path:
    return config.paths.parquet


KIND: Final = Kind(
    name=NAME,
    summary="will demand partner D bid on auction R? call or skip each partner (OpenRTB auction logs)",
    feature_service="bid_filter",
    label=LABEL,
    registered_model="bid_filter",
    spec=spec,
    load_rows=load_rows,
    entities=entities,
    default_source=default_source,
    served_model="bidflow.serving.model:BidFilterModel",
    pipeline="bidflow.pipelines.bid_filter:bid_filter_pipeline",
    pipeline_source="raw_logs",
    thresholded=True,
    drift_features=DRIFT_FEATURES,
    replay="openrtb",
    partner_column=PARTNER,
)
