"""Drift detection in the main environment: the scipy backend, the row helpers, and a clear error for alibi.

The alibi-detect backend and the agreement of both backends are tested in tests/monitor (monitor
environment, ``make test``).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bidflow.errors import MonitorError
from bidflow.monitoring.drift import (
    MONITORED_COLUMNS,
    SCORE,
    SIDECAR,
    DriftDetector,
    drift_frame,
    drift_row,
    fit_detector,
    load_detector,
    save_detector,
)
from bidflow.monitoring.fit import fit_from_reference
from bidflow.openrtb.features import RequestFeatures
from tests.monitor.synth import CTV_HEAVY, auctions

P_VALUE = 0.05
ALIBI_INSTALLED = importlib.util.find_spec("alibi_detect") is not None


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return auctions(5_000, seed=1)


@pytest.fixture(scope="module")
def detector(reference: pd.DataFrame) -> DriftDetector:
    return fit_detector(reference, P_VALUE, backend="scipy")


def features(**overrides: object) -> RequestFeatures:
    values: dict[str, object] = {
        "channel": "site",
        "publisher_id": "pub-1",
        "category": "IAB1",
        "format": "banner",
        "ad_size": "300x250",
        "interstitial": 0,
        "rewarded": 0,
        "bidfloor": 0.5,
        "device_type": 4,
        "os": "ios",
        "country": "USA",
        "region": "CA",
        "connection_type": 2,
        "has_user_id": 1,
        "gdpr": 0,
        "coppa": 0,
        "tmax": 200,
        "secure": 1,
        "hour_of_day": 9,
        "day_of_week": 0,
    }
    return RequestFeatures(**(values | overrides))  # type: ignore[arg-type]


def test_drift_row_and_frame() -> None:
    row = drift_row(features(), 0.25)
    assert tuple(row) == MONITORED_COLUMNS
    assert "publisher_id" not in row and "hour_of_day" not in row
    assert math.isnan(drift_row(features(), None)[SCORE])
    frame = drift_frame([row, drift_row(features(os="android"), None)])
    assert list(frame.columns) == list(MONITORED_COLUMNS)
    assert frame["device_type"].dtype == "int64" and frame["bidfloor"].dtype == "float64"
    assert frame[SCORE].isna().tolist() == [False, True]
    empty = drift_frame([])
    assert empty.empty and list(empty.columns) == list(MONITORED_COLUMNS) and empty["tmax"].dtype == "int64"


def test_same_distribution_is_not_drift(detector: DriftDetector) -> None:
    report = detector.predict(auctions(2_000, seed=11))
    assert detector.backend == "scipy" and not report.drift, report.to_dict()


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ({"device_type": CTV_HEAVY}, ("device_type",)),
        ({"flood_category": "IAB-new", "flood_share": 0.15}, ("category",)),
        ({"score_shift": 0.08}, (SCORE,)),
    ],
)
def test_shift_is_flagged(detector: DriftDetector, scenario: dict[str, object], expected: tuple[str, ...]) -> None:
    report = detector.predict(auctions(2_000, seed=11, **scenario))  # type: ignore[arg-type]
    assert report.drift and report.drifted == expected


def test_scipy_round_trip_and_parquet_fit(reference: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "reference.parquet"
    reference.to_parquet(path)
    fitted = fit_from_reference(path, tmp_path / "detector", P_VALUE, backend="scipy")
    loaded = load_detector(tmp_path / "detector")
    current = auctions(2_000, seed=12, device_type=CTV_HEAVY)
    assert loaded.predict(current) == fitted.predict(current)
    assert json.loads((tmp_path / "detector" / SIDECAR).read_text())["backend"] == "scipy"


def test_user_errors(reference: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(MonitorError, match="reference lacks monitored columns: country"):
        fit_detector(reference.drop(columns=["country"]), P_VALUE, backend="scipy")
    with pytest.raises(MonitorError, match="reference has no rows"):
        fit_detector(drift_frame([]), P_VALUE, backend="scipy")
    with pytest.raises(MonitorError, match="drift reference not found"):
        fit_from_reference(tmp_path / "missing.parquet", tmp_path / "out", P_VALUE, backend="scipy")
    with pytest.raises(MonitorError, match="drift detector folder not found"):
        load_detector(tmp_path / "nowhere")


@pytest.mark.skipif(ALIBI_INSTALLED, reason="alibi-detect is installed here")
def test_alibi_outside_the_monitor_environment_says_where_it_lives(
    detector: DriftDetector, reference: pd.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(MonitorError, match="alibi-detect is not installed") as info:
        fit_detector(reference, P_VALUE)  # the default backend
    assert "make monitor-setup" in str(info.value) and ".venv-monitor" in str(info.value)
    save_detector(detector, tmp_path / "detector")
    sidecar = tmp_path / "detector" / SIDECAR
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text()) | {"backend": "alibi"}))
    with pytest.raises(MonitorError, match="make monitor-setup"):
        load_detector(tmp_path / "detector")
