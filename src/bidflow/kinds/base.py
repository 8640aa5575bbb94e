"""What a model kind tells the loop: one frozen object per kind."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pandas as pd

    from bidflow.config import Config
    from bidflow.modeling.dataset import FeatureSpec

SpecBuilder = Callable[[Sequence[str], "str | None"], "FeatureSpec"]
RowLoader = Callable[["Config", Path, "datetime | None", "datetime | None"], "pd.DataFrame"]
SourceDefault = Callable[["Config"], Path]
EntityBuilder = Callable[["Config", Path, "datetime | None", "datetime | None"], "pd.DataFrame"]

SCORE: Final = "score"  # the model's prediction, the monitored column every kind has
MISSING: Final = "unknown"  # the category label of an absent value (as the OpenRTB transform writes it)


@dataclass(frozen=True)
class Exploration:
    """A served row the model did not filter (every partner called), waiting for the exchange's outcome.

    Attributes:
        id: the key the outcome is reported under (the auction id).
        would_call: per partner, whether the model would have called it (score >= threshold).
    """

    id: str
    would_call: Mapping[str, bool]


@dataclass(frozen=True)
class ServedRow:
    """One monitored row of served traffic.

    Attributes:
        values: the kind's drift columns and ``score`` (NaN: no score).
        score: the row's score (None: the model gave none), kept apart for the score PSI.
        exploration: set when the row can be matched with a reported outcome (online recall).
    """

    values: dict[str, Any]
    score: float | None
    exploration: Exploration | None = None


ServedRows = Callable[[Mapping[str, Any], Mapping[str, Any], int], list[ServedRow]]
ReferenceRows = Callable[["pd.DataFrame"], "pd.DataFrame"]


@dataclass(frozen=True)
class DriftShape:
    """How the drift monitor sees a kind's traffic: its columns and the two mappings onto them.

    The served mapping and the reference mapping must give the same columns with the same labels:
    the detector is fitted on one and judges the other.

    Attributes:
        categorical: columns tested by Chi-square on category counts.
        numeric: columns tested by Kolmogorov-Smirnov (``score`` comes on top, always numeric).
        served: (request body, response body, default ts in ms) of one served call -> its rows.
        reference: held-out rows with the model's ``score`` column -> reference rows (the drift columns
            and ``score``).
    """

    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    served: ServedRows
    reference: ReferenceRows

    @property
    def columns(self) -> tuple[str, ...]:
        """Every monitored column: the categorical ones, the numeric ones, then ``score``."""
        return (*self.categorical, *self.numeric, SCORE)


def instance_drift(categorical: Sequence[str], numeric: Sequence[str]) -> DriftShape:
    """The drift shape of a kind served as named-field instances (v1 ``{"instances": [{field: value}]}``).

    One row per instance: its ``categorical`` fields as labels, its ``numeric`` fields, and the
    prediction it got as ``score``. An instance without a number in a numeric field is left out
    (K-S needs numbers; a model may still score it), on both sides.
    """
    cats, nums = tuple(categorical), tuple(numeric)

    def served(request: Mapping[str, Any], response: Mapping[str, Any], ts_ms: int) -> list[ServedRow]:
        return instance_rows(request, response, cats, nums)

    def reference(frame: pd.DataFrame) -> pd.DataFrame:
        return instance_reference(frame, cats, nums)

    return DriftShape(cats, nums, served, reference)


def instance_rows(
    request: Mapping[str, Any], response: Mapping[str, Any], categorical: Sequence[str], numeric: Sequence[str]
) -> list[ServedRow]:
    """Rows of a v1 instances call: one per instance, paired with its prediction.

    Raises:
        ValueError: instances and predictions differ in number, or a prediction is not a number.
        KeyError, TypeError: the bodies are not v1 instances and predictions.
    """
    rows = []
    for instance, prediction in zip(request["instances"], response["predictions"], strict=True):
        score = None if prediction is None else float(prediction)
        values: dict[str, Any] = {name: category_label(instance.get(name)) for name in categorical}
        values.update({name: _number(instance.get(name)) for name in numeric})
        if any(math.isnan(values[name]) for name in numeric):
            continue
        values[SCORE] = math.nan if score is None else score
        rows.append(ServedRow(values, score))
    return rows


def instance_reference(frame: pd.DataFrame, categorical: Sequence[str], numeric: Sequence[str]) -> pd.DataFrame:
    """Held-out rows (with ``score``) as the monitor sees served instances: labels as ``instance_rows`` writes them."""
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    for name in categorical:
        out[name] = [category_label(v) for v in frame[name].tolist()]
    for name in numeric:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    out[SCORE] = frame[SCORE].astype("float64")
    return out.dropna(subset=list(numeric)).reset_index(drop=True)


def category_label(value: Any) -> str:
    """A category as text, the same whether JSON or a file carried it: 4, 4.0 and "4" are all '4'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):  # a numpy scalar from a frame
        return category_label(value.item())
    return str(value)


