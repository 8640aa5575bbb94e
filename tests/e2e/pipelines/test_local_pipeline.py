"""``bidflow pipeline run --local``: the pipelines under kfp.local, end to end, with every gate outcome.

Bid filter: both gates pass (registered as ``candidate``), the bias gate fails, the evaluation gate
fails (each: nothing registered, exit 1, the reason printed), the data gate fails (the run fails).
CTR: the real iPinYou sample, registered as ``candidate``.

Data: four generated hours from 14:00 UTC, 1,500 auctions an hour. The window is chosen so every
partner behaves the same in the training hours and the held-out hour: ``juniper`` bids at full rate
only from 12:00 UTC and ``willow`` only before 12:00, so a short window that crosses noon would
show the bias gate a partner whose held-out behaviour training never saw (a real finding, but not
the one these tests are about).

Each run checks, besides its verdict, that no task pip-installed anything: a ``pip`` shim first on
PYTHONPATH records any ``python -m pip`` call (this environment has no pip of its own), and the
installed kfp distribution is unchanged afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bidflow.config import RegistryConfig, SimulateConfig
from bidflow.data.simulate import simulate
from bidflow.deploy.journal import FileLog
from bidflow.modeling import registry
from tests.conftest import free_port, running_router

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
MODEL = "bid_filter"
# `bidflow` with the pipeline group registered (idempotent: also right once cli.py registers it).
CLI = [
    sys.executable,
    "-c",
    "from bidflow.cli import app, cli; from bidflow.pipelines.commands import register_pipeline_commands; "
    "register_pipeline_commands(cli); app()",
]


@pytest.fixture(scope="module")
def raw_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    start = datetime(2026, 11, 2, 14, tzinfo=UTC)
    simulate(SimulateConfig(start=start, hours=4, auctions_per_hour=1_500, publishers=80), out)
    return out


@pytest.fixture(scope="module")
def pip_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shim = tmp_path_factory.mktemp("pip-shim")
    (shim / "pip").mkdir()
    (shim / "pip" / "__init__.py").write_text("")
    (shim / "pip" / "__main__.py").write_text(
        "import os, sys\n"
        "with open(os.environ['BIDFLOW_TEST_PIP_CALLS'], 'a') as f:\n"
        "    f.write(' '.join(sys.argv) + '\\n')\n"
        "sys.exit(3)\n"
    )
    return shim


def installed_kfp() -> dict[str, float]:
    import kfp

    site = Path(kfp.__file__).parents[1]
    return {p.name: p.stat().st_mtime for p in site.iterdir() if p.name.lower().startswith(("kfp", "pip"))}


def run_pipeline(
    tmp_path: Path,
    raw: Path | None,
    shim: Path,
    settings: dict[str, Any],
    *params: str,
    router: bool = False,
    timeout_s: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``bidflow --config <tmp config> pipeline run --local`` in ``tmp_path``, with its own stores.

    With ``router`` the local deployment (``bidflow canary serve``) runs beside it, for the deploy step.
    """
    base: dict[str, Any] = {
        "ingest": {"workers": 1},
        "features": {
            "repo": str(REPO / "feature_repo"),
            "offline": str(tmp_path / "features"),
            "state": str(tmp_path / "feast"),
        },
        "train": {
            "n_estimators": 40,
            "early_stopping_rounds": 8,
            "max_depth": 4,
            "learning_rate": 0.3,
            "nthread": 1,
            "min_category_count": 5,
        },
        "registry": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": str(tmp_path / "art")},
        "paths": {"reports": str(tmp_path / "reports"), "reference": str(tmp_path / "reference")},
        "canary": {
            "state": str(tmp_path / "deploy"),
            "router_port": free_port(),
            "champion_port": free_port(),
            "canary_port": free_port(),
            "monitor_url": None,
        },
    }
    for section, values in settings.items():
        base[section] = base.get(section, {}) | values
    config = tmp_path / "bidflow.yaml"
    config.write_text(yaml.safe_dump(base))
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "BIDFLOW_TEST_PIP_CALLS": str(tmp_path / "pip-calls.txt"),
        "COLUMNS": "200",
    }
    data = ["--raw", str(raw)] if raw is not None else []
    command = [
        *CLI,
        "--config",
        str(config),
        "pipeline",
        "run",
        "--local",
        *data,
        "--out",
        str(tmp_path / "run"),
        *params,
    ]
    before = installed_kfp()
    with running_router(config) if router else contextlib.nullcontext():
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert not (tmp_path / "pip-calls.txt").exists(), (tmp_path / "pip-calls.txt").read_text()
    assert installed_kfp() == before
    return result


