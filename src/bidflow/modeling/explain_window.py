"""Explanations of a whole held-out window, for the gate reports.

Two questions, both answered with the TreeSHAP contributions of ``bidflow.modeling.explain``:

* the evaluation report: what drives each model over the window (mean |contribution| per feature,
  candidate and champion on the same rows);
* the bias report: what sets a slice's scores apart from the population's. Per feature, the mean
  contribution in the slice minus the mean over all explained rows. TreeSHAP is additive, so
  these differences add up exactly to the slice's mean margin minus the overall mean margin (the
  base value cancels): the table accounts for the whole gap, not only for which inputs differ.

Reports explain a seeded sample of at most ``explain.max_rows`` rows (``sample_rows``): TreeSHAP
costs a tree walk per row and feature, and a mean over 20,000 rows is already steady.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from itertools import zip_longest
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bidflow.modeling.explain import Contributions, contributions, sample_rows, summary_figure

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from bidflow.config import ExplainConfig
    from bidflow.modeling.fairness import FairnessReport, SliceResult
    from bidflow.modeling.train import TrainedModel

FloatMatrix = npt.NDArray[np.float32]
BoolMask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ModelExplanation:
    """What drives one model over the explained rows of a window.

    Attributes:
        role: "candidate" or "champion".
        ref: how the report names the model.
        found: the contributions of the explained rows.
        x: those rows, encoded (the summary plot colours each dot by its feature's value).
    """

    role: str
    ref: str
    found: Contributions = field(repr=False)
    x: FloatMatrix = field(repr=False)

    @property
    def rows(self) -> int:
        return len(self.found.values)

    @cached_property
    def mean_abs(self) -> dict[str, float]:
        """Mean |contribution| per feature (log-odds), largest first."""
        return self.found.mean_abs()

    def figure(self, max_features: int) -> Figure:
        """The summary plot: each feature's contributions over the rows, the most important on top."""
        return summary_figure(self.found, self.x, f"{self.role}: {self.ref}", max_features)

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "rows": self.rows, "base_value": self.found.base, "mean_abs": self.mean_abs}


def explain_model(model: TrainedModel, x: FloatMatrix, cfg: ExplainConfig, *, role: str, ref: str) -> ModelExplanation:
    """Contributions of ``model`` for a seeded sample of at most ``cfg.max_rows`` of the encoded rows ``x``.

    The sample depends on the number of rows only, so two models explained on the same window are
    explained on the same rows.
    """
    rows = sample_rows(len(x), cfg.max_rows)
    sample = np.ascontiguousarray(x[rows])
    return ModelExplanation(role, ref, contributions(model, sample), sample)


@dataclass(frozen=True)
class FeatureShift:
    """One feature's mean contribution in a slice against its mean over all explained rows (log-odds)."""

    feature: str
    slice_mean: float
    overall_mean: float

    @property
    def difference(self) -> float:
        return self.slice_mean - self.overall_mean

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "slice": self.slice_mean,
            "overall": self.overall_mean,
            "difference": self.difference,
        }


@dataclass(frozen=True)
class SliceAttribution:
    """Which features push one slice's scores away from the population's.

    Attributes:
        slice: the slice's name, ``feature=value``.
        failing: whether the bias gate failed it.
        rows: explained rows in the slice.
        margin_difference: the slice's mean margin minus the overall mean margin (log-odds).
        features: the features with the largest |difference|, largest first.
        rest: the sum of the other features' differences.
        others: how many features ``rest`` sums.
    """

    slice: str
    failing: bool
    rows: int
    margin_difference: float
    features: tuple[FeatureShift, ...]
    rest: float
    others: int

    @property
    def total(self) -> float:
        """The differences summed over every feature: ``margin_difference`` (TreeSHAP is additive)."""
        return sum(f.difference for f in self.features) + self.rest

    def to_json(self) -> dict[str, Any]:
        return {
            "slice": self.slice,
            "failing": self.failing,
            "rows": self.rows,
            "margin_difference": self.margin_difference,
            "features": [f.to_json() for f in self.features],
            "other_features": {"count": self.others, "difference": self.rest},
        }


