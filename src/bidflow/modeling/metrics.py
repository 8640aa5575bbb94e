"""Classification metrics shared by training, evaluation and the bias gate."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

EPS: Final = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] for the log loss

Array = npt.ArrayLike


def auc(y: Array, p: Array) -> float:
    """Area under the ROC curve; NaN when ``y`` holds a single class."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(y)
    if len(labels) == 0 or labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, p))


def pr_auc(y: Array, p: Array) -> float:
    """Area under the precision-recall curve (average precision); NaN when ``y`` holds a single class.

    With few positives (fraud: 0.24 % of clicks convert) ROC AUC is dominated by the easy negatives;
    PR-AUC moves with the ranking of the rare positives, which is what a threshold acts on.
    """
    from sklearn.metrics import average_precision_score

    labels = np.asarray(y)
    if len(labels) == 0 or labels.min() == labels.max():
        return float("nan")
    return float(average_precision_score(labels, p))


def log_loss(y: Array, p: Array) -> float:
    """Mean binary cross-entropy with clipped probabilities; NaN on no rows."""
    labels = np.asarray(y, dtype=np.float64)
    if len(labels) == 0:
        return float("nan")
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return float(-np.mean(labels * np.log(q) + (1 - labels) * np.log(1 - q)))


def calibration_bins(y: Array, p: Array, bins: int = 10) -> tuple[npt.NDArray[np.float64], ...]:
    """Per equal-width probability bin: row count, mean prediction, observed rate (empty bins: NaN).

    Returns:
        ``(counts, mean_predicted, observed)``, each of length ``bins``.
    """
    labels = np.asarray(y, dtype=np.float64)
    probs = np.asarray(p, dtype=np.float64)
    index = np.clip((probs * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(index, weights=probs, minlength=bins) / counts
        observed = np.bincount(index, weights=labels, minlength=bins) / counts
    return counts, predicted, observed


def expected_calibration_error(y: Array, p: Array, bins: int = 10) -> float:
    """Row-weighted mean |observed rate - mean prediction| over equal-width bins; NaN on no rows."""
    counts, predicted, observed = calibration_bins(y, p, bins)
    total = counts.sum()
    if total == 0:
        return float("nan")
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(observed[filled] - predicted[filled])) / total)


def classification_metrics(y: Array, p: Array, bins: int = 10) -> dict[str, float]:
    """AUC, PR-AUC, log loss, expected calibration error, base rate and mean prediction."""
    labels = np.asarray(y, dtype=np.float64)
    probs = np.asarray(p, dtype=np.float64)
    return {
        "auc": auc(labels, probs),
        "pr_auc": pr_auc(labels, probs),
        "logloss": log_loss(labels, probs),
        "ece": expected_calibration_error(labels, probs, bins),
        "positive_rate": float(labels.mean()) if len(labels) else float("nan"),
        "mean_prediction": float(probs.mean()) if len(probs) else float("nan"),
        "rows": float(len(labels)),
    }


def roc_points(
    y: Array, p: Array, max_points: int = 101
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The ROC curve thinned to at most ``max_points`` points, for dashboards (KFP, MLflow) that store every point.

    Points are kept evenly along the curve, always with its two ends; thresholds are capped at 1.0
    (scikit-learn's first threshold is +inf, which JSON cannot carry).

    Returns:
        ``(false_positive_rate, true_positive_rate, threshold)``, empty when ``y`` holds a single class.
    """
    from sklearn.metrics import roc_curve

    labels = np.asarray(y)
    if max_points < 2:
        raise ValueError("max_points must be at least 2 (the curve's two ends)")
    if len(labels) == 0 or labels.min() == labels.max():
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty, empty
    fpr, tpr, thresholds = roc_curve(labels, np.asarray(p, dtype=np.float64))
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).round().astype(np.int64))
    return (
        fpr[keep].astype(np.float64),
        tpr[keep].astype(np.float64),
        np.minimum(thresholds[keep], 1.0).astype(np.float64),
    )
