"""Gate first, register after: a logged run is judged by its ``runs:/`` URI and registered only once it passed.

This is the order the Kubeflow pipelines use (``train_step(register=False)`` -> ``evaluate_step`` /
``fairness_step`` on the run -> ``register_step``); a failed gate leaves nothing in the registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bidflow.config import Config, FairnessConfig, RegistryConfig
from bidflow.errors import GateFailed, RegistryError
from bidflow.modeling import registry
from bidflow.modeling.steps import bias_of, evaluate_step, evaluation_of, fairness_step, register_step, train_step

MODEL = "gated_bid_filter"  # its own name in the session's registry: other tests see no bid_filter change
LENIENT = FairnessConfig(max_recall_gap=1.0, max_calibration_gap=1.0)
STRICT = FairnessConfig(
    max_recall_gap=0.0, max_calibration_gap=0.0, confidence_z=0.0, min_slice_rows=20, min_slice_bids=5
)


@pytest.fixture
def config(bid_parquet: Path, registry_cfg: RegistryConfig, tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "paths": {"parquet": str(bid_parquet), "reports": str(tmp_path / "reports")},
            "train": {
                "feature_source": "request",
                "n_estimators": 30,
                "early_stopping_rounds": 6,
                "max_depth": 4,
                "learning_rate": 0.3,
                "nthread": 1,
                "min_category_count": 5,
            },
            "registry": registry_cfg.model_dump() | {"models": {"bid_filter": MODEL}},
        }
    )


def test_a_run_is_judged_unregistered_and_registered_only_after_both_gates(config: Config) -> None:
    run_id = train_step(config, "bid_filter", register=False).run_id
    candidate = registry.run_uri(run_id)
    assert registry.versions(config.registry, MODEL) == []

    evaluated, report = evaluate_step(config, "bid_filter", candidate=candidate, champion=None, enforce=False)
    assert evaluated.passed and evaluated.candidate.label == f"{MODEL} run {run_id[:8]} (not registered)"
    assert report.candidate.ref == evaluated.candidate.label
    explained = json.loads(evaluated.json_path.read_text())["explanations"]
    assert explained["candidate"]["rows"] == report.rows and explained["champion"] is None
    assert set(explained["candidate"]["mean_abs"]) == set(report.candidate.explanation.found.features)  # type: ignore[union-attr]
    html = evaluated.html_path.read_text()
    assert "<h2>Explanations</h2>" in html and 'alt="shap_candidate"' in html
    with pytest.raises(GateFailed, match="has not passed its gates") as failed:
        register_step(config, "bid_filter", run_id)  # the bias gate has not run yet
    assert "gate.fairness=not run" in str(failed.value)
    assert registry.versions(config.registry, MODEL) == []

    lenient = config.model_copy(update={"fairness": LENIENT})
    assert fairness_step(lenient, "bid_filter", candidate=candidate, enforce=False)[0].passed
    version = register_step(config, "bid_filter", run_id)
    assert (version.version, version.aliases, version.run_id) == ("1", ("candidate",), run_id)
    assert version.tags["gate.evaluation"] == version.tags["gate.fairness"] == "passed"
    assert version.tags["data.version"]  # lineage copied from the run
    assert register_step(config, "bid_filter", run_id).version == "1"  # a retried task: the same version
    assert len(registry.versions(config.registry, MODEL)) == 1


def test_a_failed_gate_registers_nothing(config: Config) -> None:
    before = len(registry.versions(config.registry, MODEL))
    run_id = train_step(config, "bid_filter", register=False).run_id
    strict = config.model_copy(update={"fairness": STRICT})
    outcome, report = fairness_step(strict, "bid_filter", candidate=registry.run_uri(run_id), enforce=False)
    assert not outcome.passed and report.failing and outcome.html_path.is_file()
    explained = json.loads(outcome.json_path.read_text())["explanations"]
    assert [s["slice"] for s in explained["slices"]] == [s.name for s in report.failing]
    assert all(s["failing"] for s in explained["slices"])
    first = explained["slices"][0]
    total = sum(f["difference"] for f in first["features"]) + first["other_features"]["difference"]
    assert total == pytest.approx(first["margin_difference"], abs=1e-9)  # TreeSHAP is additive
    assert "What sets the slices apart" in outcome.html_path.read_text()
    with pytest.raises(GateFailed, match=r"gate\.fairness=failed"):
        register_step(config, "bid_filter", run_id, gates=("fairness",))
    with pytest.raises(GateFailed, match="bias gate"):  # the CLI's behaviour is unchanged
        fairness_step(strict, "bid_filter", candidate=registry.run_uri(run_id))
    assert len(registry.versions(config.registry, MODEL)) == before


def test_an_unknown_run_is_a_registry_error(config: Config) -> None:
    with pytest.raises(RegistryError, match="no MLflow run"):
        registry.resolve(config.registry, MODEL, registry.run_uri("0" * 32))


def test_the_checks_alone_judge_like_the_gates_and_log_nothing(config: Config) -> None:
    """What the demo report uses: the same verdicts as the gates, with no tag, metric or file in MLflow."""
    run_id = train_step(config, "bid_filter", register=False).run_id
    candidate = registry.run_uri(run_id)
    before = registry.resolve(config.registry, MODEL, candidate).tags

    cand_ref, champ_ref, evaluation = evaluation_of(config, "bid_filter", candidate=candidate, champion=None)
    strict = config.model_copy(update={"fairness": STRICT})
    _, bias = bias_of(strict, "bid_filter", candidate=candidate)
    assert champ_ref is None and cand_ref.run_id == run_id
    assert len(bias.y) == len(bias.scores) == len(bias.frame) == evaluation.rows
    assert registry.resolve(config.registry, MODEL, candidate).tags == before  # no gate.* tag
    assert not list(Path(config.paths.reports).glob("**/*.json"))  # no report written

    gated, report = evaluate_step(config, "bid_filter", candidate=candidate, champion=None, enforce=False)
    assert gated.passed == evaluation.gate.passed and report.rows == evaluation.rows
    gated_bias = fairness_step(strict, "bid_filter", candidate=candidate, enforce=False)[1]
    assert [s.name for s in gated_bias.failing] == [s.name for s in bias.report.failing]
    assert bias.report.failing  # the strict gate fails, so the comparison is not of two empty lists
