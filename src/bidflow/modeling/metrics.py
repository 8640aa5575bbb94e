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
    """AUC, log loss, expected calibration error, base rate and mean prediction."""
    labels = np.asarray(y, dtype=np.float64)
    probs = np.asarray(p, dtype=np.float64)
    return {
        "auc": auc(labels, probs),
        "logloss": log_loss(labels, probs),
        "ece": expected_calibration_error(labels, probs, bins),
        "positive_rate": float(labels.mean()) if len(labels) else float("nan"),
        "mean_prediction": float(probs.mean()) if len(probs) else float("nan"),
        "rows": float(len(labels)),
    }
