"""Fit the drift detectors on a reference written at training time, and save them.

Training (main environment) writes a parquet file of ``drift_row`` columns: request features of
the training auctions and the model's mean partner score on each. The monitor's environment
fits alibi-detect detectors on it (``python -m bidflow.monitoring fit``) and saves them where the
monitor loads them (``monitor.detector``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bidflow.errors import MonitorError
from bidflow.monitoring.drift import MONITORED_COLUMNS, Backend, DriftDetector, fit_detector, save_detector


def fit_from_reference(reference: Path, out: Path, p_value: float, backend: Backend = "alibi") -> DriftDetector:
    """Read ``reference`` (parquet, ``drift_row`` columns), fit a detector at ``p_value``, save it to ``out``."""
    reference = Path(reference)
    if not reference.exists():
        raise MonitorError(
            "drift reference not found",
            where=reference,
            hint="training writes it (drift_row columns of the training auctions) as a parquet file",
        )
    try:
        frame = pd.read_parquet(reference, columns=list(MONITORED_COLUMNS))
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors derive from these
        raise MonitorError(
            "drift reference is not a readable parquet file with the monitored columns",
            where=reference,
            expected=", ".join(MONITORED_COLUMNS),
            got=f"{type(exc).__name__}: {str(exc)[:200]}",
        ) from exc
    detector = fit_detector(frame, p_value, backend=backend)
    save_detector(detector, Path(out))
    return detector
