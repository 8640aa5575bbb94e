"""What a model kind tells the loop: one frozen object per kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from bidflow.config import Config
    from bidflow.modeling.dataset import FeatureSpec

SpecBuilder = Callable[[Sequence[str], "str | None"], "FeatureSpec"]
RowLoader = Callable[["Config", Path, "datetime | None", "datetime | None"], "pd.DataFrame"]
SourceDefault = Callable[["Config"], Path]
EntityBuilder = Callable[["Config", Path, "datetime | None", "datetime | None"], "pd.DataFrame"]


@dataclass(frozen=True)
class Kind:
    """One model kind.

    Attributes:
        name: the registry key; also the name of its pipeline, its ``train.<name>`` section and
            the ``--kind``/``--model`` value of every command.
        summary: one line for ``bidflow kinds`` and ``--help``.
        feature_service: the Feast FeatureService its training set and online reads use (None:
            it has none and trains on the columns of its rows, ``train.<kind>.feature_source: request``).
        label: the label column of its rows.
        registered_model: its registered model name in MLflow (``registry.models`` may rename it).
        spec: the feature spec from the service's aggregated columns and the service name
            (no columns and no service: the request features alone).
        load_rows: its raw rows from a source path in a UTC window, sorted by time, with ``ts``.
        entities: Feast entity rows (join keys, ``event_timestamp``, label) from a source path in a
            UTC window, for ``bidflow features training-set``.
        default_source: where its rows are when no source is given.
        served_model: ``module:Class`` of its ``kserve.Model`` (constructed as
            ``Class(name, config, source, options)``).
        pipeline: ``module:function`` of its ``@dsl.pipeline``; None: it has none (CLI steps only).
        pipeline_source: the pipeline's data parameter (``raw_logs``: generated or given auction
            logs; any other name: the kind's ``default_source`` path).
        thresholded: scores become call/skip decisions per partner (per-partner thresholds from
            ``evaluate.target_bid_recall`` and the calls-saved economics); otherwise a plain score.
        bias_slices: the columns its bias gate slices by (None: ``fairness.slices``).
        drift_features: the request features the drift monitor watches for it (empty: none).
        replay: how its traffic is replayed through the router (``openrtb``: auction logs;
            ``instances``: its rows as KServe v1 instances; None: not replayable).
        partner_column: the column naming the demand partner of a row (thresholded kinds).
    """

    name: str
    summary: str
    feature_service: str | None
    label: str
    registered_model: str
    spec: SpecBuilder
    load_rows: RowLoader
    entities: EntityBuilder
    default_source: SourceDefault
    served_model: str
    pipeline: str | None = None
    pipeline_source: str = "raw_logs"
    thresholded: bool = False
    bias_slices: tuple[str, ...] | None = None
    drift_features: tuple[str, ...] = ()
    replay: str | None = None
    partner_column: str | None = None
