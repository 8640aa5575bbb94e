"""Why a model scored a row as it did: exact TreeSHAP contributions, named in the user's terms.

XGBoost computes the contributions itself (``Booster.predict(..., pred_contribs=True)``): per row
one value per feature plus a bias, in the model's margin (log-odds), and they add up to the margin
exactly (TreeSHAP is exact for trees).
The ``shap`` package would compute the same numbers; its plots do not earn a dependency that pins
numpy and numba ranges of its own, so the summary plot here is drawn with matplotlib like every other
report figure.

Contributions are in log-odds, not probability: only there do they add up. A positive value pushes
the score up. Feature names are the user's: a categorical feature shows its decoded value (the
vocabulary entry of its code, ``unseen`` for code 0), a Feast column ``view__feature`` is written as
Feast writes a feature reference, ``view:feature``.

Used by the model servers' ``:explain`` route (``bidflow.serving``), the evaluation and bias reports,
``bidflow explain`` and the drift monitor's attribution of a rollback (``shift``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from bidflow.errors import ModelError
from bidflow.modeling.dataset import UNSEEN_CODE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bidflow.modeling.dataset import FeatureSpec
    from bidflow.modeling.train import TrainedModel

UNSEEN: Final = "unseen"  # how an explanation shows a category the model has no code for
ADDITIVITY_TOLERANCE: Final = 1e-4  # |sum of contributions + base - margin| allowed (float32 sums in xgboost)

FloatMatrix = npt.NDArray[np.float32]


def feature_label(name: str, spec: FeatureSpec) -> str:
    """The name a user knows a model column by: Feast's ``view:feature`` for a FeatureService column."""
    if spec.feature_service is not None and "__" in name:
        view, _, feature = name.partition("__")
        return f"{view}:{feature}"
    return name


@dataclass(frozen=True)
class Contribution:
    """One feature's part in one score.

    Attributes:
        feature: the user's name of the feature (``feature_label``).
        value: the row's value of it: a category's decoded label, a number, or None (missing).
        contribution: what it adds to the margin (log-odds; positive raises the score).
    """

    feature: str
    value: str | float | None
    contribution: float

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(frozen=True)
class Contributions:
    """TreeSHAP contributions of a model for some rows.

    Attributes:
        features: the user's names of the model's columns, in the model's order.
        values: (rows, features) contributions to the margin, float64.
        base: the base value, the same for every row (the model's expected margin).
        margin: (rows,) the model's margin for each row (log-odds); ``values.sum(1) + base``.
    """

    features: tuple[str, ...]
    values: npt.NDArray[np.float64]
    base: float
    margin: npt.NDArray[np.float64]

    @property
    def scores(self) -> npt.NDArray[np.float64]:
        """The probabilities the contributions explain (the sigmoid of the margin)."""
        out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-self.margin))
        return out

    def mean_abs(self) -> dict[str, float]:
        """Mean |contribution| per feature, largest first: what drives the model over these rows."""
        means = np.abs(self.values).mean(axis=0) if len(self.values) else np.zeros(len(self.features))
        order = np.argsort(-means, kind="stable")
        return {self.features[j]: float(means[j]) for j in order}

    def means(self, rows: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.float64]:
        """Mean contribution per feature over ``rows`` (a mask; None: all rows)."""
        values = self.values if rows is None else self.values[rows]
        out: npt.NDArray[np.float64] = values.mean(axis=0) if len(values) else np.zeros(len(self.features))
        return out

    def additivity_error(self, margin: npt.NDArray[np.float64]) -> float:
        """Largest |contributions + base - margin| over the rows, against a margin computed elsewhere."""
        if not len(margin):
            return 0.0
        return float(np.max(np.abs(self.values.sum(axis=1) + self.base - margin)))


def contributions(model: TrainedModel, x: FloatMatrix, *, nthread: int | None = None) -> Contributions:
    """TreeSHAP contributions of ``model`` for the encoded rows ``x`` (``TrainedModel.matrix``).

    ``nthread``: threads XGBoost builds its matrix with (None: every core). A model server passes 1:
    the booster's own ``nthread`` does not reach the matrix, and OpenMP threads spinning on a core
    that serves requests cost several times the work itself.

    Raises:
        ModelError: ``x`` is not the model's width.
    """
    import xgboost as xgb

    names = model.spec.names
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ModelError("rows to explain are not the model's width", expected=str(len(names)), got=str(x.shape))
    dmatrix = xgb.DMatrix(x, feature_names=list(names), missing=np.nan, nthread=nthread)
    raw = np.asarray(model.booster.predict(dmatrix, pred_contribs=True), dtype=np.float64)
    values, bias = raw[:, :-1], raw[:, -1]
    base = float(bias[0]) if len(bias) else _base_margin(model)
    return Contributions(
        features=tuple(feature_label(n, model.spec) for n in names),
        values=np.ascontiguousarray(values),
        base=base,
        margin=values.sum(axis=1) + bias,
    )


