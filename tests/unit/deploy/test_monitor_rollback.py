"""The monitor's rollback is a compare-and-set on the canary it judged.

A drift window of canary v2 closes while v3 is the live canary (v2 was promoted, or rolled back by hand, and v3
deployed since). Before, the monitor asked the controller to "roll back the canary", and v3 was rolled back on
v2's evidence; now it names v2 and the controller refuses (nothing moves, the error is kept for ``/status``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bidflow.config import CanaryConfig, Config, MonitorConfig
from bidflow.deploy.backend import DeploymentState, ModelVersion
from bidflow.deploy.canary import Controller
from bidflow.deploy.journal import FileLog
from bidflow.monitoring.drift import DriftDetector
from bidflow.monitoring.watch import Monitor
from tests.unit.deploy.test_deploy_state import FakeBackend
from tests.unit.monitoring.conftest import Payloads, payloads, scenario_logs
from tests.unit.monitoring.test_watch import WINDOW, reference_detector, split
from tests.unit.serving.conftest import bid_filter, client, model_dir

__all__ = ["bid_filter", "client", "model_dir", "payloads", "reference_detector", "scenario_logs"]

V1, V2, V3 = (ModelVersion("bid_filter", v, f"models:/bid_filter/{v}") for v in ("1", "2", "3"))


def watching(tmp_path: Path, detector: DriftDetector, controller: Any) -> Monitor:
    config = Config(
        monitor=MonitorConfig(window_size=WINDOW, p_value=0.01),
        canary=CanaryConfig(state=tmp_path / "deploy", min_requests=100),
    )
    return Monitor(config, controller, detector_loader=lambda version: detector)


def test_a_drifted_window_of_canary_v2_does_not_roll_back_canary_v3(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector
) -> None:
    backend = FakeBackend(DeploymentState(champion=V2, canary=V3, canary_percent=20))
    watch = watching(tmp_path, reference_detector, Controller(backend, FileLog(tmp_path / "t.jsonl")))
    champion, _ = split(payloads("none", "champion"))
    canary, _ = split(payloads("device_shift", "canary"))  # served by "2", as the payloads say
    watch.payloads(champion[:WINDOW])
    watch.payloads(canary[:WINDOW])

    assert backend.acted == [] and backend.state.canary == V3, "v3 was rolled back on v2's evidence"
    status = watch.status()
    assert status["counts"]["rollbacks"] == 0
    assert any("canary v2" in e and "no longer the live canary" in e for e in status["errors"])


def test_a_drifted_window_of_the_live_canary_rolls_it_back(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector
) -> None:
    backend = FakeBackend(DeploymentState(champion=V1, canary=V2, canary_percent=20))
    watch = watching(tmp_path, reference_detector, Controller(backend, FileLog(tmp_path / "t.jsonl")))
    champion, _ = split(payloads("none", "champion"))
    canary, _ = split(payloads("device_shift", "canary"))
    watch.payloads(champion[:WINDOW])
    watch.payloads(canary[:WINDOW])
    assert backend.acted == ["rollback"] and backend.state.canary is None
    assert watch.status()["counts"]["rollbacks"] == 1
