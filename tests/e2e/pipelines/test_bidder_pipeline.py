"""The bidder pipeline under kfp.local, on the real campaign-2997 files (small settings): it gates on the replay.

One run with no champion: the fit beats its own linear policy at every level, so it is registered as
``candidate`` with ``gate.replay=passed``. One run whose rule also caps spend at the baseline's
(``bidder.gate_spend_tolerance: 0``): the budget-aware policy spends more of the same budget than the
linear one, so the gate fails and nothing is registered.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bidflow.config import RegistryConfig
from bidflow.modeling import registry
from tests.integration.bidding.test_bidder_loop import small_settings

pytestmark = pytest.mark.e2e


def run_pipeline(tmp_path: Path, shared_data: Path, **bidder: Any) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "bidflow.yaml"
    config.write_text(yaml.safe_dump(small_settings(tmp_path, shared_data, **bidder)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIDFLOW__")} | {"COLUMNS": "200"}
    command = [sys.executable, "-m", "bidflow.cli", "--config", str(config), "pipeline", "run", "--local",
               "--kind", "bidder", "--source", str(shared_data / "ipinyou_auction_outcomes"),
               "--out", str(tmp_path / "run"), "--param", "champion=none"]  # fmt: skip
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def versions(tmp_path: Path) -> list[registry.ModelRef]:
    cfg = RegistryConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=tmp_path / "art")
    return registry.versions(cfg, "bidder")


def test_a_bidder_that_wins_the_replay_is_registered(tmp_path: Path, shared_data: Path) -> None:
    result = run_pipeline(tmp_path, shared_data)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "replay gate passed" in result.stdout and "registered bidder v1 as 'candidate'" in result.stdout
    (version,) = versions(tmp_path)
    assert version.tags["gate.replay"] == "passed" and version.aliases == ("candidate",)
    (run,) = (tmp_path / "run" / "outputs").iterdir()
    assert {"fit-bidder", "gate-bidder", "register-model"} <= {p.name for p in run.iterdir()}
    assert "<img" in (run / "gate-bidder" / "report").read_text()


def test_a_bidder_that_loses_the_replay_is_not_registered(tmp_path: Path, shared_data: Path) -> None:
    result = run_pipeline(tmp_path, shared_data, gate_spend_tolerance=0.0)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "replay gate FAILED" in result.stdout and "failed gates: replay" in result.stderr
    assert "Traceback" not in result.stderr and versions(tmp_path) == []
