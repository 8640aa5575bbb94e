"""The drift monitor's tests: they run in the monitor's own environment (``.venv-monitor``).

Self-contained on purpose: ``tests/conftest.py`` imports the data generator (isal, main
environment only), so ``make test`` runs this folder with ``--confcutdir=tests/monitor``.
"""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from bidflow.monitoring.drift import DriftDetector, fit_detector
from tests.monitor.synth import auctions

if importlib.util.find_spec("alibi_detect") is None:
    pytest.exit(
        "tests/monitor need the monitor environment: make monitor-setup && "
        ".venv-monitor/bin/python -m pytest tests/monitor --confcutdir=tests/monitor",
        returncode=4,
    )

P_VALUE = 0.05
N_REFERENCE = 5_000
N_WINDOW = 2_000


@pytest.fixture(scope="session")
def reference() -> pd.DataFrame:
    return auctions(N_REFERENCE, seed=1)


@pytest.fixture(scope="session")
def alibi_detector(reference: pd.DataFrame) -> DriftDetector:
    return fit_detector(reference, P_VALUE, backend="alibi")


@pytest.fixture(scope="session")
def scipy_detector(reference: pd.DataFrame) -> DriftDetector:
    return fit_detector(reference, P_VALUE, backend="scipy")
