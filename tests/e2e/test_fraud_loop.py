"""The fraud kind through the whole loop with the click stream running, watched by the real drift monitor.

Production-shaped feature store: Feast's SQL registry (on SQLite here) and the Redis online store,
which only the stream processor fills: nothing is materialized, so every velocity feature a served
click reads was written by ``bidflow stream process`` from the replayed clicks.

1. the velocity views' offline tables are built from the real TalkingData sample (read in place) and
   two fraud versions are trained on their point-in-time training set (Feast), differing by seed;
2. ``bidflow canary serve`` and the drift monitor run; v1 is deployed as champion, v2 as a 50 % canary,
   each with its alibi-detect detector fitted on its held-out clicks;
3. ``bidflow stream process`` runs, and ``bidflow fraud replay`` sends the hold-out day's clicks of one
   device type only (4 % of the day's traffic) onto the stream and, a moment later each, through the
   router: the monitor finds the drift in the canary's traffic and rolls v2 back by itself, with no
   failed request; the processor accepted every published click;
4. the same drift in the champion's traffic starts one retraining run (``monitor.retrain: local``): the
   fraud pipeline under kfp.local, which validates the clicks, rebuilds the features, trains, gates
   and, if both gates pass, registers v3 and deploys it as the new canary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bidflow.config import Config, load_config
from bidflow.deploy.canary import RouterClient
from bidflow.deploy.steps import deploy_step, fit_detector
from bidflow.features import store as feature_store
from bidflow.features.build import write_tables
from bidflow.features.talkingdata import read_clicks
from bidflow.features.velocity import offline_tables
from bidflow.kinds import registered_name
from bidflow.modeling import registry
from bidflow.modeling.steps import train_step
from tests.conftest import SHARED_DATA, free_port, running_monitor, running_router, wait_for

pytestmark = pytest.mark.e2e

CLICKS = SHARED_DATA / "talkingdata_adtracking_sample" / "train_sample_2017-11-06_to_08.csv.gz"
REDIS_DB = 13  # this module only
WINDOW = 100  # clicks per detection window: one device type of 78 is a strong drift, a small window sees it
DAY = "2017-11-08"  # the hold-out day
DRIFTED = "device=2"
REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 900  # the retraining run: the fraud pipeline under kfp.local on a loaded 2-core machine


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[Path, Config]]:
    if not CLICKS.is_file():
        pytest.fail(f"the TalkingData sample is not at {CLICKS}: clone the project with ../shared beside it")
    root = tmp_path_factory.mktemp("fraud-loop")
    project = f"bidflow_fraud_{uuid.uuid4().hex[:8]}"
    host = redis_url.split("//", 1)[1].split("/", 1)[0]
    environment = {  # what the chart puts in the pods' environment for the production feature store
        "BIDFLOW_FEAST_REGISTRY_URL": f"sqlite:///{root / 'feast-registry.db'}",
        "BIDFLOW_FEAST_REDIS": f"{host},db={REDIS_DB}",
    }
    settings: dict[str, Any] = {
        "paths": {"reports": str(root / "reports")},
        "features": {
            "repo": str(REPO / "feature_repo"),
            "environment": "production",
            "project": project,
            "offline": str(root / "features"),
        },
        "fraud": {"source": str(CLICKS)},
        "stream": {"redis_url": f"redis://{host}/{REDIS_DB}", "stream": f"{project}:clicks", "block_ms": 20},
        "train": {
            "fraud": {
                "n_estimators": 300,
                "max_depth": 5,
                "learning_rate": 0.1,
                "nthread": 1,
                "validation_hours": 10,
                "refit": True,
            }
        },
        "evaluate": {"fraud": {"holdout_hours": 24}},
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "art")},
        "canary": {
            "kind": "fraud",
            "state": str(root / "deploy"),
            "router_port": free_port(),
            "champion_port": free_port(),
            "canary_port": free_port(),
            "monitor_url": None,  # set below, once the monitor's port is known
            "max_p99_ratio": 10.0,  # a loaded machine: latency is judged by the absolute limit
            "max_p99_ms": 500.0,
            "max_score_psi": 10.0,  # two versions trained with other seeds score differently; drift is the rule tested
        },
        "monitor": {
            "port": free_port(),
            "window_size": WINDOW,
            "detector": str(root / "deploy" / "detector"),
            "p_value": 0.01,
            "retrain": "local",
            "retrain_command": [sys.executable, "-m", "bidflow.cli"],
        },
    }
    settings["canary"]["monitor_url"] = f"http://127.0.0.1:{settings['monitor']['port']}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        config_file = root / "bidflow.yaml"
        config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
        config = load_config(config_file, environ={})
        write_tables(offline_tables(read_clicks(CLICKS)), config.features.offline)
        store = feature_store.open_store(config.features)
        feature_store.apply(store, config.features)
        for seed in (1, 2):  # two versions that differ only by their seed
            settings["train"]["fraud"]["seed"] = seed
            seeded = root / f"train-{seed}.yaml"
            seeded.write_text(yaml.safe_dump(settings), encoding="utf-8")
            version = train_step(load_config(seeded, environ={}), "fraud").version
            assert version is not None and version.version == str(seed)
        yield config_file, config
        import redis

        client = redis.Redis.from_url(f"redis://{host}/{REDIS_DB}")
        stale = list(client.scan_iter(match=f"*{project}*", count=10_000))
        if stale:
            client.delete(*stale)


@pytest.fixture(scope="module")
def monitor(setup: tuple[Path, Config]) -> Iterator[str]:
    with running_monitor(setup[0]) as url:
        yield url


def bidflow(config_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bidflow.cli", "--config", str(config_file), *args]


def test_a_drifted_fraud_canary_is_rolled_back_while_the_stream_runs(setup: tuple[Path, Config], monitor: str) -> None:
    config_file, config = setup
    processor_log = config_file.parent / "processor.log"
    with running_router(config_file) as url, processor_log.open("w") as log:
        processor = subprocess.Popen(bidflow(config_file, "stream", "process"), cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT, env=os.environ | {"COLUMNS": "200"})  # fmt: skip
        try:
            client = RouterClient(url)
            for version, percent, role in (("1", None, "champion"), ("2", 50, "canary")):
                done = deploy_step(config, version, percent=percent, actor="test", kind="fraud")
                assert done.role == role and done.reference is not None and done.reference_rows > 1_000
                assert (
                    fit_detector(done.reference, config.monitor.detector / version, config.monitor.p_value) == "alibi"
                )

            replay = subprocess.run(
                bidflow(config_file, "fraud", "replay", "--day", DAY, "--only", DRIFTED, "--speedup", "4000",
                        "--delay-ms", "300", "--per-request", "2"),
                cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ | {"COLUMNS": "200"},
            )  # fmt: skip
            assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
            assert "1,467 clicks published" in replay.stdout and "failed 0" in replay.stdout, replay.stdout
            # The monitor counts a rollback once the router has applied and recorded it.
            wait_for(lambda: httpx.get(f"{monitor}/status", timeout=5).json()["counts"]["rollbacks"] == 1)
            assert client.status().canary is None
            rollback = client.transitions()[-1]
            assert rollback.action == "rollback" and rollback.actor == "monitor"
            assert rollback.model is not None and rollback.model.version == "2"
            assert "drift in the canary's traffic" in rollback.reasons[0] and "device" in rollback.reasons[0]
            assert client.status().champion.version == "1"  # type: ignore[union-attr]
            status = httpx.get(f"{monitor}/status", timeout=5).json()
            # The v2 records the router forwards after the rollback are counted as bad and dropped: no errors.
            assert status["kind"] == "fraud" and status["errors"] == [], status
            metrics = httpx.get(f"{monitor}/metrics", timeout=5).text
            assert 'bidflow_drift_detected{feature="device",role="canary"} 1.0' in metrics
            v2 = registry.resolve(config.registry, registered_name(config, "fraud"), "2")
            assert v2.tags["deploy.rolled_back"] == "true" and "device" in v2.tags["deploy.rollback_reason"]

            state = config.canary.state
            (request, *later) = jsonl(state / "retrain_requests.jsonl")
            assert request["pipeline"] == "fraud" and request["version"] == "1" and request["decision"] == "started"
            assert {r["decision"] for r in later} <= {"running", "cooldown"}
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while len(events := jsonl(state / "retrain_runs.jsonl")) < 2:
                assert time.monotonic() < deadline, (state / "retrain" / request["run"] / "run.log").read_text()[-4000:]
                time.sleep(1.0)
            outcome = events[-1]
            assert outcome["event"] in {"succeeded", "gate_failed"}, outcome
            assert set(outcome["gates"]) == {"evaluation", "bias"}
            if outcome["event"] == "succeeded":
                assert outcome["version"] == "3" and outcome["deployed_as"] == "canary"
                assert (config.monitor.detector / "3").is_dir()  # the monitor watches the new canary
        finally:
            processor.terminate()  # SIGTERM, as Kubernetes stops it: it checkpoints and prints its counters
            try:
                processor.wait(timeout=60)
            except subprocess.TimeoutExpired:
                processor.kill()  # the counters below are then missing, which fails the test
                processor.wait()
    printed = processor_log.read_text()
    assert "processed 1,467 entries: 1,467 accepted, 0 duplicates, 0 late" in printed, printed[-2000:]
