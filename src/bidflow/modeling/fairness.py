"""The bias gate: does the filter treat some traffic worse than the rest?

Per slice (channel, world region, country, device type, format, partner -- publisher tier is not a
column of the data) fairlearn's ``MetricFrame`` computes:

* the filter's **bid recall** at the model's own thresholds, exploration applied (what the slice's
  sellers experience: the share of their bids that still reach the auction);
* its **calibration gap** ``|mean score - bid rate|`` (calibration in the large: a model whose
  scores are depressed for one country shows it here first), and the expected calibration error
  (reported, not gated: with few rows per bin it is mostly noise).

A slice fails when its recall is more than ``max_recall_gap`` *below* the overall recall, or its
calibration gap more than ``max_calibration_gap`` *above* the overall one -- by more than
``confidence_z`` standard errors of the slice's estimate. Only harm counts (a slice served better
than average does not fail), and with some 60 slices a gate without the error allowance would fail
every model on sampling noise alone; a gate that fires on noise is soon ignored.

Small slices are reported but not gated (``min_slice_rows`` for calibration, ``min_slice_bids``
for recall).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from bidflow.errors import ModelError
from bidflow.modeling.metrics import expected_calibration_error

if TYPE_CHECKING:
    from bidflow.config import FairnessSettings

GEO: Final = "geo"
# World regions of the ISO-3166 alpha-3 countries; anything else is "other".
GEO_REGIONS: Final = {
    **dict.fromkeys(("USA", "CAN"), "north_america"),
    **dict.fromkeys(("MEX", "BRA", "ARG", "COL", "CHL", "PER"), "latin_america"),
    **dict.fromkeys(("GBR", "DEU", "FRA", "ESP", "ITA", "NLD", "BEL", "SWE", "POL", "AUT", "CHE", "IRL"), "europe"),
    **dict.fromkeys(("JPN", "KOR", "CHN", "TWN", "HKG"), "east_asia"),
    **dict.fromkeys(("IND", "IDN", "THA", "VNM", "PHL", "MYS", "SGP"), "south_asia"),
    **dict.fromkeys(("AUS", "NZL"), "oceania"),
    **dict.fromkeys(("ZAF", "NGA", "EGY", "ARE", "SAU", "TUR", "ISR"), "middle_east_africa"),
}


@dataclass(frozen=True)
class SliceResult:
    """One slice's metrics, its gaps to the overall values and why it fails (empty: it passes)."""

    feature: str
    value: str
    rows: int
    bids: int
    bid_recall: float
    calibration: float  # |mean score - bid rate|
    ece: float
    mean_prediction: float
    bid_rate: float
    recall_gap: float  # overall recall - slice recall (positive = the slice is worse)
    calibration_gap: float  # slice calibration - overall calibration (positive = the slice is worse)
    gated: bool
    failures: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.feature}={self.value}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"slice": self.name, "failures": list(self.failures)}


@dataclass(frozen=True)
class FairnessReport:
    """Overall metrics, every slice's, and the verdict."""

    overall: dict[str, float]
    slices: tuple[SliceResult, ...]
    skipped: tuple[str, ...]  # slice columns absent from the data

    @property
    def failing(self) -> list[SliceResult]:
        return [s for s in self.slices if s.failures]

    @property
    def passed(self) -> bool:
        return not self.failing

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failing_slices": [s.name for s in self.failing],
            "overall": self.overall,
            "slices": [s.to_json() for s in self.slices],
            "skipped_slice_columns": list(self.skipped),
        }


