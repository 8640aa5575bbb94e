"""The retraining trigger: one run per cool-down (kept across a restart), outcomes recorded, the switch.

The run's command is a stand-in ``bidflow`` (a Python script) that prints what ``bidflow pipeline run
--local`` prints for each outcome, so the real subprocess path runs; the real command is run by
tests/e2e/test_retrain_on_drift.py.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bidflow.config import CanaryConfig, Config, MonitorConfig
from bidflow.errors import ConfigError
from bidflow.monitoring.drift import DriftDetector, drift_frame, drift_row, fit_detector
from bidflow.monitoring.retrain import RetrainTrigger, read_outcome
from bidflow.monitoring.watch import Monitor
from bidflow.openrtb import decode_request_obj
from bidflow.openrtb.features import request_features
from tests.unit.monitoring.conftest import Payloads

HOUR = 3600.0
DRIFT = {"drift": True, "features": []}

FAKE_BIDFLOW = r"""
import json, os, pathlib, sys, time
behaviour, args = sys.argv[1], sys.argv[2:]
folder = pathlib.Path(__file__).parent
with (folder / "calls.jsonl").open("a") as calls:
    calls.write(json.dumps(args) + "\n")
while (folder / "hold").exists():
    time.sleep(0.05)
if behaviour == "succeed":
    out = pathlib.Path(args[args.index("--out") + 1])
    detector = out / "outputs" / "pipeline-run" / "fit-drift-detector" / "detector"
    detector.mkdir(parents=True)
    (detector / "meta.json").write_text("{}")
    print("evaluation gate passed; report: /r/evaluation.html")
    print("bias gate passed; report: /r/bias.html")
    print("deployed version 7 as canary")
    print("registered bid_filter v7 as 'candidate'")
elif behaviour == "gate":
    print("evaluation gate FAILED; report: /r/evaluation.html")
    print("bias gate passed; report: /r/bias.html")
    print("pipeline stopped before register_model: nothing was registered (MLflow run 1a2b)", file=sys.stderr)
    sys.exit(1)
elif behaviour == "submit":
    print("pipeline p1, version v1 (v1)")
    print("run 5f3e-run '" + args[args.index("--run-name") + 1] + "' in experiment bidflow")
elif behaviour == "sleep":
    time.sleep(60)
else:
    print("Traceback (most recent call last):\nRuntimeError: boom", file=sys.stderr)
    sys.exit(2)
"""


class Clock:
    """Seconds since the epoch that a test moves on."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


Make = Callable[..., RetrainTrigger]


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    script = tmp_path / "bin" / "bidflow.py"
    script.parent.mkdir()
    script.write_text(FAKE_BIDFLOW)
    return script


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(tmp_path: Path, fake: Path, clock: Clock) -> Make:
    def trigger(behaviour: str = "succeed", **monitor: Any) -> RetrainTrigger:
        settings: dict[str, Any] = {
            "retrain": "local",
            "retrain_command": [sys.executable, str(fake), behaviour],
            "retrain_args": ["--raw", "logs/"],
            "detector": tmp_path / "detectors",
        }
        # any kind: the trigger names none itself, it retrains the kind the deployment serves
        canary = CanaryConfig(state=tmp_path / "deploy", kind="ctr")
        config = Config(monitor=MonitorConfig(**(settings | monitor)), canary=canary)
        return RetrainTrigger(config, config.canary.state, clock=clock)

    return trigger


def calls(fake: Path) -> list[list[str]]:
    path = fake.parent / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ask(trigger: RetrainTrigger) -> dict[str, Any]:
    return trigger.request(version="3", reason="drift in the champion's traffic (v3): device_type", drift=DRIFT)