def margins(model: TrainedModel, x: FloatMatrix) -> npt.NDArray[np.float64]:
    """The model's margin (log-odds) for ``x``, computed by XGBoost's prediction (not by the contributions)."""
    import xgboost as xgb

    dmatrix = xgb.DMatrix(x, feature_names=list(model.spec.names), missing=np.nan)
    return np.asarray(model.booster.predict(dmatrix, output_margin=True), dtype=np.float64)


def decoded(model: TrainedModel, column: int, value: float) -> str | float | None:
    """A matrix value as the user wrote it: a category's label, a number, or None when missing."""
    name = model.spec.names[column]
    if name in model.encoder.vocabularies:
        code = int(value) if math.isfinite(value) else UNSEEN_CODE
        vocabulary = model.encoder.vocabularies[name]
        return vocabulary[code - 1] if 0 < code <= len(vocabulary) else UNSEEN
    return None if math.isnan(value) else float(value)


def top_contributions(
    model: TrainedModel, features: Sequence[str], values: npt.NDArray[np.float64], x_row: FloatMatrix, top: int
) -> list[Contribution]:
    """The ``top`` features of one row by |contribution| (all of them when ``top`` is 0), largest first."""
    order = np.argsort(-np.abs(values), kind="stable")
    if top > 0:
        order = order[:top]
    return [Contribution(features[j], decoded(model, int(j), float(x_row[j])), float(values[j])) for j in order]


def shift(reference: Mapping[str, float], current: Mapping[str, float], top: int = 3) -> list[dict[str, float | str]]:
    """Features whose mean contribution moved most from ``reference`` to ``current`` (by |shift|).

    The shifts add up to the move of the mean margin (TreeSHAP is additive), so they say how much of
    a changed score each feature accounts for, not only that its input moved.
    """
    names = [n for n in current if n in reference]
    moved = sorted(names, key=lambda n: -abs(current[n] - reference[n]))[: max(top, 0)]
    return [
        {"feature": n, "shift": current[n] - reference[n], "reference": reference[n], "current": current[n]}
        for n in moved
    ]


def describe_shift(moved: Sequence[Mapping[str, Any]]) -> str:
    """``shift``'s result as one line for a rollback reason: ``partner (+0.412), country (-0.120)``."""
    return ", ".join(f"{m['feature']} ({float(m['shift']):+.3f})" for m in moved)


def sample_rows(n: int, max_rows: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """Row positions to explain: all of them, or a seeded sample of ``max_rows`` in their original order."""
    if n <= max_rows:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False)).astype(np.int64)


def summary_figure(found: Contributions, x: FloatMatrix, title: str, max_features: int = 15) -> Figure:
    """Distribution of contributions per feature (the most important on top), each dot coloured by its value.

    A feature's values are coloured by their rank among the rows (low blue, high red; categories by
    code, which orders them by training frequency), so the plot shows which way a feature pushes.
    """
    from matplotlib.figure import Figure

    ranked = list(found.mean_abs())[:max_features]
    index = {name: j for j, name in enumerate(found.features)}
    figure = Figure(figsize=(7.0, 0.35 * len(ranked) + 1.4), layout="constrained")
    ax = figure.subplots()
    rng = np.random.default_rng(0)
    for position, name in enumerate(reversed(ranked)):
        j = index[name]
        values = found.values[:, j]
        colour = _rank(x[:, j].astype(np.float64))
        jitter = rng.uniform(-0.3, 0.3, len(values))
        ax.scatter(values, position + jitter, c=colour, cmap="coolwarm", vmin=0.0, vmax=1.0, s=4, alpha=0.6,
                   linewidths=0, rasterized=True)  # fmt: skip
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(ranked)), list(reversed(ranked)))
    ax.set(xlabel="contribution to the score (log-odds)", title=title)
    return figure


def _rank(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Values as their rank in [0, 1] (missing values in the middle)."""
    out = np.full(len(values), 0.5)
    known = ~np.isnan(values)
    if known.sum() > 1:
        order = np.argsort(np.argsort(values[known], kind="stable"), kind="stable")
        out[known] = order / (known.sum() - 1)
    return out


def _base_margin(model: TrainedModel) -> float:
    """The model's expected margin when there are no rows to read it from (an empty request)."""
    width = len(model.spec.names)
    found = contributions(model, np.full((1, width), np.nan, dtype=np.float32))
    return found.base