def _number(value: Any) -> float:
    """A numeric field as a float; absent or unreadable is NaN."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


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
        bias_slices: the columns its bias gate slices by (None: ``fairness.slices``).
        drift: how the drift monitor maps its served traffic and its held-out rows onto monitored
            columns (None: it is not watched, and no drift reference is written for it).
        replay: how its traffic is replayed through the router (``openrtb``: auction logs;
            ``instances``: its rows as KServe v1 instances; None: not replayable).
        request_fields: the fields one of its scoring requests carries, when they are not the
            model's own columns (``spec((), None).names``): keys of its online features, or a raw
            value a column is derived from (the fraud kind sends ``click_time``, not ``hour``).
        partner_column: the column naming the demand partner of a row; set, the kind is
            ``thresholded``.
        commands: the ``bidflow`` command group that fits, gates and replays a kind that does not
            go through the tabular loop (XGBoost ``train``/``evaluate``/``fairness``/``explain``, Feast
            training sets, canary deployment with a scored drift reference); None: it does. Set, the
            tabular commands refuse the kind and point at the group (``require_tabular``), and its
            ``spec``/``load_rows``/``entities`` are never called.
        gates: the gates whose ``gate.<name>`` tag must read ``passed`` on a version before
            ``bidflow promote`` (and the pipeline's registration) accepts it.
        panels: ``module:function`` giving the kind's own rows of its economics dashboard, called
            as ``function(selector)`` with the PromQL selector of its servers (None: the rows every
            kind gets are all; see ``bidflow.observability.dashboards``).
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
    bias_slices: tuple[str, ...] | None = None
    drift: DriftShape | None = None
    replay: str | None = None
    request_fields: tuple[str, ...] | None = None
    partner_column: str | None = None
    commands: str | None = None
    gates: tuple[str, ...] = ("evaluation", "fairness")
    panels: str | None = None

    @property
    def tabular(self) -> bool:
        """It trains through the tabular loop (rows, a feature spec, XGBoost), not its own commands."""
        return self.commands is None

    def require_tabular(self, command: str) -> None:
        """Refuse ``command`` (a tabular command, e.g. ``train``) for a kind that has its own commands.

        Raises:
            ConfigError: the kind fits and gates with its own command group.
        """
        if self.commands is None:
            return
        from bidflow.errors import ConfigError

        raise ConfigError(
            f"model kind '{self.name}' does not go through `bidflow {command}`",
            expected="a kind trained on rows with XGBoost (`bidflow kinds` lists each kind's loop)",
            got=self.name,
            hint=f"use `bidflow {self.commands} --help`: it fits, replays and gates this kind",
        )

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields of one scoring request (replays send these columns of its rows)."""
        return self.request_fields if self.request_fields is not None else self.spec((), None).names

    @property
    def thresholded(self) -> bool:
        """Scores become call/skip decisions per partner: per-partner thresholds from
        ``evaluate.target_bid_recall``, the calls-saved economics and online labels from explored auctions.
        """
        return self.partner_column is not None

    @property
    def drift_features(self) -> tuple[str, ...]:
        """The columns the drift monitor watches for the kind, besides its score (empty: none)."""
        return () if self.drift is None else (*self.drift.categorical, *self.drift.numeric)
