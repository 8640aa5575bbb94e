"""A model kind that lives only in the tests: will a shopper buy, given a colour and a size?

It is what the README's "Add a model" recipe asks for: this one module plus one line under
``kinds:`` in ``bidflow.yaml``. It has no Feast FeatureService, so it trains on its rows' own
columns (``train.toy.feature_source: request``) and is served by the generic tabular server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd

from bidflow.kinds import Kind
from bidflow.kinds.base import instance_drift
from bidflow.modeling.dataset import FeatureSpec

if TYPE_CHECKING:
    from bidflow.config import Config

COLOURS: Final = ("red", "green", "blue", "black")
START: Final = datetime(2026, 11, 2, tzinfo=UTC)


def spec(feast_columns: Sequence[str] = (), feature_service: str | None = None) -> FeatureSpec:
    return FeatureSpec(
        names=("colour", "size", *feast_columns),
        categorical=("colour",),
        label="bought",
        feature_service=feature_service,
    )


def load_rows(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    frame = pd.read_csv(source, dtype={"colour": str})
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    if since is not None:
        frame = frame[frame["ts"] >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame["ts"] < pd.Timestamp(until)]
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def entities(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    return load_rows(config, source, since, until).rename(columns={"ts": "event_timestamp"})


def default_source(config: Config) -> Path:
    return config.paths.raw / "toy.csv"


def write_rows(path: Path, hours: int = 5, per_hour: int = 3_000, seed: int = 0) -> Path:
    """Shoppers whose buying depends on colour and size, ``per_hour`` an hour from ``START``."""
    rng = np.random.default_rng(seed)
    n = hours * per_hour
    colour = rng.choice(COLOURS, size=n)
    size = rng.uniform(0, 10, size=n).round(2)
    logit = -2.5 + 1.5 * (colour == "red") - 0.8 * (colour == "black") + 0.25 * size
    bought = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    seconds = np.sort(rng.integers(0, hours * 3600, size=n))
    ts = [START + timedelta(seconds=int(s)) for s in seconds]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"ts": ts, "colour": colour, "size": size, "bought": bought}).to_csv(path, index=False)
    return path


KIND: Final = Kind(
    name="toy",
    summary="will a shopper buy? (a kind defined only in the tests)",
    feature_service=None,
    label="bought",
    registered_model="toy_model",
    spec=spec,
    load_rows=load_rows,
    entities=entities,
    default_source=default_source,
    served_model="bidflow.serving.tabular:TabularModel",
    bias_slices=("colour",),
    drift=instance_drift(categorical=("colour",), numeric=("size",)),
    replay="instances",
)
# The same kind without a drift shape: what the monitor refuses to watch.
UNWATCHED: Final = replace(KIND, drift=None)
