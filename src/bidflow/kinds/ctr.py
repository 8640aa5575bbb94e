"""Click-through rate on real RTB impressions (iPinYou campaign 2997)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bidflow.kinds.base import Kind, instance_drift

if TYPE_CHECKING:
    import pandas as pd

    from bidflow.config import Config
    from bidflow.modeling.dataset import FeatureSpec

NAME: Final = "ctr"
TIME: Final = "ts"
# What the monitor watches per served impression: the exchange, the place and the slot.
DRIFT_CATEGORICAL: Final = ("adexchange", "region", "slotformat", "slotvisibility")
DRIFT_NUMERIC: Final = ("slotwidth", "slotheight")


def spec(feast_columns: Sequence[str] = (), feature_service: str | None = None) -> FeatureSpec:
    """The impression's columns plus the FeatureService's aggregated (historical CTR) columns."""
    from bidflow.modeling.ctr import ipinyou_spec

    return ipinyou_spec(tuple(feast_columns), feature_service)


def load_rows(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """The iPinYou impressions in the window, sorted by time.

    Raises:
        ModelError: no impression falls in the window.
    """
    import pandas as pd

    from bidflow.errors import ModelError
    from bidflow.modeling.ctr import read_ipinyou_impressions

    frame = read_ipinyou_impressions(source, config.features.ctr_day)
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= frame[TIME] >= pd.Timestamp(since)
    if until is not None:
        keep &= frame[TIME] < pd.Timestamp(until)
    if not keep.any():
        raise ModelError("no iPinYou rows in the requested window", got=f"{since} .. {until}")
    return frame[keep].sort_values(TIME, kind="stable").reset_index(drop=True)


def entities(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """One entity row per impression (the sample is one day: the window is not applied)."""
    from bidflow.features.ipinyou import ctr_entities, read_ipinyou

    return ctr_entities(read_ipinyou(source), config.features.ctr_day)


def default_source(config: Config) -> Path:
    return config.features.ctr_source


KIND: Final = Kind(
    name=NAME,
    summary="probability that an impression is clicked (iPinYou campaign 2997)",
    feature_service="ctr",
    label="click",
    registered_model="ctr_ipinyou",
    spec=spec,
    load_rows=load_rows,
    entities=entities,
    default_source=default_source,
    served_model="bidflow.serving.ctr:CTRModel",
    pipeline="bidflow.pipelines.ctr:ctr_pipeline",
    pipeline_source="impressions",
    bias_slices=("region", "adexchange", "slotvisibility"),  # the sample has no partner or device columns
    drift=instance_drift(DRIFT_CATEGORICAL, DRIFT_NUMERIC),
    replay="instances",
)
