"""Explanations: exact TreeSHAP contributions for every kind, in the user's names, and the reports' views of them.

The contract every consumer leans on is additivity: a row's contributions plus the base value are
its margin as XGBoost predicts it. It is checked on a held-out window of each built-in kind and of
the test-only one, with a model trained here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bidflow.config import Config, EvaluateConfig, ExplainConfig, FairnessConfig, load_config
from bidflow.modeling import ctr, explain_report, inputs, train
from bidflow.modeling.dataset import UNSEEN_CODE
from bidflow.modeling.evaluate import evaluate
from bidflow.modeling.explain import (
    ADDITIVITY_TOLERANCE,
    UNSEEN,
    contributions,
    decoded,
    describe_shift,
    feature_label,
    margins,
    shift,
    top_contributions,
)
from bidflow.modeling.explain_window import explain_model, explain_slices, slice_attribution, slices_to_explain
from bidflow.modeling.fairness import fairness_report, slice_frame
from bidflow.modeling.report import evaluation_html, fairness_html, write_json
from bidflow.modeling.train import TrainedModel
from tests.kinds import toy
from tests.unit.modeling.conftest import QUICK

Rows = tuple[pd.DataFrame, pd.DataFrame]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ctr_model(shared_data: Path) -> tuple[TrainedModel, pd.DataFrame]:
    """A small CTR model on the real iPinYou sample (the shipped stumps, cut short), and its held-out hour."""
    rows = ctr.read_ipinyou_impressions(shared_data / "ipinyou_2997_sample" / "train.csv.gz", Config().features.ctr_day)
    rows = rows.sort_values(ctr.TIME, kind="stable").reset_index(drop=True)
    history, holdout = inputs.split_holdout(rows, 1)
    shipped = load_config(REPO / "bidflow.yaml", environ={}).train.for_kind("ctr")
    settings = shipped.model_copy(update={"n_estimators": 60, "early_stopping_rounds": 10, "learning_rate": 0.3,
                                          "nthread": 1})  # fmt: skip
    return train.fit(history, ctr.ipinyou_spec(), settings, refit=settings.refit), holdout


@pytest.fixture(scope="module")
def toy_rows(tmp_path_factory: pytest.TempPathFactory) -> Rows:
    """The test-only kind's shoppers, with a Feast-style column, split into history and a held-out hour."""
    path = toy.write_rows(tmp_path_factory.mktemp("toy") / "toy.csv", hours=4, per_hour=1_500)
    rows = toy.load_rows(Config(), path, None, None)
    rows["shop__visits"] = np.random.default_rng(1).poisson(3.0, len(rows)).astype(float)
    return inputs.split_holdout(rows, 1)


@pytest.fixture(scope="module")
def toy_model(toy_rows: Rows) -> TrainedModel:
    return train.fit(toy_rows[0], toy.spec(), QUICK)


def _assert_additive(model: TrainedModel, holdout: pd.DataFrame) -> None:
    x = model.matrix(holdout)
    found = contributions(model, x)
    margin = margins(model, x)
    assert found.values.shape == (len(holdout), len(model.spec.names))
    # Every row: contributions + base == XGBoost's own margin (not the margin the contributions imply).
    assert np.all(np.abs(found.values.sum(axis=1) + found.base - margin) <= ADDITIVITY_TOLERANCE)
    assert found.additivity_error(margin) <= ADDITIVITY_TOLERANCE
    np.testing.assert_allclose(found.scores, model.predict(holdout), atol=1e-5)


def test_bid_filter_contributions_add_up_to_the_margin(trained: TrainedModel, split_rows: Rows) -> None:
    _assert_additive(trained, split_rows[1])


def test_ctr_contributions_add_up_to_the_margin(ctr_model: tuple[TrainedModel, pd.DataFrame]) -> None:
    model, holdout = ctr_model
    assert len(holdout) > 1_000
    _assert_additive(model, holdout)


def test_test_only_kind_contributions_add_up_to_the_margin(toy_model: TrainedModel, toy_rows: Rows) -> None:
    _assert_additive(toy_model, toy_rows[1])
    found = contributions(toy_model, toy_model.matrix(toy_rows[1]))
    assert found.features == ("colour", "size")
    assert set(found.mean_abs()) == {"colour", "size"}  # colour and size both drive buying


def test_feast_columns_are_named_as_feast_writes_a_feature_reference(toy_rows: Rows) -> None:
    served = toy.spec(("shop__visits",), feature_service="toy_shop")
    model = train.fit(toy_rows[0], served, QUICK)
    found = contributions(model, model.matrix(toy_rows[1]))
    assert found.features == ("colour", "size", "shop:visits")
    assert found.additivity_error(margins(model, model.matrix(toy_rows[1]))) <= ADDITIVITY_TOLERANCE
    assert feature_label("shop__visits", toy.spec(("shop__visits",))) == "shop__visits"  # no FeatureService
    assert feature_label("colour", served) == "colour"


