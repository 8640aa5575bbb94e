"""The CTR model through the whole loop on the local backend, watched by the real drift monitor.

With ``canary.kind: ctr``, two CTR versions are trained on the iPinYou sample (read in place) and
registered; deploying each writes its drift reference (impressions' fields and scores, one row per
impression) and an alibi-detect detector is fitted for it in ``.venv-monitor``. Then, with ``bidflow
canary serve`` (router + model servers) and ``python -m bidflow.monitoring serve`` running:

1. v1 is deployed as champion, v2 as a 50 % canary;
2. impressions of one region only (about a fifth of the sample's traffic) are replayed through the
   router as v1 instance batches: the monitor finds the drift in the canary's traffic and rolls v2
   back by itself, with no failed client request; the champion's drifted traffic raises an alert.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bidflow.config import Config, load_config
from bidflow.deploy.canary import RouterClient
from bidflow.deploy.replay import read_instances, replay, select_rows
from bidflow.deploy.steps import deploy_step, fit_detector
from bidflow.kinds import kind
from bidflow.modeling import registry
from bidflow.modeling.steps import train_step
from tests.conftest import SHARED_DATA, free_port, running_monitor, running_router, wait_for

pytestmark = pytest.mark.e2e

SAMPLE = SHARED_DATA / "ipinyou_2997_sample" / "train.csv.gz"
WINDOW = 200  # impressions per detection window: the drift is strong (one region of 34), a small window sees it
DRIFTED_REGION = "216"
PER_REQUEST = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    if not SAMPLE.is_file():
        pytest.fail(f"the iPinYou sample is not at {SAMPLE}: clone the project with ../shared beside it")
    root = tmp_path_factory.mktemp("ctr-loop")
    settings: dict[str, Any] = {
        "paths": {"reports": str(root / "reports")},
        "features": {"ctr_source": str(SAMPLE)},  # read in place, never copied
        "train": {
            "ctr": {"feature_source": "request", "n_estimators": 40, "max_depth": 4, "nthread": 1},
        },
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "art")},
        "canary": {
            "kind": "ctr",
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
        },
    }
    settings["canary"]["monitor_url"] = f"http://127.0.0.1:{settings['monitor']['port']}"
    for seed in (1, 2):  # two versions that differ only by their seed
        settings["train"]["ctr"]["seed"] = seed
        seeded = root / f"train-{seed}.yaml"
        seeded.write_text(yaml.safe_dump(settings), encoding="utf-8")
        version = train_step(load_config(seeded, environ={}), "ctr").version
        assert version is not None and version.version == str(seed)
    config_file = root / "bidflow.yaml"
    config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config_file, load_config(config_file, environ={})


@pytest.fixture(scope="module")
def monitor(setup: tuple[Path, Config]) -> Iterator[str]:
    with running_monitor(setup[0]) as url:
        yield url


def test_a_drifted_ctr_canary_is_rolled_back_by_the_monitor(setup: tuple[Path, Config], monitor: str) -> None:
    config_file, config = setup
    ctr = kind(config, "ctr")
    with running_router(config_file) as url:
        client = RouterClient(url)
        for version, percent, role in (("1", None, "champion"), ("2", 50, "canary")):
            done = deploy_step(config, version, percent=percent, actor="test", kind="ctr")
            assert done.role == role and done.reference is not None and done.reference_rows > 0
            detector = config.monitor.detector / version
            assert fit_detector(done.reference, detector, config.monitor.p_value) == "alibi"

        rows = select_rows(ctr.load_rows(config, SAMPLE, None, None), [f"region={DRIFTED_REGION}"])
        batches = list(read_instances(rows, ctr.spec((), None).names, per_request=PER_REQUEST, limit=500))
        predict = f"{url}/v1/models/{registry_name(config)}:predict"
        every_contribution = {"x-bidflow-role": "canary", "x-bidflow-explain-top": "0"}
        explain = predict.replace(":predict", ":explain")
        explained = httpx.post(explain, content=batches[0].body, headers=every_contribution, timeout=30)
        assert explained.status_code == 200, explained.text
        assert explained.headers["x-bidflow-model-version"] == "2"
        for row in explained.json()["explanations"]:  # the canary's server process: every row adds up
            total = sum(c["contribution"] for c in row["contributions"]) + row["base_value"]
            assert abs(total - row["margin"]) <= 1e-4
        started = time.monotonic()
        drifted = _replay(batches, predict, monitor)
        assert drifted.failed == 0, drifted.failures  # no client saw the rollback
        # The monitor counts a rollback once the router has applied and recorded it.
        wait_for(lambda: httpx.get(f"{monitor}/status", timeout=5).json()["counts"]["rollbacks"] == 1)
        assert client.status().canary is None
        print(f"replay {drifted.summary()}; rolled back {time.monotonic() - started:.1f} s after the replay began")

        rollback = client.transitions()[-1]
        assert rollback.action == "rollback" and rollback.actor == "monitor"
        assert rollback.model is not None and rollback.model.version == "2"
        assert "drift in the canary's traffic" in rollback.reasons[0] and "region" in rollback.reasons[0]
        assert rollback.metrics["drift"]["drift"] is True
        attribution = rollback.metrics["attribution"]
        assert attribution["version"] == "2" and attribution["rows"] > 0 and attribution["features"], attribution
        assert any(r.startswith("contributions shifted most: ") for r in rollback.reasons)
        assert client.status().champion.version == "1"  # type: ignore[union-attr]
        assert drifted.roles["canary"] > 0 and drifted.roles["champion"] > 0

        status = httpx.get(f"{monitor}/status", timeout=5).json()
        assert status["kind"] == "ctr" and status["counts"]["bad"] == 0, status["errors"]
        assert status["counts"]["rollbacks"] == 1 and status["counts"]["alerts"] >= 1
        assert status["roles"]["champion"]["online_recall"] is None  # no partners: no online bid recall
        metrics = httpx.get(f"{monitor}/metrics", timeout=5).text
        assert 'bidflow_drift_detected{feature="region",role="canary"} 1.0' in metrics

        v2 = registry.resolve(config.registry, registry_name(config), "2")
        assert v2.tags["deploy.rolled_back"] == "true" and "region" in v2.tags["deploy.rollback_reason"]


def registry_name(config: Config) -> str:
    from bidflow.kinds import registered_name

    return registered_name(config, "ctr")


def _replay(batches: list[Any], url: str, monitor_url: str) -> Any:
    import asyncio

    return asyncio.run(replay(batches, url, concurrency=8, monitor_url=monitor_url))
