"""Where the modeling commands get their rows: ingested parquet or the iPinYou sample, plus Feast.

Training itself (``bidflow.modeling.train``) takes any frame and a ``FeatureSpec``; this module is
the one place that knows the concrete sources:

* ``request``: the request features ingest stored with every call (``bidflow.openrtb.features``),
  plus the partner;
* ``feast``: the same rows as entity rows of the model's FeatureService; Feast appends the
  point-in-time aggregated features (``<view>__<feature>`` columns, numeric) -- the columns the
  model server reads online through the same service.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import pandas as pd

from bidflow.errors import BidflowError, ModelError
from bidflow.modeling import ctr
from bidflow.modeling.dataset import FeatureSpec, latest_hours
from bidflow.openrtb.features import CATEGORICAL_FEATURES, NUMERIC_FEATURES

if TYPE_CHECKING:
    from bidflow.config import Config, FeaturesConfig

ModelKind = Literal["bid_filter", "ctr"]
FeatureSource = Literal["feast", "request"]

BID_FILTER_SERVICE: Final = "bid_filter"  # FeatureService names in feature_repo/feature_services.py
CTR_SERVICE: Final = "ctr"
PARTNER: Final = "partner"
BID_LABEL: Final = "bid"
TIME: Final = "ts"
_FEAST_TIMESTAMP: Final = "event_timestamp"


def bid_filter_spec(feast_columns: Sequence[str] = (), feature_service: str | None = None) -> FeatureSpec:
    """The bid filter's features: request features, the partner, and any aggregated columns."""
    return FeatureSpec(
        names=(*CATEGORICAL_FEATURES, PARTNER, *NUMERIC_FEATURES, *feast_columns),
        categorical=(*CATEGORICAL_FEATURES, PARTNER),
        label=BID_LABEL,
        feature_service=feature_service,
    )


def model_name(config: Config, kind: ModelKind) -> str:
    """The registered model name of ``kind``."""
    return config.registry.bid_filter_model if kind == "bid_filter" else config.registry.ctr_model


def load_rows(
    config: Config,
    kind: ModelKind,
    *,
    source: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """Raw rows of ``kind`` (no Feast columns yet), sorted by time, with the ``ts`` column.

    Args:
        config: the configuration (paths, features).
        kind: which model's data.
        source: the parquet batch or the iPinYou CSV (default: ``paths.parquet`` / ``features.ctr_source``).
        since: only rows at or after this UTC time.
        until: only rows before this UTC time.
    """
    if kind == "bid_filter":
        from bidflow.data.batch import read_frame

        return read_frame(source or config.paths.parquet, since, until)
    frame = ctr.read_ipinyou_impressions(source or config.features.ctr_source, config.features.ctr_day)
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= frame[TIME] >= pd.Timestamp(since)
    if until is not None:
        keep &= frame[TIME] < pd.Timestamp(until)
    if not keep.any():
        raise ModelError("no iPinYou rows in the requested window", got=f"{since} .. {until}")
    return frame[keep].sort_values(TIME, kind="stable").reset_index(drop=True)


def split_holdout(frame: pd.DataFrame, hours: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` without and with its latest ``hours`` hours (training rows, held-out rows)."""
    mask = latest_hours(frame[TIME], hours)
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)


def with_features(
    frame: pd.DataFrame, config: Config, kind: ModelKind, feature_source: FeatureSource
) -> tuple[pd.DataFrame, FeatureSpec]:
    """``frame`` with the aggregated features of ``kind``'s FeatureService (``feast``) or as is (``request``).

    Returns:
        The frame (same rows, same order, ``ts`` kept) and the model's feature spec.

    Raises:
        FeatureStoreError: the feature store is not applied or its offline sources are not built.
    """
    if feature_source == "request":
        return frame, _spec(kind, (), None)
    service = BID_FILTER_SERVICE if kind == "bid_filter" else CTR_SERVICE
    enriched, columns = feast_training_set(frame, config.features, service)
    return enriched, _spec(kind, columns, service)


def with_service(frame: pd.DataFrame, config: Config, services: Sequence[str | None]) -> pd.DataFrame:
    """``frame`` with the columns of every named service (evaluation: champion and candidate may differ)."""
    for service in dict.fromkeys(s for s in services if s is not None):
        frame, _ = feast_training_set(frame, config.features, service)
    return frame


def feast_training_set(frame: pd.DataFrame, cfg: FeaturesConfig, service: str) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Point-in-time features of ``service`` for ``frame``'s rows, through ``bidflow.features.store``.

    Returns:
        The frame with the service's columns appended (rows and order unchanged) and those columns.
    """
    from bidflow.features.spec import service_spec
    from bidflow.features.store import open_store, training_set

    store = open_store(cfg)
    spec = service_spec(store, service)
    present = [c for c in spec.columns if c in frame.columns]
    if len(present) == len(spec.columns):
        return frame, spec.columns  # already joined (evaluation with two models on one service)
    entities = frame.drop(columns=present).rename(columns={TIME: _FEAST_TIMESTAMP})
    for key in spec.join_keys:
        if key == "device_type" and key in entities.columns:
            entities[key] = entities[key].astype("int64")  # Feast's key type for device_type is Int64
    try:
        out = training_set(store, entities, service=service)
    except BidflowError:
        raise
    except Exception as exc:  # Feast and pyarrow raise many types; a user must see which service failed
        from bidflow.errors import FeatureStoreError

        raise FeatureStoreError(
            f"Feast could not build the '{service}' training set",
            got=f"{type(exc).__name__}: {exc}"[:400],
            hint="run `bidflow features build`, `bidflow features apply`, or train with --features request",
        ) from exc
    out[TIME] = pd.to_datetime(out[_FEAST_TIMESTAMP], utc=True)
    return out, spec.columns


def _spec(kind: ModelKind, columns: Sequence[str], service: str | None) -> FeatureSpec:
    if kind == "bid_filter":
        return bid_filter_spec(tuple(columns), service)
    return ctr.ipinyou_spec(tuple(columns), service)
