"""A kind defined only in the tests goes through the whole loop, driven as a user drives it.

``tests/kinds/toy.py`` plus one line under ``kinds:`` in the configuration, nothing in ``src/``:
``bidflow train --kind toy`` -> evaluation gate -> bias gate -> ``promote`` -> served as champion by
the local backend -> a second version gated against it and deployed as a canary -> requests
answered by both through the router -> ``bidflow canary rollback`` -> the champion alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, free_port, running_router
from tests.kinds.toy import write_rows

pytestmark = pytest.mark.integration
TOY_TRAINING = {"feature_source": "request", "n_estimators": 80, "early_stopping_rounds": 10, "max_depth": 3,
                "min_category_count": 1, "nthread": 1}  # fmt: skip


def _bidflow(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")} | {"COLUMNS": "200"}
    command = [sys.executable, "-m", "bidflow.cli", "--config", str(config_file), *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"bidflow {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy-kind")
    settings = {
        "kinds": {"toy": "tests.kinds.toy:KIND"},  # the one registration line
        "paths": {"raw": str(root / "raw"), "reports": str(root / "reports")},
        "train": {
            "toy": {
                "feature_source": "request",
                "n_estimators": 80,
                "early_stopping_rounds": 10,
                "max_depth": 3,
                "min_category_count": 1,
                "nthread": 1,
            },
        },
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "mlartifacts")},
        "canary": {
            "kind": "toy",
            "state": str(root / "deploy"),
            "router_port": free_port(),
            "champion_port": free_port(),
            "canary_port": free_port(),
            "monitor_url": None,
        },
    }
    path = root / "bidflow.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    write_rows(root / "raw" / "toy.csv")
    return path


def _served_versions(url: str, n: int) -> Counter[str]:
    served: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for i in range(n):  # bodies differ: without an auction id the split hashes the body
            body = {"instances": [{"colour": "red", "size": 7.5 + i / 100}, {"colour": "black", "size": 1.0}]}
            response = client.post(f"{url}/v1/models/toy_model:predict", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert len(answer["predictions"]) == 2 and answer["fail_open"] is False
            assert answer["predictions"][0] > answer["predictions"][1]  # red and large buys more than black and small
            served[answer["model_version"].rsplit("/", 1)[-1]] += 1  # models:/toy_model/N
    return served


def _explained_by_each_role(url: str) -> None:
    """``:explain`` of the kind's (generic tabular) server processes, through the router, per role."""
    body = {"instances": [{"colour": "red", "size": 7.5}, {"colour": "purple", "size": 1.0}, {"colour": "red"}]}
    for role in ("champion", "canary"):
        response = httpx.post(
            f"{url}/v1/models/toy_model:explain", json=body, headers={"x-bidflow-role": role}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-bidflow-role"] == role
        red, purple, no_size = response.json()["explanations"]
        assert red["score"] > purple["score"]  # red and large buys more than an unseen colour and small
        for row in (red, purple, no_size):
            assert {c["feature"] for c in row["contributions"]} == {"colour", "size"}
            total = sum(c["contribution"] for c in row["contributions"]) + row["base_value"]
            assert abs(total - row["margin"]) <= 1e-4
        assert {c["feature"]: c["value"] for c in purple["contributions"]} == {"colour": "unseen", "size": 1.0}
        assert {c["feature"]: c["value"] for c in red["contributions"]} == {"colour": "red", "size": 7.5}
        assert {c["feature"]: c["value"] for c in no_size["contributions"]} == {"colour": "red", "size": None}
    refused = httpx.post(f"{url}/v1/models/toy_model:explain", json={"instances": [{"shape": "round"}]}, timeout=30)
    assert refused.status_code == 400 and refused.json()["field"] == "$.instances[0].shape"


def test_a_kind_defined_only_in_the_tests_goes_through_the_whole_loop(config_file: Path) -> None:
    listed = _bidflow(config_file, "kinds").stdout
    assert "toy" in listed and "bid_filter" in listed and "ctr" in listed

    _bidflow(config_file, "train", "--kind", "toy")  # the default source: the kind's own (paths.raw/toy.csv)
    _bidflow(config_file, "evaluate", "--kind", "toy")
    bias = _bidflow(config_file, "fairness", "--kind", "toy")
    fairness = json.loads((config_file.parent / "reports/fairness-toy/fairness.json").read_text())
    assert {s["feature"] for s in fairness["slices"]} == {"colour"}, bias.stdout  # the kind's own bias slices
    _bidflow(config_file, "promote", "--kind", "toy")

    with running_router(config_file) as url:
        _bidflow(config_file, "canary", "deploy", "--version", "champion")
        assert set(_served_versions(url, 5)) == {"1"}

        _bidflow(config_file, "train", "--kind", "toy")
        _bidflow(config_file, "evaluate", "--kind", "toy")  # against the champion: raises if the gate fails
        _bidflow(config_file, "fairness", "--kind", "toy")
        _bidflow(config_file, "canary", "deploy", "--version", "candidate", "--percent", "50")
        assert set(_served_versions(url, 60)) == {"1", "2"}
        _explained_by_each_role(url)

        _bidflow(config_file, "canary", "rollback", "--reason", "test")
        state = json.loads(_bidflow(config_file, "canary", "status", "--json").stdout)["state"]
        assert state["canary"] is None and state["champion"]["version"] == "1", state
        assert set(_served_versions(url, 20)) == {"1"}
