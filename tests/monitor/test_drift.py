"""alibi-detect drift detectors on generated auctions: what drifts is flagged, what does not is not."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.config import MonitorConfig
from bidflow.errors import MonitorError
from bidflow.monitoring.drift import (
    MONITORED_CATEGORICAL,
    MONITORED_COLUMNS,
    MONITORED_NUMERIC,
    SCORE,
    SIDECAR,
    DriftDetector,
    DriftReport,
    detect_drift,
    fit_detector,
    load_detector,
    save_detector,
)
from bidflow.monitoring.fit import fit_from_reference
from tests.monitor.conftest import N_REFERENCE, N_WINDOW, P_VALUE
from tests.monitor.synth import CTV_HEAVY, VIDEO_HEAVY, auctions

SCENARIOS = {
    "baseline": {},
    "device_shift": {"device_type": CTV_HEAVY},
    "format_shift": {"formats": VIDEO_HEAVY},
    "category_flood": {"flood_category": "IAB-new", "flood_share": 0.15},
    "score_shift": {"score_shift": 0.08},
}
EXPECTED = {
    "baseline": set(),
    "device_shift": {"device_type"},
    "format_shift": {"format", "ad_size"},  # ad sizes follow the format
    "category_flood": {"category"},
    "score_shift": {SCORE},
}


def window(scenario: str, seed: int = 11) -> pd.DataFrame:
    return auctions(N_WINDOW, seed=seed, **SCENARIOS[scenario])  # type: ignore[arg-type]


def test_detector_shape(alibi_detector: DriftDetector) -> None:
    assert alibi_detector.backend == "alibi"
    assert alibi_detector.columns == MONITORED_COLUMNS
    assert "publisher_id" not in alibi_detector.columns and "hour_of_day" not in alibi_detector.columns
    report = alibi_detector.predict(window("baseline"))
    assert [f.name for f in report.features] == list(MONITORED_COLUMNS)
    assert {f.kind for f in report.features if f.name in MONITORED_CATEGORICAL} == {"categorical"}
    assert {f.kind for f in report.features if f.name in MONITORED_NUMERIC} == {"numeric"}
    assert report.threshold == pytest.approx(P_VALUE / len(MONITORED_COLUMNS))
    assert (report.n_reference, report.n_current) == (N_REFERENCE, N_WINDOW)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_same_distribution_is_not_drift(alibi_detector: DriftDetector, seed: int) -> None:
    report = alibi_detector.predict(window("baseline", seed))
    assert not report.drift, report.to_dict()
    assert report.drifted == ()


@pytest.mark.parametrize("scenario", ["device_shift", "format_shift", "category_flood", "score_shift"])
def test_shift_is_flagged_on_the_shifted_features(alibi_detector: DriftDetector, scenario: str) -> None:
    report = alibi_detector.predict(window(scenario))
    assert report.drift
    assert set(report.drifted) == EXPECTED[scenario], report.to_dict()
    by_name = {f.name: f for f in report.features}
    assert all(by_name[name].p_value < report.threshold for name in EXPECTED[scenario])


def test_unseen_category_flood_is_drift_but_a_stray_one_is_not(alibi_detector: DriftDetector) -> None:
    stray = window("baseline")
    stray.loc[stray.index[:2], "country"] = "ATA"  # two auctions from a country the reference never saw
    assert "country" not in alibi_detector.predict(stray).drifted
    flood = window("baseline")
    flood.loc[flood.index[: N_WINDOW // 5], "country"] = "ATA"
    assert "country" in alibi_detector.predict(flood).drifted


def test_missing_scores_are_left_out_of_the_score_test(alibi_detector: DriftDetector) -> None:
    current = window("baseline")
    current.loc[current.index[: N_WINDOW // 2], SCORE] = math.nan
    report = alibi_detector.predict(current)
    assert not report.drift
    assert SCORE in {f.name for f in report.features}
    current[SCORE] = math.nan  # a window with no scores at all: no score test, the rest still tested
    names = [f.name for f in alibi_detector.predict(current).features]
    assert SCORE not in names and len(names) == len(MONITORED_COLUMNS) - 1


def test_reference_without_scores_gives_a_detector_without_the_score_test(reference: pd.DataFrame) -> None:
    detector = fit_detector(reference.assign(score=math.nan), P_VALUE)
    assert SCORE not in detector.columns
    report = detector.predict(window("score_shift"))
    assert not report.drift and report.threshold == pytest.approx(P_VALUE / (len(MONITORED_COLUMNS) - 1))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_alibi_and_scipy_backends_agree(
    alibi_detector: DriftDetector, scipy_detector: DriftDetector, scenario: str
) -> None:
    current = window(scenario)
    alibi, scipy = alibi_detector.predict(current), scipy_detector.predict(current)
    assert (alibi.backend, scipy.backend) == ("alibi", "scipy")
    assert alibi.drift == scipy.drift and alibi.drifted == scipy.drifted
    for a, s in zip(alibi.features, scipy.features, strict=True):
        assert (a.name, a.kind, a.drift) == (s.name, s.kind, s.drift)
        assert a.p_value == pytest.approx(s.p_value, rel=1e-6, abs=1e-30)
        assert a.statistic == pytest.approx(s.statistic, rel=1e-6)


@pytest.mark.parametrize("backend", ["alibi", "scipy"])
def test_save_load_round_trip_predicts_identically(reference: pd.DataFrame, tmp_path: Path, backend: str) -> None:
    detector = fit_detector(reference, P_VALUE, backend=backend)  # type: ignore[arg-type]
    save_detector(detector, tmp_path / "detector")
    loaded = load_detector(tmp_path / "detector")
    assert (loaded.backend, loaded.columns) == (detector.backend, detector.columns)
    for scenario in ("baseline", "device_shift", "category_flood"):
        current = window(scenario)
        assert loaded.predict(current) == detector.predict(current)
    meta = json.loads((tmp_path / "detector" / SIDECAR).read_text())
    assert meta["backend"] == backend and meta["columns"] == list(MONITORED_COLUMNS)
    assert "IAB1" in meta["vocabularies"]["category"] and meta["vocabularies"]["device_type"] == ["2", "3", "4", "5"]


def test_alibi_save_layout_and_overwrite(alibi_detector: DriftDetector, tmp_path: Path) -> None:
    folder = tmp_path / "detector"
    save_detector(alibi_detector, folder)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == [SIDECAR, "score/config.toml", "score/x_ref.npy", "tabular/config.toml", "tabular/x_ref.npy"]
    assert 'name = "TabularDrift"' in (folder / "tabular" / "config.toml").read_text()
    save_detector(alibi_detector, folder)  # a detector folder is replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector"]  # no staging folder left behind
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("not a detector")
    with pytest.raises(MonitorError, match="not a drift detector folder"):
        save_detector(alibi_detector, tmp_path / "data")


def test_detect_drift_uses_alibi_at_the_configured_level(reference: pd.DataFrame) -> None:
    report = detect_drift(reference, window("device_shift"), MonitorConfig(p_value=0.01))
    assert isinstance(report, DriftReport)
    assert report.backend == "alibi" and report.drifted == ("device_type",)
    assert report.threshold == pytest.approx(0.01 / len(MONITORED_COLUMNS))
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["drift"] is True and as_json["drifted"] == ["device_type"]
    assert {f["name"] for f in as_json["features"]} == set(MONITORED_COLUMNS)


def test_fit_from_reference_parquet(reference: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "reference.parquet"
    reference.assign(publisher_id="pub-1").to_parquet(path)  # extra columns are fine
    detector = fit_from_reference(path, tmp_path / "detector", P_VALUE)
    assert detector.backend == "alibi"
    assert load_detector(tmp_path / "detector").predict(window("format_shift")).drifted == ("format", "ad_size")


# -- bad input --


def test_empty_reference_or_window_is_an_error(reference: pd.DataFrame, alibi_detector: DriftDetector) -> None:
    with pytest.raises(MonitorError, match="reference has no rows"):
        fit_detector(reference.iloc[:0], P_VALUE)
    with pytest.raises(MonitorError, match="current window has no rows"):
        alibi_detector.predict(reference.iloc[:0])


def test_missing_columns_are_named(reference: pd.DataFrame, alibi_detector: DriftDetector) -> None:
    with pytest.raises(MonitorError, match="reference lacks monitored columns: os, tmax"):
        fit_detector(reference.drop(columns=["os", "tmax"]), P_VALUE)
    with pytest.raises(MonitorError, match="current window lacks monitored columns: score"):
        alibi_detector.predict(window("baseline").drop(columns=[SCORE]))


def test_bad_values_are_errors(reference: pd.DataFrame) -> None:
    with pytest.raises(MonitorError, match="column 'bidfloor' is not numeric"):
        fit_detector(reference.assign(bidfloor="cheap"), P_VALUE)
    with pytest.raises(MonitorError, match="column 'tmax' has missing values"):
        fit_detector(reference.assign(tmax=np.where(np.arange(len(reference)) % 2, 100.0, np.nan)), P_VALUE)
    with pytest.raises(MonitorError, match="test level out of range"):
        fit_detector(reference, 1.5)
    with pytest.raises(MonitorError, match="unknown drift backend"):
        fit_detector(reference, P_VALUE, backend="river")  # type: ignore[arg-type]


def test_load_errors_say_what_is_wrong(alibi_detector: DriftDetector, tmp_path: Path) -> None:
    with pytest.raises(MonitorError, match="drift detector folder not found"):
        load_detector(tmp_path / "nowhere")
    from alibi_detect.saving import save_detector as alibi_save

    alibi_save(alibi_detector.tabular, tmp_path / "bare")  # type: ignore[attr-defined]
    with pytest.raises(MonitorError, match="a bare alibi-detect detector"):
        load_detector(tmp_path / "bare")
    save_detector(alibi_detector, tmp_path / "detector")
    sidecar = tmp_path / "detector" / SIDECAR
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(meta | {"backend": "river"}))
    with pytest.raises(MonitorError, match="unknown drift detector backend") as info:
        load_detector(tmp_path / "detector")
    assert info.value.got == "river"
    sidecar.write_text(json.dumps(meta))
    (tmp_path / "detector" / "tabular" / "x_ref.npy").unlink()
    with pytest.raises(MonitorError, match="alibi-detect could not load"):
        load_detector(tmp_path / "detector")
