"""The data gate: schema failures and distribution drift are caught, named and reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.config import IngestConfig, ValidateConfig
from bidflow.data.batch import read_frame
from bidflow.data.ingest import ingest
from bidflow.data.profile import build_profile, load_profile, save_profile
from bidflow.data.validate import enforce, psi, validate_batch, write_report
from bidflow.errors import DataValidationError, InputError

CFG = ValidateConfig(min_rows=100)


@pytest.fixture(scope="module")
def baseline(ingested: Path) -> pd.DataFrame:
    return read_frame(ingested)


def _failures(frame: pd.DataFrame, reference_frame: pd.DataFrame | None = None) -> set[tuple[str, str]]:
    reference = build_profile(reference_frame) if reference_frame is not None else None
    report = validate_batch(frame, reference, CFG, batch_name="test")
    return {(c.name, c.column) for c in report.failures}


def test_a_batch_passes_against_a_reference_from_the_same_market(baseline: pd.DataFrame) -> None:
    first_hour = baseline[baseline["ts"].dt.hour == 8]
    second_hour = baseline[baseline["ts"].dt.hour == 9]
    assert _failures(second_hour, first_hour) == set()


def test_schema_failures_are_named_by_column_and_check(baseline: pd.DataFrame) -> None:
    bad = baseline.head(2_000).copy()
    bad.loc[bad.index[:3], "bidfloor"] = -1.0
    bad.loc[bad.index[3], "status"] = "maybe"
    nobid = bad.index[bad["bid"] == 0][0]
    bad.loc[nobid, "price"] = 2.5
    bad.loc[bad.index[5], "hour_of_day"] = (int(bad.loc[bad.index[5], "hour_of_day"]) + 1) % 24
    bad.loc[bad.index[6], "country"] = "us"
    failures = _failures(bad)
    assert ("in_range(0.0, 1000.0)", "bidfloor") in failures
    assert any(name.startswith("isin") and column == "status" for name, column in failures)
    assert ("price_iff_bid", "") in failures
    assert ("hour_of_day_matches_ts", "") in failures
    assert any(column == "country" for _, column in failures)


def test_missing_and_extra_columns_fail(baseline: pd.DataFrame) -> None:
    frame = baseline.head(500).drop(columns=["partner"]).assign(surprise=1)
    failures = _failures(frame)
    assert ("missing column", "partner") in failures
    assert ("unexpected column", "surprise") in failures


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("publisher_flood", {("unseen_categories", "publisher_id"), ("psi", "publisher_id")}),
        ("floor_hike", {("psi", "bidfloor")}),
        ("device_shift", {("psi", "device_type")}),
    ],
)
def test_drift_scenarios_fail_the_distribution_checks(
    make_logs: Callable[..., Path],
    tmp_path: Path,
    baseline: pd.DataFrame,
    scenario: str,
    expected: set[tuple[str, str]],
) -> None:
    raw = make_logs(hours=1, start="2026-11-02T10:00:00Z", scenario=scenario)
    ingest(raw, tmp_path / "parquet", IngestConfig())
    failures = _failures(read_frame(tmp_path / "parquet"), baseline)
    assert expected <= failures


def test_too_few_rows_and_a_moved_bid_rate_fail(baseline: pd.DataFrame) -> None:
    tiny = baseline.head(50)
    assert ("row_count", "") in _failures(tiny, baseline)
    no_bids = baseline.head(5_000).copy()
    no_bids["status"] = np.where(no_bids["bid"] == 1, "nobid", no_bids["status"])
    no_bids["price"] = np.nan
    no_bids["bid"] = np.int8(0)
    assert ("bid_rate", "bid") in _failures(no_bids, baseline)


def test_failing_gate_raises_with_the_report_path_and_report_names_the_failures(
    baseline: pd.DataFrame, tmp_path: Path
) -> None:
    bad = baseline.head(1_000).copy()
    bad["latency_ms"] = np.int32(-5)
    report = validate_batch(bad, None, CFG, batch_name="bad batch")
    html = write_report(report, tmp_path)
    with pytest.raises(DataValidationError, match="data validation failed") as failure:
        enforce(report, html)
    assert failure.value.report_path == html and str(html) in failure.value.render()
    markdown = (tmp_path / "validation.md").read_text()
    assert "FAILED" in markdown and "latency_ms" in markdown
    assert "latency_ms" in html.read_text() and (tmp_path / "validation.json").exists()


def test_profiles_round_trip_and_a_missing_one_is_a_clear_error(baseline: pd.DataFrame, tmp_path: Path) -> None:
    profile = build_profile(baseline)
    save_profile(profile, tmp_path / "profile.json")
    assert load_profile(tmp_path / "profile.json") == profile
    with pytest.raises(InputError, match="reference profile not found"):
        load_profile(tmp_path / "missing.json")


def test_psi_is_zero_for_identical_and_large_for_disjoint_distributions() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert psi([0.9, 0.1], [0.1, 0.9]) > 1.0
    assert psi([1.0, 0.0], [0.0, 1.0]) > psi([0.9, 0.1], [0.1, 0.9])