def versions(tmp_path: Path, model: str = MODEL) -> list[registry.ModelRef]:
    cfg = RegistryConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=tmp_path / "art")
    return registry.versions(cfg, model)


def task_dirs(tmp_path: Path) -> set[str]:
    (run,) = (tmp_path / "run" / "outputs").iterdir()
    return {p.name for p in run.iterdir()}


def test_gates_pass_the_model_is_registered_and_deployed(tmp_path: Path, raw_logs: Path, pip_shim: Path) -> None:
    result = run_pipeline(tmp_path, raw_logs, pip_shim, {}, router=True)  # Feast features, default gates
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "evaluation gate passed" in out and "bias gate passed" in out
    assert "registered bid_filter v1 as 'candidate'" in out
    assert "deployed version 1 as champion" in out
    (version,) = versions(tmp_path)
    # The first deployed version is the champion (no canary to compare with), mirrored in the registry.
    assert set(version.aliases) == {"candidate", "champion"}
    assert version.tags["gate.evaluation"] == version.tags["gate.fairness"] == "passed"
    assert version.tags["run_id"] == version.run_id
    assert {"ingest-logs", "validate-data", "build-features", "apply-features", "materialize-features",
            "train-model", "evaluate-model", "check-bias", "register-model", "deploy-canary",
            "fit-drift-detector"} <= task_dirs(tmp_path)  # fmt: skip
    (run,) = (tmp_path / "run" / "outputs").iterdir()
    assert "<html" in (run / "evaluate-model" / "report").read_text()[:200].lower()
    assert (tmp_path / "feast" / "online_store.db").is_file()  # materialized
    assert (run / "fit-drift-detector" / "detector").is_dir()  # saved with alibi-detect's save_detector
    (transition,) = FileLog(tmp_path / "deploy" / "transitions.jsonl").read()
    assert transition.action == "deploy" and transition.actor == "pipeline" and transition.model is not None
    assert transition.model.version == "1"


def test_a_failing_bias_gate_stops_before_register(tmp_path: Path, raw_logs: Path, pip_shim: Path) -> None:
    # No tolerance at all: some slice always differs from the overall values by more than zero.
    strict = {"max_recall_gap": 0.0, "max_calibration_gap": 0.0, "confidence_z": 0.0, "min_slice_rows": 50}
    result = run_pipeline(tmp_path, raw_logs, pip_shim, {"fairness": strict}, "--param", "feature_source=request")
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "evaluation gate passed" in result.stdout and "bias gate FAILED" in result.stdout
    assert "pipeline stopped before register_model: nothing was registered" in result.stderr
    assert "failed gates: bias" in result.stderr and "Traceback" not in result.stderr
    assert "bias gate FAILED (" in result.stdout  # the task's own log names the failing slices
    assert versions(tmp_path) == []
    assert "register-model" not in task_dirs(tmp_path) and "check-bias" in task_dirs(tmp_path)


def test_a_failing_evaluation_gate_stops_before_register(tmp_path: Path, raw_logs: Path, pip_shim: Path) -> None:
    # Every bid kept on the held-out hour, with no shortfall allowed: thresholds chosen on the
    # validation hour always miss some held-out bid.
    evaluate = {"target_bid_recall": 1.0, "max_recall_shortfall": 0.0}
    result = run_pipeline(tmp_path, raw_logs, pip_shim, {"evaluate": evaluate}, "--param", "feature_source=request")
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "evaluation gate FAILED" in result.stdout and "realized_bid_recall" in result.stdout
    assert "failed gates: evaluation" in result.stderr
    assert versions(tmp_path) == []
    assert "register-model" not in task_dirs(tmp_path)


def test_a_failing_data_gate_fails_the_run_before_training(tmp_path: Path, raw_logs: Path, pip_shim: Path) -> None:
    # Bad data is an incident, not a verdict: the validate task fails and so does the run.
    result = run_pipeline(tmp_path, raw_logs, pip_shim, {"validate": {"min_rows": 10**9}})
    assert result.returncode == 1
    assert "data validation failed" in result.stdout  # the task's log
    assert "Inner task failed: 'validate-data'" in result.stderr and "\x1b[" not in result.stderr
    assert "train-model" not in task_dirs(tmp_path) and not (tmp_path / "mlflow.db").exists()


