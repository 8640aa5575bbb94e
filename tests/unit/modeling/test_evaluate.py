"""The champion/challenger gate: a worse candidate fails, an equal one passes, the first one passes with a note."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bidflow.config import EvaluateConfig
from bidflow.kinds import bid_filter
from bidflow.modeling import train
from bidflow.modeling.dataset import FeatureSpec
from bidflow.modeling.evaluate import evaluate
from bidflow.modeling.train import TrainedModel
from tests.unit.modeling.conftest import QUICK

CFG = EvaluateConfig()
Rows = tuple[pd.DataFrame, pd.DataFrame]


def test_equal_candidate_passes(trained: TrainedModel, split_rows: Rows) -> None:
    report = evaluate(split_rows[1], trained, trained, CFG)
    assert report.gate.passed, report.gate.failed
    assert {c.name for c in report.gate.checks} == {
        "realized_bid_recall",
        "auc",
        "logloss",
        "ece",
        "calls_saved_at_target",
    }
    assert report.candidate.metrics == report.champion.metrics  # type: ignore[union-attr]


def test_candidate_trained_on_shuffled_labels_fails(trained: TrainedModel, split_rows: Rows) -> None:
    rows = split_rows[0].copy()
    rows["bid"] = np.random.default_rng(0).permutation(rows["bid"].to_numpy())
    worse = train.fit(rows, bid_filter.spec(), QUICK, policy=CFG)
    report = evaluate(split_rows[1], worse, trained, CFG)
    assert not report.gate.passed
    failed = {c.name for c in report.gate.failed}
    assert {"auc", "calls_saved_at_target"} <= failed
    assert report.candidate.metrics["auc"] < 0.6 < report.champion.metrics["auc"]  # type: ignore[union-attr]


def test_candidate_with_a_crippled_feature_set_fails(trained: TrainedModel, split_rows: Rows) -> None:
    # Without the partner the filter cannot tell who bids.
    crippled = FeatureSpec(names=("bidfloor", "hour_of_day"), categorical=(), label="bid")
    worse = train.fit(split_rows[0], crippled, QUICK, policy=CFG)
    report = evaluate(split_rows[1], worse, trained, CFG)
    assert not report.gate.passed
    assert "auc" in {c.name for c in report.gate.failed}


def test_first_model_passes_with_a_note(trained: TrainedModel, split_rows: Rows) -> None:
    report = evaluate(split_rows[1], trained, None, CFG)
    assert report.gate.passed
    assert any("no champion" in note for note in report.gate.notes)
    assert [c.name for c in report.gate.checks] == ["realized_bid_recall"]
    assert report.to_json()["champion"] is None


def test_economics_are_reported_on_the_holdout(trained: TrainedModel, split_rows: Rows) -> None:
    report = evaluate(split_rows[1], trained, None, CFG)
    realized, at_target = report.candidate.realized, report.candidate.at_target
    assert realized is not None and at_target is not None
    assert realized.calls == at_target.calls == len(split_rows[1])
    assert at_target.bid_recall >= CFG.target_bid_recall  # thresholds chosen on these rows
    assert 0.0 < realized.calls_saved_share < 1.0
    assert realized.exploration_calls > 0
    payload = report.to_json()
    assert payload["candidate"]["realized"]["bid_recall"] == pytest.approx(realized.bid_recall)
    assert payload["gate"]["passed"] is True
