"""The bias gate fails a model whose scores are depressed for one country, and names that slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bidflow.config import FairnessConfig
from bidflow.modeling.fairness import fairness_report, slice_frame
from bidflow.modeling.report import fairness_html
from bidflow.modeling.train import TrainedModel

Rows = tuple[pd.DataFrame, pd.DataFrame]
CFG = FairnessConfig()


def _scores(model: TrainedModel, rows: pd.DataFrame, depress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    scores = model.predict(rows)
    if depress is not None:
        scores = np.where(rows["country"] == depress, scores * 0.2, scores)
    assert model.policy is not None
    called = model.policy.call_mask(rows["auction_id"].to_numpy(), rows["partner"].to_numpy(), scores)
    return scores, called


def test_unbiased_model_passes(trained: TrainedModel, split_rows: Rows) -> None:
    rows = split_rows[1]
    scores, called = _scores(trained, rows)
    report = fairness_report(rows, rows["bid"].to_numpy(), scores, called, CFG)
    assert report.passed, [(s.name, s.failures) for s in report.failing]
    features = {s.feature for s in report.slices}
    assert features == {"channel", "geo", "country", "device_type", "format", "partner"}


def test_model_depressed_for_one_country_fails_naming_it(trained: TrainedModel, split_rows: Rows) -> None:
    rows = split_rows[1]
    scores, called = _scores(trained, rows, depress="GBR")
    report = fairness_report(rows, rows["bid"].to_numpy(), scores, called, CFG)
    assert not report.passed
    failing = {s.name: s for s in report.failing}
    assert "country=GBR" in failing
    reasons = " ".join(failing["country=GBR"].failures)
    assert "bid recall" in reasons and "calibration gap" in reasons
    assert "country=GBR" in report.to_json()["failing_slices"]
    html = fairness_html(report, "biased")
    assert "country=GBR" in html and "FAILED" in html


def test_tiny_slices_are_reported_but_not_gated(trained: TrainedModel, split_rows: Rows) -> None:
    rows = split_rows[1]
    scores, called = _scores(trained, rows, depress="GBR")
    strict = FairnessConfig(min_slice_rows=10**9, min_slice_bids=10**9)
    report = fairness_report(rows, rows["bid"].to_numpy(), scores, called, strict)
    assert report.passed
    gbr = next(s for s in report.slices if s.name == "country=GBR")
    assert not gbr.gated and gbr.recall_gap > strict.max_recall_gap


def test_geo_groups_countries_and_absent_columns_are_skipped() -> None:
    frame = pd.DataFrame({"country": ["USA", "DEU", "JPN", "XYZ"]})
    slices, skipped = slice_frame(frame, ["geo", "country", "os"])
    assert slices["geo"].tolist() == ["north_america", "europe", "east_asia", "other"]
    assert skipped == ["os"]


def test_without_a_filter_only_calibration_is_gated(trained: TrainedModel, split_rows: Rows) -> None:
    rows = split_rows[1]
    scores, _ = _scores(trained, rows, depress="GBR")
    report = fairness_report(rows, rows["bid"].to_numpy(), scores, None, CFG)
    gbr = next(s for s in report.failing if s.name == "country=GBR")
    assert all("calibration" in f for f in gbr.failures)
    assert report.overall["bid_recall"] == pytest.approx(1.0)