def test_category_codes_decode_to_their_values_and_zero_to_unseen(trained: TrainedModel, split_rows: Rows) -> None:
    column = trained.spec.names.index("partner")
    vocabulary = trained.encoder.vocabularies["partner"]
    assert decoded(trained, column, float(UNSEEN_CODE)) == UNSEEN
    assert decoded(trained, column, math.nan) == UNSEEN
    assert decoded(trained, column, float(len(vocabulary) + 5)) == UNSEEN
    assert decoded(trained, column, 1.0) == vocabulary[0]
    numeric = trained.spec.names.index(trained.spec.numeric[0])
    assert decoded(trained, numeric, math.nan) is None
    assert decoded(trained, numeric, 2.5) == 2.5

    row = split_rows[1].iloc[[0]]
    x = trained.matrix(row)
    found = contributions(trained, x)
    shown = top_contributions(trained, found.features, found.values[0], x[0], top=0)
    assert len(shown) == len(trained.spec.names)
    assert [abs(c.contribution) for c in shown] == sorted((abs(c.contribution) for c in shown), reverse=True)
    by_name = {c.feature: c.value for c in shown}
    partner = str(row["partner"].iloc[0])
    assert by_name["partner"] == (partner if partner in vocabulary else UNSEEN)
    assert len(top_contributions(trained, found.features, found.values[0], x[0], top=3)) == 3


def test_shift_orders_by_size_and_the_shifts_add_up_to_the_margin_move(trained: TrainedModel, split_rows: Rows) -> None:
    moved = shift({"a": 0.0, "b": 0.2, "c": 0.0, "d": 1.0}, {"a": 0.1, "b": -0.3, "c": 0.3, "e": 2.0}, top=2)
    assert [m["feature"] for m in moved] == ["b", "c"]  # by |shift|; d and e are not in both
    assert moved[0]["shift"] == pytest.approx(-0.5)
    assert describe_shift(moved) == "b (-0.500), c (+0.300)"

    reference, current = split_rows[0].tail(2_000), split_rows[1]
    before = contributions(trained, trained.matrix(reference))
    after = contributions(trained, trained.matrix(current))
    named = [dict(zip(f.features, f.means().tolist(), strict=True)) for f in (before, after)]
    every = shift(named[0], named[1], top=len(trained.spec.names))
    total = sum(float(m["shift"]) for m in every)
    assert total == pytest.approx(float(after.margin.mean() - before.margin.mean()), abs=1e-9)


def _depressed(model: TrainedModel, rows: pd.DataFrame, country: str | None) -> tuple[np.ndarray, np.ndarray]:
    scores = model.predict(rows)
    if country is not None:
        scores = np.where(rows["country"] == country, scores * 0.2, scores)
    assert model.policy is not None
    return scores, model.policy.call_mask(rows["auction_id"].to_numpy(), rows["partner"].to_numpy(), scores)


def test_slice_differences_add_up_to_the_slice_mean_margin_difference(trained: TrainedModel, split_rows: Rows) -> None:
    rows = split_rows[1]
    scores, called = _depressed(trained, rows, "GBR")
    report = fairness_report(rows, rows["bid"].to_numpy(), scores, called, FairnessConfig())
    assert "country=GBR" in {s.name for s in report.failing}
    explained = explain_slices(trained, rows, report, ExplainConfig(top=4))
    assert explained.window == explained.rows == len(rows)
    assert [s.slice for s in explained.slices] == [s.name for s in report.failing]
    assert "failing" in explained.selection

    margin = margins(trained, trained.matrix(rows))  # XGBoost's margin, not the contributions' sum
    columns, _ = slice_frame(rows, ["country"])
    for attribution in explained.slices:
        assert attribution.failing and len(attribution.features) == 4
        assert attribution.others == len(trained.spec.names) - 4
        assert attribution.total == pytest.approx(attribution.margin_difference, abs=1e-9)
        differences = [abs(f.difference) for f in attribution.features]
        assert differences == sorted(differences, reverse=True)
        if attribution.slice == "country=GBR":
            mask = (columns["country"] == "GBR").to_numpy()
            assert attribution.rows == int(mask.sum())
            expected = margin[mask].mean() - margin.mean()
            assert attribution.margin_difference == pytest.approx(expected, abs=ADDITIVITY_TOLERANCE)

    payload = explained.to_json()
    first = payload["slices"][0]
    total = sum(f["difference"] for f in first["features"]) + first["other_features"]["difference"]
    assert total == pytest.approx(first["margin_difference"], abs=1e-9)


def test_without_failing_slices_the_worst_are_explained(trained: TrainedModel, split_rows: Rows) -> None:
    rows = split_rows[1]
    scores, called = _depressed(trained, rows, None)
    report = fairness_report(rows, rows["bid"].to_numpy(), scores, called, FairnessConfig())
    assert report.passed
    picked, selection = slices_to_explain(report, 3)
    assert len(picked) == 3 and not any(s.failures for s in picked) and "no slice fails" in selection
    worst_recall = max((s for s in report.slices if s.gated), key=lambda s: s.recall_gap)
    worst_calibration = max((s for s in report.slices if s.gated), key=lambda s: s.calibration_gap)
    assert {worst_recall.name, worst_calibration.name} <= {s.name for s in picked}

    explained = explain_slices(trained, rows, report, ExplainConfig(slices=3, max_rows=500))
    assert explained.rows == 500 < explained.window  # a seeded sample
    assert 0 < len(explained.slices) <= 3
    html = fairness_html(report, "unbiased", explanations=explained)
    assert "What sets the slices apart" in html and "add up exactly" in html
    assert f"a seeded sample of the {len(rows):,} rows in the window" in html


