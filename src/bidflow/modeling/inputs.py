"""Where the modeling commands get their rows: each kind's own source, plus Feast.

Training itself (``bidflow.modeling.train``) takes any frame and a ``FeatureSpec``; the kind
(``bidflow.kinds``) knows its concrete source and columns, and this module adds the two feature
sources every kind has:

* ``request``: the columns stored with every row (for the bid filter, the request features ingest
  stored with every call, plus the partner);
* ``feast``: the same rows as entity rows of the kind's FeatureService; Feast appends the
  point-in-time aggregated features (``<view>__<feature>`` columns, numeric) -- the columns the
  model server reads online through the same service.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import pandas as pd

from bidflow.errors import BidflowError, ConfigError, ModelError
from bidflow.kinds import kind as kind_of
from bidflow.modeling.dataset import FeatureSpec, latest_hours

if TYPE_CHECKING:
    from bidflow.config import Config, FeaturesConfig, SparkConfig

FeatureSource = Literal["feast", "request"]

TIME: Final = "ts"
_FEAST_TIMESTAMP: Final = "event_timestamp"


def source_of(config: Config, kind: str, source: Path | None = None) -> Path:
    """``source``, or where ``kind``'s rows are by default."""
    return source if source is not None else kind_of(config, kind).default_source(config)


def load_rows(
    config: Config,
    kind: str,
    *,
    source: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """Raw rows of ``kind`` (no Feast columns yet), sorted by time, with the ``ts`` column.

    Args:
        config: the configuration (paths, features).
        kind: which model's data.
        source: the kind's data (default: the kind's ``default_source``).
        since: only rows at or after this UTC time.
        until: only rows before this UTC time.

    Raises:
        ModelError: the kind's loader returned no time column.
    """
    frame = kind_of(config, kind).load_rows(config, source_of(config, kind, source), since, until)
    if TIME not in frame.columns:
        raise ModelError(f"the rows of kind '{kind}' have no '{TIME}' column", hint="a kind's load_rows adds it")
    return frame


def split_holdout(frame: pd.DataFrame, hours: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame`` without and with its latest ``hours`` hours (training rows, held-out rows)."""
    mask = latest_hours(frame[TIME], hours)
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)


def with_features(
    frame: pd.DataFrame, config: Config, kind: str, feature_source: FeatureSource
) -> tuple[pd.DataFrame, FeatureSpec]:
    """``frame`` with the aggregated features of ``kind``'s FeatureService (``feast``) or as is (``request``).

    Returns:
        The frame (same rows, same order, ``ts`` kept) and the model's feature spec.

    Raises:
        FeatureStoreError: the feature store is not applied or its offline sources are not built.
    """
    spec = kind_of(config, kind).spec
    if feature_source == "request":
        return frame, spec((), None)
    service = feature_service(config, kind)
    enriched, columns = feast_training_set(frame, config.features, service, config.spark)
    return enriched, spec(columns, service)


def feature_service(config: Config, kind: str) -> str:
    """The Feast FeatureService ``kind`` trains on with ``feature_source: feast``.

    Raises:
        ConfigError: the kind has none (it trains on request features only).
    """
    service = kind_of(config, kind).feature_service
    if service is None:
        raise ConfigError(
            f"model kind '{kind}' has no Feast FeatureService",
            where=f"train.{kind}.feature_source",
            expected="request",
            got="feast",
            hint=f"set train.{kind}.feature_source: request in bidflow.yaml, or pass --features request",
        )
    return service


def with_service(frame: pd.DataFrame, config: Config, services: Sequence[str | None]) -> pd.DataFrame:
    """``frame`` with the columns of every named service (evaluation: champion and candidate may differ)."""
    for service in dict.fromkeys(s for s in services if s is not None):
        frame, _ = feast_training_set(frame, config.features, service, config.spark)
    return frame


def feast_training_set(
    frame: pd.DataFrame, cfg: FeaturesConfig, service: str, spark: SparkConfig | None = None
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Point-in-time features of ``service`` for ``frame``'s rows, through ``bidflow.features.store``.

    With ``features.engine: spark`` the join runs on the Spark session of ``spark`` (default settings
    when None) and returns the same frame (``bidflow.engines.spark_pandas.training_set``).

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
        if cfg.engine == "spark":
            from bidflow.config import SparkConfig
            from bidflow.engines import spark_pandas

            out = spark_pandas.training_set(cfg, spark or SparkConfig(), entities, service)
        else:
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