def test_one_run_at_a_time_and_one_per_cooldown(tmp_path: Path, fake: Path, make: Make, clock: Clock) -> None:
    trigger = make(retrain_cooldown_hours=6)
    (fake.parent / "hold").touch()  # the run stays in flight until released
    first = ask(trigger)
    assert first["decision"] == "started" and first["run"].startswith("ctr-")
    while not calls(fake):
        time.sleep(0.02)
    clock.now += 7 * HOUR  # past the cool-down, but the first run is still going
    assert ask(trigger)["decision"] == "running"
    assert trigger.status()["running"] == first["run"]
    (fake.parent / "hold").unlink()
    assert trigger.wait(30)
    clock.now -= 2 * HOUR  # 5 h after the first start
    for _ in range(3):  # drift seen window after window: the same answer
        later = ask(trigger)
        assert later["decision"] == "cooldown" and later["run"] == first["run"]
    clock.now += 1 * HOUR + 1  # 6 h and a second
    assert ask(trigger)["decision"] == "started"
    assert trigger.wait(30)

    args, again = calls(fake)
    folder = tmp_path / "deploy" / "retrain" / first["run"]
    assert args == ["--config", str(folder / "bidflow.yaml"), "pipeline", "run", "--local",
                    "--out", str(folder / "pipeline"), "--pipeline", "ctr", "--raw", "logs/"]  # fmt: skip
    assert again != args  # its own folder
    requests = lines(tmp_path / "deploy" / "retrain_requests.jsonl")
    assert [r["decision"] for r in requests] == ["started", "running", "cooldown", "cooldown", "cooldown", "started"]
    assert all(r["pipeline"] == "ctr" and r["version"] == "3" and "champion" in r["reason"] for r in requests)
    assert trigger.status()["counts"] == {"retrain_requests": 6, "retrain_runs": 2, "retrain_succeeded": 2,
                                          "retrain_gate_failed": 0, "retrain_submitted": 0,
                                          "retrain_failed": 0}  # fmt: skip
    # The run was given the monitor's own configuration.
    written = (folder / "bidflow.yaml").read_text()
    assert "kind: ctr" in written


def test_the_cooldown_survives_a_restart(tmp_path: Path, fake: Path, make: Make, clock: Clock) -> None:
    first = make(retrain_cooldown_hours=6)
    started = ask(first)
    assert first.wait(30)
    clock.now += 5 * HOUR
    restarted = make(retrain_cooldown_hours=6)  # a new monitor process reads the state folder
    assert restarted.status()["last"]["event"] == "succeeded"
    assert restarted.status()["next_run_after"] == pytest.approx(clock.now + 1 * HOUR)
    again = ask(restarted)
    assert again["decision"] == "cooldown" and again["run"] == started["run"]
    assert len(calls(fake)) == 1
    clock.now += 1 * HOUR + 1
    assert ask(restarted)["decision"] == "started"
    assert restarted.wait(30) and len(calls(fake)) == 2


def test_a_failing_run_is_recorded_counted_and_not_retried(
    tmp_path: Path, fake: Path, make: Make, clock: Clock
) -> None:
    trigger = make("crash", retrain_cooldown_hours=6)
    run = ask(trigger)["run"]
    assert trigger.wait(30)
    started, failed = lines(tmp_path / "deploy" / "retrain_runs.jsonl")
    assert started["event"] == "started" and started["run"] == run
    assert failed["event"] == "failed" and failed["run"] == run and failed["exit_code"] == 2
    assert "RuntimeError: boom" in failed["error"]
    assert trigger.status()["counts"]["retrain_failed"] == 1
    for _ in range(5):  # drift keeps being seen window after window
        clock.now += 0.5 * HOUR
        assert ask(trigger)["decision"] == "cooldown"
    assert len(calls(fake)) == 1
    assert (tmp_path / "deploy" / "retrain" / run / "run.log").read_text().endswith("boom\n")


def test_a_failed_gate_is_a_recorded_verdict(tmp_path: Path, make: Make) -> None:
    trigger = make("gate")
    ask(trigger)
    assert trigger.wait(30)
    outcome = trigger.status()["last"]
    assert outcome["event"] == "gate_failed"
    assert outcome["gates"] == {"evaluation": False, "bias": True} and outcome["failed_gates"] == ["evaluation"]
    assert outcome["reports"]["evaluation"] == "/r/evaluation.html"
    assert trigger.status()["counts"]["retrain_gate_failed"] == 1


def test_a_successful_run_records_the_candidate_and_publishes_its_detector(tmp_path: Path, make: Make) -> None:
    trigger = make("succeed")
    ask(trigger)
    assert trigger.wait(30)
    outcome = lines(tmp_path / "deploy" / "retrain_runs.jsonl")[-1]
    assert outcome["event"] == "succeeded" and outcome["pipeline"] == "ctr"
    assert outcome["gates"] == {"evaluation": True, "bias": True}
    assert (outcome["model"], outcome["version"], outcome["aliases"]) == ("bid_filter", "7", ["candidate"])
    assert outcome["deployed_as"] == "canary"
    # The monitor loads <monitor.detector>/<version>: the new canary is watched.
    assert outcome["detector"] == str(tmp_path / "detectors" / "7")
    assert (tmp_path / "detectors" / "7" / "meta.json").is_file()


