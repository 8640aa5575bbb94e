"""Drift in the champion's traffic starts exactly one retraining run, which ends in a gated candidate.

One bid-filter version is trained on four generated hours, registered, deployed as the champion on
the local backend and given its alibi-detect detector (fitted in ``.venv-monitor``). The drift
monitor runs with ``monitor.retrain: local``, its run given the same four hours (``--raw``). Then an
hour in which the device mix swings to connected TV is replayed, window after window of drift in
the champion's traffic:

1. the first window starts one ``bidflow pipeline run --local`` in the background; the monitor keeps
   answering, and the windows after it record ``running``, not a second run;
2. the run ends in a candidate that passed both gates, registered and deployed as a 20 % canary
   whose detector the monitor now loads, or in a recorded gate failure with nothing registered;
3. the drift is replayed again after the run: the cool-down holds, still one run; a canary from step 2,
   trained before the swing, is found drifting by its published detector and rolled back.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bidflow.config import Config, SimulateConfig, load_config
from bidflow.data.ingest import ingest
from bidflow.data.simulate import simulate
from bidflow.deploy.canary import RouterClient
from bidflow.deploy.replay import read_auctions, replay
from bidflow.deploy.steps import deploy_step, fit_detector
from bidflow.modeling import registry
from bidflow.modeling.steps import drift_reference_step, train_step
from bidflow.monitoring.auth import monitor_token
from tests.conftest import REPO, free_port, running_router, wait_for
from tests.e2e.test_canary_drift import monitor

__all__ = ["monitor"]  # the monitor process (python -m bidflow.monitoring serve), on this module's setup

pytestmark = pytest.mark.e2e

START = datetime(2026, 11, 2, 14, tzinfo=UTC)
WINDOW = 300
RUN_TIMEOUT_S = 540.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    root = tmp_path_factory.mktemp("retrain-e2e")
    raw = root / "raw"
    simulate(SimulateConfig(start=START, hours=4, auctions_per_hour=1_500, publishers=80), raw)
    monitor_port = free_port()
    settings: dict[str, Any] = {
        "paths": {"parquet": str(root / "parquet"), "reports": str(root / "reports"), "reference": str(root / "ref")},
        "ingest": {"workers": 1},
        "features": {
            "repo": str(REPO / "feature_repo"),
            "offline": str(root / "features"),
            "state": str(root / "feast"),
        },
        "train": {"feature_source": "request", "n_estimators": 40, "max_depth": 4, "nthread": 1},
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "art")},
        "canary": {
            "state": str(root / "deploy"),
            "router_port": free_port(),
            "champion_port": free_port(),
            "canary_port": free_port(),
            "monitor_url": f"http://127.0.0.1:{monitor_port}",
        },
        "monitor": {
            "port": monitor_port,
            "window_size": WINDOW,
            "detector": str(root / "deploy" / "detector"),
            "retrain": "local",
            "retrain_cooldown_hours": 6,
            # The platform's environment is the one running these tests.
            "retrain_command": [sys.executable, "-m", "bidflow.cli"],
            "retrain_args": ["--raw", str(raw), "--param", "feature_source=request"],
        },
    }
    config_file = root / "bidflow.yaml"
    config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
    config = load_config(config_file, environ={})

    ingest(raw, root / "parquet", config.ingest)
    version = train_step(config, "bid_filter").version
    assert version is not None and version.version == "1"
    _, reference, _ = drift_reference_step(config, model=version.version)
    assert fit_detector(reference, config.monitor.detector / version.version, config.monitor.p_value) == "alibi"
    return config_file, config


def drifted_hour(root: Path) -> list[Any]:
    """The hour after training in the same market, the device mix swung to connected TV."""
    out = root / "traffic-device_shift"
    if not out.exists():
        simulate(
            SimulateConfig(
                start=START + timedelta(hours=4), hours=1, auctions_per_hour=1_500, publishers=80,
                scenario="device_shift", scenario_start_hour=0,
            ),
            out,
        )  # fmt: skip
    return list(read_auctions(sorted(out.rglob("*.jsonl.gz"))))


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def test_champion_drift_starts_one_retraining_run_that_ends_gated(setup: tuple[Path, Config], monitor: str) -> None:
    config_file, config = setup
    state = config.canary.state
    with running_router(config_file) as url:
        client = RouterClient(url)
        predict = f"{url}/v1/models/bid_filter:predict"
        assert deploy_step(config, "1", actor="test").role == "champion"

        answered = asyncio.run(
            replay(
                drifted_hour(config_file.parent),
                predict,
                concurrency=8,
                monitor_url=monitor,
                monitor_token=monitor_token(config),
            )
        )
        assert answered.failed == 0, answered.failures
        # The router hands served payloads to the monitor in batches off the request path: wait for the last.
        wait_for(lambda: httpx.get(f"{monitor}/status", timeout=5).json()["counts"]["payloads"] >= answered.ok)
        status = httpx.get(f"{monitor}/status", timeout=5).json()
        assert status["counts"]["alerts"] >= 2, status["counts"]  # window after window of the champion's drift
        assert status["counts"]["retrain_runs"] == 1
        requests = jsonl(state / "retrain_requests.jsonl")
        assert requests[0]["decision"] == "started" and requests[0]["pipeline"] == "bid_filter"
        assert "device_type" in requests[0]["reason"] and requests[0]["version"] == "1"
        run = requests[0]["run"]
        # Answered while the candidate trains: the later windows found the run in flight.
        assert {r["decision"] for r in requests[1:]} <= {"running", "cooldown"} and len(requests) >= 2

        deadline = time.monotonic() + RUN_TIMEOUT_S
        while len(events := jsonl(state / "retrain_runs.jsonl")) < 2:
            assert time.monotonic() < deadline, (state / "retrain" / run / "run.log").read_text()[-4000:]
            time.sleep(1.0)
        started, outcome = events
        assert started["event"] == "started" and started["run"] == outcome["run"] == run
        assert outcome["event"] in {"succeeded", "gate_failed"}, outcome
        assert set(outcome["gates"]) == {"evaluation", "bias"}
        if outcome["event"] == "succeeded":
            assert outcome["gates"] == {"evaluation": True, "bias": True}
            assert outcome["version"] == "2" and "candidate" in outcome["aliases"]
            assert outcome["deployed_as"] == "canary"
            candidate = registry.resolve(config.registry, "bid_filter", "2")
            assert "candidate" in candidate.aliases and candidate.tags["gate.evaluation"] == "passed"
            deployed = client.status()
            assert deployed.champion is not None and deployed.champion.version == "1"
            assert deployed.canary is not None and deployed.canary.version == "2" and deployed.canary_percent == 20
            assert (config.monitor.detector / "2").is_dir()  # the monitor watches the new canary
        else:
            assert outcome["failed_gates"] and [
                v.version for v in registry.versions(config.registry, "bid_filter")
            ] == ["1"]
            assert client.status().canary is None

        # The same drift again, after the run: the cool-down holds, whatever the run's outcome. Counted from
        # now: the monitor may still have judged windows of the first replay while the run was in flight.
        asked = len(jsonl(state / "retrain_requests.jsonl"))
        again = asyncio.run(
            replay(
                drifted_hour(config_file.parent),
                predict,
                concurrency=8,
                monitor_url=monitor,
                monitor_token=monitor_token(config),
            )
        )
        assert again.failed == 0, again.failures
        later = jsonl(state / "retrain_requests.jsonl")[asked:]
        assert later and {r["decision"] for r in later} == {"cooldown"} and {r["run"] for r in later} == {run}
        status = httpx.get(f"{monitor}/status", timeout=5).json()
        assert status["counts"]["retrain_runs"] == 1 and status["retrain"]["running"] is None
        assert status["counts"][f"retrain_{outcome['event']}"] == 1
        assert len(jsonl(state / "retrain_runs.jsonl")) == 2
        metrics = httpx.get(f"{monitor}/metrics", timeout=5).text
        assert 'bidflow_monitor_events_total{kind="retrain_runs"} 1.0' in metrics
        if outcome["event"] == "succeeded":
            # The candidate was trained on the hours before the swing, so its detector (published by the
            # trigger) finds the same drift in its canary traffic: the monitor rolls it back.
            wait_for(lambda: client.status().canary is None)
            rollback = client.transitions()[-1]
            assert rollback.action == "rollback" and rollback.actor == "monitor"
            assert rollback.model is not None and rollback.model.version == "2"
