"""The monitor's attribution of a drifted window: the serving model server explains it, over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bidflow.config import CanaryConfig, Config, MonitorConfig
from bidflow.modeling.explain import contributions
from bidflow.modeling.train import TrainedModel
from bidflow.monitoring.attribution import (
    REFERENCE_FILE,
    ReferenceContributions,
    read_reference_contributions,
    write_reference_contributions,
)
from bidflow.monitoring.drift import DriftDetector
from bidflow.monitoring.watch import Monitor
from tests.unit.monitoring.conftest import Payloads
from tests.unit.monitoring.test_watch import WINDOW, RecordingController, reference_detector, split

__all__ = ["reference_detector"]


@pytest.fixture(scope="module")
def explaining_server(bid_filter: Any) -> Iterator[str]:
    """The bid-filter app served by uvicorn on a free loopback port (a real server the monitor calls)."""
    import uvicorn

    from bidflow.serving.server import build_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app([bid_filter]), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def reference(trained: TrainedModel, rows: pd.DataFrame) -> ReferenceContributions:
    found = contributions(trained, trained.matrix(rows))
    return ReferenceContributions(len(rows), found.base, dict(zip(found.features, found.means().tolist(), strict=True)))


def watching(tmp_path: Path, detector: DriftDetector, url: str | None, controller: RecordingController) -> Monitor:
    config = Config(
        monitor=MonitorConfig(
            window_size=WINDOW, p_value=0.01, detector=tmp_path / "detector",
            explain_urls={"canary": url, "champion": url} if url else {},
        ),
        canary=CanaryConfig(state=tmp_path / "deploy", min_requests=100, router_port=9),
    )  # fmt: skip
    return Monitor(config, controller, detector_loader=lambda version: detector)


def test_a_rollback_names_the_features_whose_contributions_shifted(
    tmp_path: Path,
    payloads: Payloads,
    reference_detector: DriftDetector,
    explaining_server: str,
    trained: TrainedModel,
    split_rows: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    expected_reference = reference(trained, split_rows[1])
    write_reference_contributions(expected_reference, tmp_path / "detector" / REFERENCE_FILE)
    controller = RecordingController()
    watch = watching(tmp_path, reference_detector, explaining_server, controller)
    champion, _ = split(payloads("none", "champion"))
    canary, _ = split(payloads("device_shift", "canary"))
    watch.payloads(champion[:WINDOW])
    watch.payloads(canary[:WINDOW])

    (rollback,) = controller.rollbacks
    _, reasons, metrics = rollback
    attribution = metrics["attribution"]
    assert "error" not in attribution, attribution
    assert attribution["role"] == "canary" and attribution["reference_rows"] == expected_reference.rows
    moved = attribution["features"]
    assert len(moved) == Config().explain.drift_features
    assert any(r.startswith("contributions shifted most: ") and moved[0]["feature"] in r for r in reasons)
    # The same numbers from the model itself: the canary's latest requests, every partner call, explained in-process.
    kept = [r["request"] for r in canary[:WINDOW]][-Config().explain.drift_requests :]
    frames = []
    for body in kept:
        instance = body["instances"][0]
        frames.append(_partner_rows(instance))
    x = np.vstack([trained.matrix(frame) for frame in frames])
    means = dict(zip(contributions(trained, x).features, contributions(trained, x).means().tolist(), strict=True))
    assert attribution["rows"] == len(x)
    shifts = {f: means[f] - expected_reference.means[f] for f in means}
    ranked = sorted(shifts, key=lambda f: -abs(shifts[f]))[: len(moved)]
    assert [m["feature"] for m in moved] == ranked
    for m in moved:
        assert m["shift"] == pytest.approx(shifts[m["feature"]], abs=1e-6)
    # TreeSHAP is additive: the shifts of every feature add up to the move of the mean margin.
    assert attribution["mean_margin_shift"] == pytest.approx(sum(shifts.values()), abs=1e-6)
    assert watch.status()["latest"]["canary"]["attribution"]["features"] == moved


def test_without_reference_contributions_the_rollback_still_happens(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector, explaining_server: str
) -> None:
    controller = RecordingController()
    watch = watching(tmp_path, reference_detector, explaining_server, controller)
    watch.payloads(split(payloads("none", "champion"))[0][:WINDOW])
    watch.payloads(split(payloads("device_shift", "canary"))[0][:WINDOW])
    (rollback,) = controller.rollbacks
    assert "no reference contributions" in rollback[2]["attribution"]["error"]
    assert not any(r.startswith("contributions shifted most") for r in rollback[1])


def test_an_unreachable_server_does_not_stop_the_rollback(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector, trained: TrainedModel,
    split_rows: tuple[pd.DataFrame, pd.DataFrame],
) -> None:  # fmt: skip
    write_reference_contributions(reference(trained, split_rows[1]), tmp_path / "detector" / REFERENCE_FILE)
    controller = RecordingController()
    watch = watching(tmp_path, reference_detector, None, controller)  # the local router's port 9: nothing listens
    watch.payloads(split(payloads("none", "champion"))[0][:WINDOW])
    watch.payloads(split(payloads("device_shift", "canary"))[0][:WINDOW])
    (rollback,) = controller.rollbacks
    assert "did not explain" in rollback[2]["attribution"]["error"]


def test_a_champion_alert_carries_its_attribution_into_the_retraining_request(
    tmp_path: Path,
    payloads: Payloads,
    reference_detector: DriftDetector,
    explaining_server: str,
    trained: TrainedModel,
    split_rows: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    write_reference_contributions(reference(trained, split_rows[1]), tmp_path / "detector" / REFERENCE_FILE)
    watch = watching(tmp_path, reference_detector, explaining_server, RecordingController())
    drifted = split(payloads("publisher_flood", "champion"))[0][:WINDOW]
    watch.payloads([r | {"version": "1"} for r in drifted])  # a registry version: a folder name of its own
    (request,) = [
        json.loads(line) for line in (tmp_path / "deploy" / "retrain_requests.jsonl").read_text().splitlines()
    ]
    assert request["drift"]["attribution"]["features"]
    assert "contributions shifted most: " in request["reason"]


def test_reference_contributions_round_trip_and_refuse_garbage(tmp_path: Path) -> None:
    written = ReferenceContributions(10, -1.5, {"partner": 0.25, "region": -0.5})
    write_reference_contributions(written, tmp_path / "c.json")
    assert read_reference_contributions(tmp_path / "c.json") == written
    (tmp_path / "bad.json").write_text("{not json")
    from bidflow.errors import MonitorError

    with pytest.raises(MonitorError, match="not readable"):
        read_reference_contributions(tmp_path / "bad.json")


def test_the_monitor_and_the_servers_agree_on_the_header_names() -> None:
    from bidflow.deploy import router
    from bidflow.monitoring import attribution
    from bidflow.serving import explanations

    assert attribution.TOP_HEADER == explanations.TOP_HEADER
    assert attribution.ROLE_HEADER == router.ROLE_HEADER


def _partner_rows(instance: dict[str, Any]) -> pd.DataFrame:
    """One auction's partner calls as the training rows' columns (the shared request transform)."""
    import msgspec

    from bidflow.openrtb import decode_request_obj
    from bidflow.openrtb.features import request_features

    features = msgspec.structs.asdict(request_features(decode_request_obj(instance["request"]), instance["ts_ms"]))
    return pd.DataFrame([features | {"partner": p} for p in instance["partners"]])