def test_ctr_pipeline_registers_and_deploys_its_candidate(tmp_path: Path, pip_shim: Path, shared_data: Path) -> None:
    sample = shared_data / "ipinyou_2997_sample" / "train.csv.gz"  # read in place, never copied
    settings = {"features": {"ctr_source": str(sample)}, "canary": {"kind": "ctr"}}  # a deployment serving CTR
    result = run_pipeline(tmp_path, None, pip_shim, settings, "--pipeline", "ctr", router=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "registered ctr_ipinyou v1 as 'candidate'" in result.stdout
    (version,) = versions(tmp_path, "ctr_ipinyou")
    assert version.tags["gate.evaluation"] == version.tags["gate.fairness"] == "passed"
    assert {"build-ctr-features", "materialize-features", "register-model"} <= task_dirs(tmp_path)
    assert "deployed version 1 as champion" in result.stdout
    assert set(version.aliases) == {"candidate", "champion"}
    assert {"deploy-canary", "fit-drift-detector"} <= task_dirs(tmp_path)


def fraud_settings(shared_data: Path, **extra: dict[str, Any]) -> dict[str, Any]:
    clicks = shared_data / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"  # read in place
    # The hold-out is the sample's last day, as in bidflow.yaml: its last hour alone has a handful of conversions.
    return {"fraud": {"source": str(clicks)}, "evaluate": {"fraud": {"holdout_hours": 24}}} | extra


def test_fraud_pipeline_validates_gates_registers_and_deploys(tmp_path: Path, pip_shim: Path,
                                                              shared_data: Path) -> None:  # fmt: skip
    settings = fraud_settings(shared_data, canary={"kind": "fraud"})  # a deployment serving the fraud kind
    result = run_pipeline(tmp_path, None, pip_shim, settings, "--pipeline", "fraud", router=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "evaluation gate passed" in result.stdout and "bias gate passed" in result.stdout
    assert "registered fraud_talkingdata v1 as 'candidate'" in result.stdout
    (version,) = versions(tmp_path, "fraud_talkingdata")
    assert version.tags["gate.evaluation"] == version.tags["gate.fairness"] == "passed"
    assert {"validate-clicks", "build-fraud-features", "materialize-features", "train-model", "evaluate-model",
            "check-bias", "register-model", "deploy-canary", "fit-drift-detector"} <= task_dirs(tmp_path)  # fmt: skip
    assert "deployed version 1 as champion" in result.stdout
    (run,) = (tmp_path / "run" / "outputs").iterdir()
    assert "PASSED" in (run / "validate-clicks" / "report").read_text()
    evaluation = (run / "evaluate-model" / "report").read_text()
    assert "pr_auc" in evaluation  # the fraud kind's gate metric is in its report
    features = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert {"fraud_ip_velocity", "fraud_ip_app_velocity", "fraud_ip_device_os_velocity"} <= {
        name.split(".")[0] for name in features
    }, features


def test_fraud_pipeline_stops_at_its_data_gate(tmp_path: Path, pip_shim: Path, shared_data: Path) -> None:
    # The real sample converts 0.24 % of its clicks: a gate expecting half of them to convert fails it.
    settings = fraud_settings(shared_data)
    settings["fraud"] = settings["fraud"] | {"converting_share": [0.4, 0.6]}
    result = run_pipeline(tmp_path, None, pip_shim, settings, "--pipeline", "fraud")
    assert result.returncode == 1
    assert "data validation failed" in result.stdout and "converting_share" in result.stdout
    assert "Inner task failed: 'validate-clicks'" in result.stderr
    assert "build-fraud-features" not in task_dirs(tmp_path) and not (tmp_path / "mlflow.db").exists()


def test_the_shim_sees_the_install_kfp_local_does_for_a_default_component(tmp_path: Path, pip_shim: Path) -> None:
    """The behaviour the components avoid: a plain ``@dsl.component`` pip-installs kfp into this venv."""
    script = tmp_path / "naive.py"
    script.write_text(
        "from kfp import dsl, local\n"
        "@dsl.component(base_image='python:3.11')\n"
        "def naive(x: int) -> int:\n"
        "    return x\n"
        f"local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root={str(tmp_path / 'out')!r},"
        " raise_on_error=False)\n"
        "naive(x=1)\n"
    )
    calls = tmp_path / "pip-calls.txt"
    env = os.environ | {"PYTHONPATH": str(pip_shim), "BIDFLOW_TEST_PIP_CALLS": str(calls)}
    subprocess.run([sys.executable, "-W", "ignore", str(script)], env=env, capture_output=True, timeout=120, check=True)
    assert "install" in calls.read_text() and "kfp==" in calls.read_text()
