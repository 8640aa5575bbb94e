"""Invalid clicks: the probability that a click is genuine and converts (TalkingData AdTracking).

Scores one click (ip, app, device, os, channel, click time) from its ids, its hour and the streaming
velocity features of its IP, IP x app and IP x device x os (Feast FeatureService ``fraud``: written
online by ``bidflow stream process``, offline by ``bidflow fraud features`` with the same state
machine). It goes through the tabular loop like the other kinds (train, evaluate against the
champion with PR-AUC gated, bias by device / os / app, register, canary, drift, rollback); ``bidflow
fraud train`` measures it against a logistic regression and a plain XGBoost on the raw ids, and
``bidflow fraud replay`` drives a day of clicks through the stream and the served model.
"""

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

NAME: Final = "fraud"
LABEL: Final = "is_attributed"
CLICK_TIME: Final = "click_time"  # UTC seconds: what a scoring request carries instead of ``ts``
# The model's own columns besides the FeatureService's: the ids are numbers to the trees (an id's
# neighbours mean nothing, but XGBoost isolates busy ids in a few splits, and unseen ids need no code).
RAW: Final = ("app", "device", "os", "channel", "hour")
# A scoring request: the raw ids, the FeatureService's join key ``ip`` and the click time (the server
# derives ``hour`` from it and reads the velocity rows as of it).
REQUEST_FIELDS: Final = ("ip", "app", "device", "os", "channel", CLICK_TIME)
# What the monitor watches per scored click: the click's ids (Chi-square on their counts).
DRIFT_CATEGORICAL: Final = ("app", "device", "os", "channel")


def spec(feast_columns: Sequence[str] = (), feature_service: str | None = None) -> FeatureSpec:
    """The click's ids and hour, plus the FeatureService's velocity columns."""
    from bidflow.modeling.dataset import FeatureSpec

    return FeatureSpec(names=(*RAW, *feast_columns), categorical=(), label=LABEL, feature_service=feature_service)


def load_rows(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """The TalkingData clicks in the window, sorted by time: ``ts`` (UTC), ``click_time`` (seconds), ``hour``.

    Raises:
        InputError: not a TalkingData click file.
        ModelError: no click falls in the window.
    """
    import pandas as pd

    from bidflow.errors import ModelError
    from bidflow.features.talkingdata import read_clicks

    frame = read_clicks(source)
    seconds = frame["ts"]
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= seconds >= int(since.timestamp())
    if until is not None:
        keep &= seconds < int(until.timestamp())
    if not keep.any():
        raise ModelError("no TalkingData clicks in the requested window", got=f"{since} .. {until}")
    out = frame[keep].rename(columns={"ts": CLICK_TIME}).reset_index(drop=True)
    out["hour"] = (out[CLICK_TIME] // 3600) % 24
    out["ts"] = pd.to_datetime(out[CLICK_TIME], unit="s", utc=True)
    return out


def entities(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """One entity row per click: the join keys, ``event_timestamp`` (the click's time) and the label."""
    from bidflow.features.velocity import KEYS

    rows = load_rows(config, source, since, until)
    keys = list(dict.fromkeys(key for view in KEYS.values() for key in view))
    return rows[[LABEL, *keys]].assign(event_timestamp=rows["ts"])


def default_source(config: Config) -> Path:
    return config.fraud.source


KIND: Final = Kind(
    name=NAME,
    summary="probability that a click is genuine and converts (TalkingData), with streaming velocity features",
    feature_service="fraud",
    label=LABEL,
    registered_model="fraud_talkingdata",
    spec=spec,
    load_rows=load_rows,
    entities=entities,
    default_source=default_source,
    served_model="bidflow.serving.fraud:FraudModel",
    pipeline="bidflow.pipelines.fraud:fraud_pipeline",
    pipeline_source="clicks",
    bias_slices=("device", "os", "app"),
    drift=instance_drift(DRIFT_CATEGORICAL, ()),
    replay="instances",
    request_fields=REQUEST_FIELDS,
)
