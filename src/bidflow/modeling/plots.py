"""Evaluation plots: ROC, calibration (reliability) and the bid-filter economics curve.

Figures are built with ``matplotlib.figure.Figure`` directly, never ``pyplot``: no global figure
state, no GUI backend, safe inside a server or a pipeline step. ``png`` renders one to bytes for
MLflow artifacts and the self-contained HTML reports.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from bidflow.modeling.metrics import calibration_bins

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bidflow.modeling.economics import Economics

Scores = tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]  # (labels, predicted probabilities)


def roc_figure(curves: Mapping[str, Scores]) -> Figure:
    """ROC curves of one or more models on the same rows (legend shows each AUC)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    figure = Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = figure.subplots()
    for name, (y, p) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    return figure


def calibration_figure(curves: Mapping[str, Scores], bins: int = 10) -> Figure:
    """Observed rate against mean prediction per equal-width bin (the diagonal is perfect)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = figure.subplots()
    top = 0.0
    for name, (y, p) in curves.items():
        counts, predicted, observed = calibration_bins(y, p, bins)
        filled = counts > 0
        ax.plot(predicted[filled], observed[filled], marker="o", label=name)
        top = max(top, float(np.nanmax(predicted[filled], initial=0.0)), float(np.nanmax(observed[filled], initial=0)))
    top = min(1.0, top * 1.05 + 0.01)
    ax.plot([0, top], [0, top], linestyle=":", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration", xlim=(0, top))
    ax.legend(loc="upper left")
    return figure


def economics_figure(curves: Mapping[str, Sequence[tuple[float, Economics]]], target: float | None = None) -> Figure:
    """Share of partner calls saved against the share of bids (and bid value) kept."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.6, 4.2), layout="constrained")
    ax = figure.subplots()
    for name, points in curves.items():
        recall = [e.bid_recall for _, e in points]
        value = [e.value_kept_share for _, e in points]
        saved = [e.calls_saved_share for _, e in points]
        (line,) = ax.plot(recall, saved, marker="o", label=f"{name}: bids kept")
        ax.plot(value, saved, linestyle="--", color=line.get_color(), label=f"{name}: bid value kept")
    if target is not None:
        ax.axvline(target, linestyle=":", color="grey", label=f"target recall {target:.0%}")
    ax.set(xlabel="share of bids / bid value kept", ylabel="share of partner calls saved", title="Bid-filter economics")
    ax.legend(loc="lower left", fontsize="small")
    return figure


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