def slice_frame(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The slice columns as text (``geo`` derived from ``country``), and the names that are absent."""
    out: dict[str, pd.Series] = {}
    skipped = []
    for column in columns:
        if column == GEO and "country" in frame.columns:
            out[GEO] = frame["country"].astype(str).map(GEO_REGIONS).fillna("other")
        elif column in frame.columns:
            out[column] = frame[column].astype(str)
        else:
            skipped.append(column)
    return pd.DataFrame(out, index=frame.index), skipped


def fairness_report(
    frame: pd.DataFrame,
    y: npt.ArrayLike,
    scores: npt.ArrayLike,
    called: npt.ArrayLike | None,
    cfg: FairnessSettings,
    *,
    calibration_bins: int = 10,
) -> FairnessReport:
    """Slice metrics and the bias verdict.

    Args:
        frame: the held-out rows (holding the slice columns).
        y: their 0/1 labels (a bid).
        scores: the model's probabilities.
        called: whether the filter calls each row (None: not a filter; recall is not gated).
        cfg: the ``fairness`` configuration section.
        calibration_bins: bins of the expected calibration error.
    """
    from fairlearn.metrics import MetricFrame  # type: ignore[import-untyped]

    y_true = np.asarray(y, dtype=np.float64)
    y_score = np.asarray(scores, dtype=np.float64)
    if not len(y_true) == len(y_score) == len(frame):
        raise ModelError("labels, scores and rows differ in length", got=f"{len(y_true)}, {len(y_score)}, {len(frame)}")
    call = np.ones(len(y_true), dtype=bool) if called is None else np.asarray(called, dtype=bool)
    slices, skipped = slice_frame(frame, cfg.slices)
    if slices.empty:
        raise ModelError("none of the slice columns is in the data", expected=", ".join(cfg.slices))

    def ece(y_t: npt.NDArray[Any], y_p: npt.NDArray[Any]) -> float:
        return expected_calibration_error(y_t, y_p, calibration_bins)

    # fairlearn computes the gated metrics; plain counts and means come from a groupby (MetricFrame
    # converts every column to Python objects per metric, which is slow for metrics this simple).
    metrics = {
        "bid_recall": _recall,
        "calibration": lambda y_t, y_p: float(abs(np.mean(y_p) - np.mean(y_t))),
        "ece": ece,
    }
    params = {"bid_recall": {"called": call}}
    base = pd.DataFrame({"rows": 1.0, "bids": y_true, "mean_prediction": y_score, "bid_rate": y_true})
    sums = {"rows": "sum", "bids": "sum", "mean_prediction": "mean", "bid_rate": "mean"}
    results: list[SliceResult] = []
    overall: dict[str, float] = {}
    for column in slices.columns:
        mf = MetricFrame(
            metrics=metrics, y_true=y_true, y_pred=y_score, sensitive_features=slices[column], sample_params=params
        )
        overall = {k: float(v) for k, v in mf.overall.items()} | {
            "rows": float(len(y_true)),
            "bids": float(y_true.sum()),
            "mean_prediction": float(y_score.mean()),
            "bid_rate": float(y_true.mean()),
        }
        counts = base.groupby(slices[column].to_numpy()).agg(sums)
        by_group = mf.by_group.join(counts)
        for value, row in by_group.iterrows():
            results.append(_judge(column, str(value), row, overall, cfg, gate_recall=called is not None))
    return FairnessReport(overall=overall, slices=tuple(results), skipped=tuple(skipped))


def _recall(y_t: npt.NDArray[Any], y_p: npt.NDArray[Any], called: npt.NDArray[Any]) -> float:
    bids = np.asarray(y_t) > 0.5
    return float(np.asarray(called)[bids].mean()) if bids.any() else float("nan")


def _judge(
    feature: str, value: str, row: pd.Series, overall: dict[str, float], cfg: FairnessSettings, *, gate_recall: bool
) -> SliceResult:
    rows, bids = int(row["rows"]), int(row["bids"])
    recall, calibration, rate = float(row["bid_recall"]), float(row["calibration"]), float(row["bid_rate"])
    recall_gap = overall["bid_recall"] - recall
    calibration_gap = calibration - overall["calibration"]
    # Standard errors of the slice's estimates (binomial); the gap must clear them z times over.
    recall_se = math.sqrt(recall * (1 - recall) / bids) if bids else math.inf
    rate_se = math.sqrt(max(rate * (1 - rate), 1.0 / rows) / rows) if rows else math.inf
    failures = []
    if gate_recall and bids >= cfg.min_slice_bids and recall_gap - cfg.confidence_z * recall_se > cfg.max_recall_gap:
        failures.append(
            f"bid recall {recall:.3f} is {recall_gap:.3f} below overall {overall['bid_recall']:.3f} "
            f"(max gap {cfg.max_recall_gap} + {cfg.confidence_z:g} x s.e. {recall_se:.3f})"
        )
    if rows >= cfg.min_slice_rows and calibration_gap - cfg.confidence_z * rate_se > cfg.max_calibration_gap:
        failures.append(
            f"mean score {row['mean_prediction']:.3f} vs bid rate {rate:.3f}: calibration gap "
            f"{calibration_gap:.3f} above overall (max {cfg.max_calibration_gap} + {cfg.confidence_z:g} x "
            f"s.e. {rate_se:.3f})"
        )
    return SliceResult(
        feature=feature,
        value=value,
        rows=rows,
        bids=bids,
        bid_recall=recall,
        calibration=calibration,
        ece=float(row["ece"]),
        mean_prediction=float(row["mean_prediction"]),
        bid_rate=rate,
        recall_gap=recall_gap,
        calibration_gap=calibration_gap,
        gated=rows >= cfg.min_slice_rows or (gate_recall and bids >= cfg.min_slice_bids),
        failures=tuple(failures),
    )
