"""The bid filter: will demand partner D bid on auction R? (one row per auction x partner call)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bidflow.kinds.base import SCORE, DriftShape, Exploration, Kind, ServedRow

if TYPE_CHECKING:
    import pandas as pd

    from bidflow.config import Config
    from bidflow.modeling.dataset import FeatureSpec
    from bidflow.openrtb.features import RequestFeatures

NAME: Final = "bid_filter"
PARTNER: Final = "partner"
LABEL: Final = "bid"
# The request features the monitor watches, categorical then numeric (the order of a saved
# detector's matrix): spelled here so that knowing the kind does not import the monitor's numerics.
DRIFT_CATEGORICAL: Final = (
    "channel", "category", "format", "ad_size", "os", "country", "device_type", "connection_type",
    "interstitial", "rewarded", "has_user_id", "secure",
)  # fmt: skip
DRIFT_NUMERIC: Final = ("bidfloor", "tmax")
DRIFT_FEATURES: Final = (*DRIFT_CATEGORICAL, *DRIFT_NUMERIC)


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


def drift_row(features: RequestFeatures, score: float | None) -> dict[str, Any]:
    """One auction as the monitored columns; ``score`` None (no model score) becomes NaN."""
    row: dict[str, Any] = {name: getattr(features, name) for name in DRIFT_FEATURES}
    row[SCORE] = math.nan if score is None else float(score)
    return row


def served_rows(request: Mapping[str, Any], response: Mapping[str, Any], ts_ms: int) -> list[ServedRow]:
    """One row per auction of a served call: its request features (the transform training uses) and
    the mean of its partners' scores; an explored auction carries what the model would have called.

    Raises:
        BidflowError: a request that is not OpenRTB.
        KeyError, TypeError, ValueError: the bodies are not the bid filter's v1 request and response.
    """
    import numpy as np

    from bidflow.openrtb import ValidationContext, decode_request_obj
    from bidflow.openrtb.features import request_features

    lenient = ValidationContext()  # the server already applied its rules; read what it answered
    rows = []
    for instance, prediction in zip(request["instances"], response["predictions"], strict=True):
        req = decode_request_obj(instance["request"], lenient)
        features = request_features(req, int(instance.get("ts_ms") or ts_ms))
        decisions = prediction["decisions"]
        scores = [d["score"] for d in decisions if d.get("score") is not None]
        mean = float(np.mean(scores)) if scores else None
        exploration = None
        if prediction.get("explored") and scores:
            would_call = {d["partner"]: d["score"] >= d["threshold"] for d in decisions if d.get("score") is not None}
            exploration = Exploration(req.id, would_call)
        rows.append(ServedRow(drift_row(features, mean), mean, exploration))
    return rows


def reference_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Held-out partner calls (with ``score``) as the monitor sees auctions: one row per auction,
    its request features and the mean score over its partners."""
    per_auction = frame.groupby("auction_id", sort=False)
    return per_auction[list(DRIFT_FEATURES)].first().assign(**{SCORE: per_auction[SCORE].mean()})


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
    served_model="bidflow.serving.bid_filter:BidFilterModel",
    pipeline="bidflow.pipelines.bid_filter:bid_filter_pipeline",
    pipeline_source="raw_logs",
    drift=DriftShape(DRIFT_CATEGORICAL, DRIFT_NUMERIC, served_rows, reference_rows),
    replay="openrtb",
    partner_column=PARTNER,
)
