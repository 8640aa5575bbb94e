"""Invalid clicks: the probability that a click is genuine and converts (TalkingData AdTracking).

Scores one click (ip, app, device, os, channel, click time) from its ids and the streaming velocity
features of its IP, IP x app and IP x device x os (Feast FeatureService ``fraud``, written online by
``bidflow stream process``). It fits and is judged with its own commands (``bidflow fraud ...``):
XGBoost against a logistic regression and a plain XGBoost on the raw ids, on a time hold-out; the
tabular commands refuse it with a pointer there (``Kind.require_tabular``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

from bidflow.kinds.base import Kind

if TYPE_CHECKING:
    import pandas as pd

    from bidflow.config import Config
    from bidflow.modeling.dataset import FeatureSpec

NAME: Final = "fraud"


def _not_tabular(what: str) -> NoReturn:
    from bidflow.errors import ConfigError

    raise ConfigError(
        f"the {NAME} kind has no {what} for the tabular loop: it trains with its own commands",
        hint=f"use `bidflow {NAME} --help`",
    )


def spec(feast_columns: Sequence[str] = (), feature_service: str | None = None) -> FeatureSpec:
    """None: its columns are ``bidflow.modeling.fraud.RAW`` + ``VELOCITY`` (the tabular commands refuse it first)."""
    _not_tabular("feature spec")


def load_rows(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """The TalkingData clicks in the window, sorted by time, with ``ts`` (UTC seconds)."""
    from bidflow.features.talkingdata import read_clicks

    frame = read_clicks(source)
    if since is not None:
        frame = frame[frame["ts"] >= int(since.timestamp())]
    if until is not None:
        frame = frame[frame["ts"] < int(until.timestamp())]
    return frame.reset_index(drop=True)


def entities(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """None: its training rows are built by ``bidflow.modeling.fraud.feature_frame``."""
    _not_tabular("Feast entity rows")


def default_source(config: Config) -> Path:
    return config.fraud.source


KIND: Final = Kind(
    name=NAME,
    summary="probability that a click is genuine and converts (TalkingData), with streaming velocity features",
    feature_service="fraud",
    label="is_attributed",
    registered_model="fraud_talkingdata",
    spec=spec,
    load_rows=load_rows,
    entities=entities,
    default_source=default_source,
    served_model="bidflow.serving.fraud:FraudModel",
    pipeline=None,
    pipeline_source="clicks",
    bias_slices=("device", "os", "app"),
    drift=None,
    replay=None,
    commands=NAME,
)
