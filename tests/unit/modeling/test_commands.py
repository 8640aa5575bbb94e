"""The modeling commands as a user runs them: train -> evaluate -> fairness -> promote, and mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bidflow.cli import cli
from bidflow.config import RegistryConfig
from bidflow.errors import GateFailed, RegistryError

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def config_file(tmp_path: Path, bid_parquet: Path) -> Path:
    settings = {
        "paths": {"parquet": str(bid_parquet), "reports": str(tmp_path / "reports")},
        "train": {
            "feature_source": "request",
            "n_estimators": 40,
            "early_stopping_rounds": 8,
            "max_depth": 4,
            "learning_rate": 0.3,
            "nthread": 1,
            "min_category_count": 5,
        },
        "registry": {
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_location": str(tmp_path / "artifacts"),
        },
    }
    path = tmp_path / "bidflow.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_train_evaluate_fairness_promote(config_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(cli, ["--config", str(config_file), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "version 1 ('candidate')" in invoke("train", "--out", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle" / "bidflow_model.json").is_file()
    out = invoke("evaluate")
    assert "gate passed" in out and "no champion yet" in out
    report = json.loads((tmp_path / "reports" / "evaluation-bid_filter" / "evaluation.json").read_text())
    assert report["gate"]["passed"] and report["candidate"]["realized"]["calls_saved_share"] > 0
    # Generated logs carry the oracle: the report and the command line put the model beside it.
    share = report["candidate"]["metrics"]["oracle_share_at_target"]
    assert 0 < share < 1 and report["oracle"]["at_target"]["calls_saved_share"] > 0
    assert f"{share:.1%} of the oracle's" in " ".join(out.split())
    html = (tmp_path / "reports" / "evaluation-bid_filter" / "evaluation.html").read_text()
    # ROC, calibration, economics and the candidate's SHAP summary: self-contained
    assert html.count("data:image/png;base64,") == 4 and 'alt="shap_candidate"' in html
    assert list(report["explanations"]["candidate"]["mean_abs"]) and report["explanations"]["champion"] is None
    assert "bias gate passed" in invoke("fairness")
    assert "first champion" in invoke("promote")
    listing = invoke("models")
    assert "v1" in listing and "champion" in listing and "evaluation=passed" in listing

    # A second version is compared with the champion; promoting it needs its gates first.
    assert "version 2 ('candidate')" in invoke("train")
    with pytest.raises(GateFailed, match="has not passed its gates"):
        runner.invoke(cli, ["--config", str(config_file), "promote"], catch_exceptions=False)
    assert "gate passed" in invoke("evaluate")
    compared = json.loads((tmp_path / "reports" / "evaluation-bid_filter" / "evaluation.json").read_text())
    assert compared["champion"]["ref"] == "bid_filter v1"
    assert {c["name"] for c in compared["gate"]["checks"]} >= {"auc", "calls_saved_at_target"}
    both = compared["explanations"]
    assert both["champion"]["ref"] == "bid_filter v1" and both["champion"]["rows"] == both["candidate"]["rows"]


def test_evaluate_without_a_model_is_a_registry_error(config_file: Path, registry_cfg: RegistryConfig) -> None:
    env = {"BIDFLOW__REGISTRY__TRACKING_URI": registry_cfg.tracking_uri}  # the session's store: no bid_filter there
    result = CliRunner().invoke(cli, ["--config", str(config_file), "evaluate"], env=env)
    assert isinstance(result.exception, RegistryError)
    assert "has no alias 'candidate'" in str(result.exception)


def test_user_mistake_prints_a_message_not_a_traceback(tmp_path: Path) -> None:
    env = os.environ | {"COLUMNS": "200", "BIDFLOW__REGISTRY__TRACKING_URI": "postgresql+psycopg://u@127.0.0.1:1/x"}
    result = subprocess.run(
        [sys.executable, "-m", "bidflow.cli", "promote"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "tracking database is unreachable" in result.stderr and "Traceback" not in result.stderr
