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


def test_the_oracle_is_scored_beside_the_models_and_bounds_them(trained: TrainedModel, split_rows: Rows) -> None:
    report = evaluate(split_rows[1], trained, trained, CFG)
    assert report.oracle is not None
    oracle, candidate = report.oracle.at_target, report.candidate.at_target
    assert oracle is not None and candidate is not None
    # The true probabilities rank calls at least as well as a model trained on three small hours.
    assert report.oracle.metrics["auc"] > report.candidate.metrics["auc"]
    assert candidate.calls_saved_share < oracle.calls_saved_share
    share = report.candidate.metrics["oracle_share_at_target"]
    assert share == pytest.approx(candidate.calls_saved_share / oracle.calls_saved_share)
    assert report.champion is not None and "oracle_share_at_target" in report.champion.metrics
    # Ranked by expected bid value, the oracle saves more at 95 % of value kept than at 95 % of bids.
    oracle_value = report.oracle.at_value_target
    assert oracle_value is not None and oracle_value.value_kept_share >= CFG.target_bid_recall
    assert oracle_value.calls_saved_share > oracle.calls_saved_share
    payload = report.to_json()
    assert payload["oracle"]["at_target"]["calls_saved_share"] == pytest.approx(oracle.calls_saved_share)
    assert all(check.name != "oracle" for check in report.gate.checks)  # never part of the gate


def test_rows_without_an_oracle_report_none(trained: TrainedModel, split_rows: Rows) -> None:
    rows = split_rows[1].assign(oracle_p_bid=np.nan, oracle_bid_value=np.nan)
    report = evaluate(rows, trained, None, CFG)
    assert report.oracle is None
    assert "oracle_share_at_target" not in report.candidate.metrics
    assert report.to_json()["oracle"] is None


def test_the_value_objective_gates_on_value_kept(trained: TrainedModel, split_rows: Rows) -> None:
    cfg = EvaluateConfig(objective="value")
    report = evaluate(split_rows[1], trained, trained, cfg)
    names = {check.name for check in report.gate.checks}
    assert "realized_value_kept" in names and "realized_bid_recall" not in names
    saved = next(c for c in report.gate.checks if c.name == "calls_saved_at_target")
    assert report.candidate.at_value_target is not None
    assert saved.value == pytest.approx(report.candidate.at_value_target.calls_saved_share)


def test_no_model_can_see_the_oracle(split_rows: Rows) -> None:
    # The oracle columns ride along in the rows; replace them with the label itself (a perfect leak)
    # and the trained model must not change by a single bit.
    rows = split_rows[0]
    leaked = rows.assign(oracle_p_bid=rows["bid"].astype(np.float32), oracle_bid_value=rows["price"].fillna(0.0))
    spec = bid_filter.spec()
    assert not any(name.startswith("oracle") for name in spec.names)
    plain = train.fit(rows, spec, QUICK, policy=CFG)
    cheat = train.fit(leaked, spec, QUICK, policy=CFG)
    assert bytes(plain.booster.save_raw("ubj")) == bytes(cheat.booster.save_raw("ubj"))
    assert plain.policy == cheat.policy


def test_the_report_leads_the_economics_with_the_share_of_the_oracle(trained: TrainedModel, split_rows: Rows) -> None:
    from bidflow.modeling.report import economics_curves, evaluation_html

    report = evaluate(split_rows[1], trained, None, CFG)
    assert report.oracle is not None
    page = evaluation_html(report, {})
    share = report.candidate.metrics["oracle_share_at_target"]
    assert f"{share:.2%} of the oracle's</b>" in page
    assert "oracle: thresholds at target bid value on this window" in page
    assert set(economics_curves(report)) == {"candidate", "oracle"}
    # Per partner, largest gap first: the partners' calls add up to the window's.
    gaps = report.oracle_gaps
    assert sum(g.calls for g in gaps) == len(split_rows[1])
    differences = [g.saved - g.oracle_saved for g in gaps]
    assert differences == sorted(differences)
    assert "Where the candidate falls short of the oracle" in page and gaps[0].partner in page


def test_ranking_by_expected_value_saves_more_calls_at_the_same_value_kept(split_rows: Rows) -> None:
    # Give the model the generator's true CPM of a bid as its price features: ranked by P(bid) x that
    # price, the value curve must save more calls at 95 % of bid value kept than ranked by P(bid) alone.
    from bidflow.modeling.economics import PRICE_COLUMNS, economics_curve

    def with_prices(rows: pd.DataFrame) -> pd.DataFrame:
        cpm = rows["oracle_bid_value"] / rows["oracle_p_bid"].clip(lower=1e-9)
        return rows.assign(**{name: cpm.astype(np.float64) for name in PRICE_COLUMNS})

    train_rows, holdout = with_prices(split_rows[0]), with_prices(split_rows[1])
    cfg = EvaluateConfig(objective="value")
    model = train.fit(train_rows, bid_filter.spec(PRICE_COLUMNS), QUICK, policy=cfg)
    assert model.policy is not None and model.policy.ranking == "expected_value"
    report = evaluate(holdout, model, None, cfg)
    ranked = report.candidate.at_value_target
    assert ranked is not None and ranked.value_kept_share >= 0.95
    by_p = economics_curve(
        holdout["auction_id"].to_numpy(), holdout["partner"].to_numpy(), report.y, report.candidate.scores,
        holdout["price"].to_numpy(np.float64, na_value=np.nan), exploration_share=cfg.exploration_share,
        targets=(0.95,), objective="value",
    )[0][1]  # fmt: skip
    assert ranked.calls_saved_share > by_p.calls_saved_share
    realized = report.candidate.realized
    assert realized is not None and realized.value_kept_share >= 0.95 - cfg.max_recall_shortfall


def test_pr_auc_is_gated_only_where_a_kind_asks_for_it() -> None:
    from bidflow.config import EvaluateSettings
    from bidflow.modeling.evaluate import ModelEvaluation, gate
    from bidflow.modeling.metrics import classification_metrics

    rng = np.random.default_rng(3)
    y = (rng.random(20_000) < 0.003).astype(float)  # rare positives, as the fraud kind's
    sharp = np.clip(0.001 + 0.6 * y * rng.random(len(y)) + 0.01 * rng.random(len(y)), 0, 1)
    blurred = np.clip(0.001 + 0.02 * y * rng.random(len(y)) + 0.01 * rng.random(len(y)), 0, 1)
    champion = ModelEvaluation("champion", "v1", classification_metrics(y, sharp))
    candidate = ModelEvaluation("candidate", "v2", classification_metrics(y, blurred))
    assert candidate.metrics["pr_auc"] < champion.metrics["pr_auc"] - 0.1
    loose = EvaluateSettings(max_auc_drop=1.0, max_logloss_increase=10.0, max_ece_increase=1.0)
    assert "pr_auc" not in {c.name for c in gate(candidate, champion, loose).checks}
    verdict = gate(candidate, champion, loose.model_copy(update={"max_pr_auc_drop": 0.03}))
    (check,) = [c for c in verdict.checks if c.name == "pr_auc"]
    assert not check.passed and not verdict.passed and check.limit == pytest.approx(champion.metrics["pr_auc"] - 0.03)
    assert gate(champion, champion, loose.model_copy(update={"max_pr_auc_drop": 0.0})).passed