def test_record_mode_only_records(tmp_path: Path, fake: Path, make: Make) -> None:
    trigger = make(retrain="record")
    assert [ask(trigger)["decision"] for _ in range(3)] == ["recorded"] * 3
    assert trigger.wait(1) and calls(fake) == []
    assert not (tmp_path / "deploy" / "retrain_runs.jsonl").exists()
    assert trigger.status()["counts"]["retrain_runs"] == 0
    assert MonitorConfig().retrain == "record"  # opt-in: a run deploys a canary by itself


def test_submit_sends_the_pipeline_to_the_endpoint(tmp_path: Path, fake: Path, make: Make) -> None:
    with pytest.raises(ConfigError, match="retrain_host"):
        make("submit", retrain="submit")
    trigger = make("submit", retrain="submit", retrain_host="https://kfp.example.com/pipeline", retrain_args=[])
    run = ask(trigger)["run"]
    assert trigger.wait(30)
    (args,) = calls(fake)
    config = str(tmp_path / "deploy" / "retrain" / run / "bidflow.yaml")
    assert args == ["--config", config, "pipeline", "submit", "--host", "https://kfp.example.com/pipeline",
                    "--config-file", config, "--run-name", run, "--pipeline", "ctr"]  # fmt: skip
    outcome = trigger.status()["last"]
    assert outcome["event"] == "submitted" and outcome["kfp_run"] == "5f3e-run"


def test_a_run_past_its_time_is_stopped_and_failed(make: Make) -> None:
    trigger = make("sleep", retrain_timeout_minutes=0.01)
    ask(trigger)
    assert trigger.wait(30)
    outcome = trigger.status()["last"]
    assert outcome["event"] == "failed" and "retrain_timeout_minutes" in outcome["error"]


def test_a_command_that_cannot_start_is_a_failed_run(tmp_path: Path, make: Make) -> None:
    trigger = make(retrain_command=[str(tmp_path / "no-such-bidflow")])
    ask(trigger)
    assert trigger.wait(30)
    outcome = trigger.status()["last"]
    assert outcome["event"] == "failed" and "FileNotFoundError" in outcome["error"]
    assert trigger.status()["running"] is None


def test_read_outcome_without_registration_is_a_failure() -> None:
    event, details = read_outcome("local", 0, "evaluation gate passed; report: /r/e.html\n")
    assert event == "failed" and details["gates"] == {"evaluation": True}
    event, details = read_outcome("submit", 1, "error: endpoint unreachable")
    assert event == "failed" and details["error"] == "error: endpoint unreachable"


def test_the_monitor_goes_on_while_its_retraining_run_is_in_flight(
    tmp_path: Path, fake: Path, make: Make, payloads: Payloads
) -> None:
    rows = []
    for record in payloads("none", "champion"):
        instance = record["request"]["instances"][0]
        scores = [d["score"] for d in record["response"]["predictions"][0]["decisions"]]
        features = request_features(decode_request_obj(instance["request"]), instance["ts_ms"])
        rows.append(drift_row(features, sum(scores) / len(scores)))
    detector: DriftDetector = fit_detector(drift_frame(rows), p_value=0.01, backend="scipy")
    trigger = make()
    # The monitor reads bid-filter payloads; the trigger (its own configuration) retrains the ctr pipeline.
    config = trigger.config.model_copy(
        update={
            "monitor": trigger.config.monitor.model_copy(update={"window_size": 400}),
            "canary": trigger.config.canary.model_copy(update={"kind": "bid_filter"}),
        }
    )
    watch = Monitor(config, None, detector_loader=lambda version: detector, retrain=trigger)
    drifted = [{k: v for k, v in r.items() if k != "bids"} for r in payloads("publisher_flood", "champion")]

    (fake.parent / "hold").touch()  # the run does not end until released
    assert watch.payloads(drifted[:400]) == 400  # returns with the run still going
    assert watch.payloads(drifted[400:800]) == 400  # the next window: an alert, no second run
    status = watch.status()
    assert status["counts"]["alerts"] == 2 and status["counts"]["retrain_runs"] == 1
    assert status["retrain"]["running"] is not None and status["retrain"]["pipeline"] == "ctr"
    (fake.parent / "hold").unlink()
    assert trigger.wait(30)
    assert watch.status()["counts"]["retrain_succeeded"] == 1 and len(calls(fake)) == 1
    decisions = [r["decision"] for r in lines(tmp_path / "deploy" / "retrain_requests.jsonl")]
    assert decisions == ["started", "running"]