def test_slice_attribution_lists_every_feature_with_top_zero(trained: TrainedModel, split_rows: Rows) -> None:
    found = contributions(trained, trained.matrix(split_rows[1]))
    mask = np.zeros(len(found.values), dtype=bool)
    mask[:50] = True
    attribution = slice_attribution(found, mask, name="first=50", top=0, failing=False)
    assert len(attribution.features) == len(found.features) and attribution.others == 0 and attribution.rest == 0.0
    assert attribution.total == pytest.approx(attribution.margin_difference, abs=1e-9)
    table = explain_report.slice_table(attribution)
    assert table.rows[-1][0].startswith("total") and table.rows[-1][-1] == f"{attribution.total:+.4f}"


def test_evaluation_reports_carry_each_models_mean_abs_shap(
    trained: TrainedModel, split_rows: Rows, tmp_path: Path
) -> None:
    holdout = split_rows[1]
    shallow = QUICK.model_copy(update={"max_depth": 2})
    champion = train.fit(split_rows[0], trained.spec, shallow, policy=EvaluateConfig())
    cfg = ExplainConfig(max_rows=300, plot_features=5)
    report = evaluate(holdout, trained, champion, EvaluateConfig(), explain=cfg)
    plain = evaluate(holdout, trained, champion, EvaluateConfig())
    assert report.gate == plain.gate  # explanations never enter the gate
    assert plain.to_json()["explanations"] is None

    cand, champ = report.candidate.explanation, report.champion.explanation  # type: ignore[union-attr]
    assert cand is not None and champ is not None
    assert cand.rows == champ.rows == 300
    np.testing.assert_array_equal(cand.x, champ.x)  # the same sampled rows for both models
    assert cand.found.additivity_error(margins(trained, cand.x)) <= ADDITIVITY_TOLERANCE
    figure = cand.figure(cfg.plot_features)
    assert len(figure.axes[0].get_yticklabels()) == 5

    path = write_json(report.to_json(), tmp_path / "evaluation.json")
    payload = json.loads(path.read_text())["explanations"]
    assert payload["candidate"]["rows"] == 300 and payload["champion"]["rows"] == 300
    assert list(payload["candidate"]["mean_abs"]) == list(cand.mean_abs)  # largest first
    assert payload["candidate"]["base_value"] == pytest.approx(cand.found.base)
    assert set(payload["candidate"]["mean_abs"]) == set(trained.spec.names)

    table = explain_report.mean_abs_table([cand, champ])
    assert table.header == ["feature", f"candidate: {report.candidate.ref}", f"champion: {report.champion.ref}"]  # type: ignore[union-attr]
    assert [row[0] for row in table.rows] == list(cand.mean_abs)  # ordered by the candidate
    html = evaluation_html(report, {})
    assert "<h2>Explanations</h2>" in html and "Mean |SHAP|" in html
    top = next(iter(cand.mean_abs))
    assert f'<td class="l">{top}</td>' in html


def test_mean_abs_table_keeps_features_only_one_model_reads(toy_rows: Rows, toy_model: TrainedModel) -> None:
    served = train.fit(toy_rows[0], toy.spec(("shop__visits",), feature_service="toy_shop"), QUICK)
    cfg = ExplainConfig(max_rows=200)
    x = toy_model.matrix(toy_rows[1])
    first = explain_model(toy_model, x, cfg, role="candidate", ref="toy v2")
    second = explain_model(served, served.matrix(toy_rows[1]), cfg, role="champion", ref="toy v1")
    table = explain_report.mean_abs_table([first, second])
    assert [row[0] for row in table.rows][-1] == "shop:visits"
    assert table.rows[-1][1] == "-"
    assert len(explain_report.mean_abs_table([first, second], limit=1).rows) == 1


def test_drift_attribution_table_reads_the_monitors_record() -> None:
    attribution = {
        "role": "canary",
        "version": "3",
        "rows": 64,
        "reference_rows": 2_000,
        "features": [
            {"feature": "partner", "shift": 0.41, "reference": -0.1, "current": 0.31},
            {"feature": "country", "shift": -0.12, "reference": 0.02, "current": None},
            "not a feature",
        ],
    }
    table = explain_report.shift_table(attribution)
    assert table.rows == [["partner", "-0.1000", "+0.3100", "+0.4100"], ["country", "+0.0200", "-", "-0.1200"]]
    assert explain_report.shift_caption(attribution).startswith("canary v3: mean contributions of 64 rows")
    assert explain_report.shift_table({}).rows == []