@dataclass(frozen=True)
class SliceExplanations:
    """The bias report's explanations: the slices explained and how they were chosen.

    Attributes:
        window: rows in the window; ``rows`` of them (a seeded sample when fewer) were explained.
        rows: explained rows.
        base: the model's base value (log-odds).
        mean_margin: the mean margin over the explained rows (log-odds).
        selection: how the slices were chosen, as a sentence.
        slices: the explained slices.
    """

    window: int
    rows: int
    base: float
    mean_margin: float
    selection: str
    slices: tuple[SliceAttribution, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "window_rows": self.window,
            "rows": self.rows,
            "base_value": self.base,
            "mean_margin": self.mean_margin,
            "selection": self.selection,
            "slices": [s.to_json() for s in self.slices],
        }


def slice_attribution(found: Contributions, mask: BoolMask, *, name: str, top: int, failing: bool) -> SliceAttribution:
    """Per feature, the mean contribution in the ``mask`` rows minus the mean over all rows.

    Args:
        found: the contributions of every explained row.
        mask: the slice's rows among them (at least one).
        name: the slice's name.
        top: features listed, by |difference| (0: every feature).
        failing: whether the gate failed the slice.
    """
    overall, inside = found.means(), found.means(mask)
    difference = inside - overall
    order = np.argsort(-np.abs(difference), kind="stable")
    shown, hidden = (order[:top], order[top:]) if top > 0 else (order, order[:0])
    return SliceAttribution(
        slice=name,
        failing=failing,
        rows=int(mask.sum()),
        margin_difference=float(found.margin[mask].mean() - found.margin.mean()),
        features=tuple(FeatureShift(found.features[j], float(inside[j]), float(overall[j])) for j in shown),
        rest=float(difference[hidden].sum()),
        others=len(hidden),
    )


def slices_to_explain(report: FairnessReport, worst: int) -> tuple[list[SliceResult], str]:
    """The failing slices; when none fails, the ``worst`` slices by recall gap and by calibration gap.

    The two gaps are on different scales, so the worst of each are taken in turn rather than ranked
    together. Only gated slices count when there are any: an ungated slice is too small for its
    gap to mean much. Returns the slices and a sentence saying how they were chosen.
    """
    if report.failing:
        return report.failing, "every failing slice"
    pool = [s for s in report.slices if s.gated] or list(report.slices)
    by_recall = sorted((s for s in pool if s.recall_gap > 0), key=lambda s: -s.recall_gap)
    by_calibration = sorted((s for s in pool if np.isfinite(s.calibration_gap)), key=lambda s: -s.calibration_gap)
    chosen: dict[str, SliceResult] = {}
    for pair in zip_longest(by_recall, by_calibration):
        for s in pair:
            if s is not None and len(chosen) < worst:
                chosen.setdefault(s.name, s)
    return list(chosen.values()), f"no slice fails: the {worst} worst by recall gap and by calibration gap"


def explain_slices(
    model: TrainedModel, frame: pd.DataFrame, report: FairnessReport, cfg: ExplainConfig
) -> SliceExplanations:
    """Contribution differences of the slices ``slices_to_explain`` picks, on a sample of ``frame``.

    A slice with no row in the sample is left out (only possible when the window exceeds
    ``cfg.max_rows`` and the slice is tiny).
    """
    from bidflow.modeling.fairness import slice_frame

    picked, selection = slices_to_explain(report, cfg.slices)
    rows = frame.iloc[sample_rows(len(frame), cfg.max_rows)]
    found = contributions(model, model.matrix(rows))
    columns, _ = slice_frame(rows, sorted({s.feature for s in picked}))
    masks = {s.name: (columns[s.feature] == s.value).to_numpy() for s in picked}
    explained = tuple(
        slice_attribution(found, masks[s.name], name=s.name, top=cfg.top, failing=bool(s.failures))
        for s in picked
        if masks[s.name].any()
    )
    return SliceExplanations(
        window=len(frame),
        rows=len(rows),
        base=found.base,
        mean_margin=float(found.margin.mean()) if len(rows) else 0.0,
        selection=selection,
        slices=explained,
    )
