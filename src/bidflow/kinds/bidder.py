"""The bidder: how much to bid for an auction, under a budget, from its pCTR and the market's bid landscape.

Unlike the tabular kinds it is not an XGBoost model over rows: it is a campaign's bid landscape and
four bidding policies fitted per budget level (``bidflow.bidding``), judged by replaying logged
auctions. It fits, replays and gates with its own commands (``bidflow bidder ...``) and pipeline;
the tabular commands refuse it with a pointer there (``Kind.require_tabular``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

from bidflow.kinds.base import Kind, instance_drift

if TYPE_CHECKING:
    import pandas as pd

    from bidflow.config import Config
    from bidflow.modeling.dataset import FeatureSpec

NAME: Final = "bidder"
GATE: Final = "replay"  # the one gate a version passes before promotion: ``gate.replay``
# What the monitor watches per served bid request: the campaign and the pCTR it came with (the bid is the score).
DRIFT_CATEGORICAL: Final = ("campaign",)
DRIFT_NUMERIC: Final = ("pctr",)


def _not_rows(what: str) -> NoReturn:
    from bidflow.errors import ConfigError

    raise ConfigError(
        f"the {NAME} kind has no {what}: it is fitted on auction logs, not trained on rows",
        hint=f"use `bidflow {NAME} --help`",
    )


def spec(feast_columns: Sequence[str] = (), feature_service: str | None = None) -> FeatureSpec:
    """None: a bidder has no feature spec (the tabular commands refuse it before asking)."""
    _not_rows("feature spec")


def load_rows(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """None: its logged auctions are read by ``bidflow.bidding.auctions``."""
    _not_rows("training rows")


def entities(config: Config, source: Path, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """None: it has no Feast entities."""
    _not_rows("Feast entities")


def default_source(config: Config) -> Path:
    """The folder of the campaign's auction files (``bidder.data``)."""
    return config.bidder.data


KIND: Final = Kind(
    name=NAME,
    summary="how much to bid under a budget: bid landscape + budget-aware policy, gated by replaying auctions",
    feature_service=None,
    label="click",
    registered_model=NAME,
    spec=spec,
    load_rows=load_rows,
    entities=entities,
    default_source=default_source,
    served_model="bidflow.serving.bidder:BidderModel",
    pipeline="bidflow.pipelines.bidder:bidder_pipeline",
    pipeline_source="auction_data",
    drift=instance_drift(DRIFT_CATEGORICAL, DRIFT_NUMERIC),
    replay=None,
    commands=NAME,
    gates=(GATE,),
    panels="bidflow.observability.bidder_panels:rows",
)
