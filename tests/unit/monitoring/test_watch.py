"""The monitor's core on real served payloads: drift windows, actions, online recall, bad input.

Payloads are generated auctions scored by the real bid-filter app; the detector is the scipy
backend (the same tests as alibi-detect's TabularDrift; alibi itself lives in the monitor's own
environment and is exercised by tests/monitor and the e2e test). The controller here records
what it is asked to do; the real ones are tested in tests/integration/deploy and tests/k8s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from bidflow.config import CanaryConfig, Config, MonitorConfig
from bidflow.deploy.backend import DeploymentState, ModelVersion
from bidflow.deploy.journal import Transition
from bidflow.monitoring.drift import DriftDetector, drift_frame, fit_detector
from bidflow.monitoring.service import build_app
from bidflow.monitoring.watch import Monitor
from tests.unit.monitoring.conftest import Payloads

WINDOW = 400
V1 = ModelVersion("bid_filter", "1", "models:/bid_filter/1")
V2 = ModelVersion("bid_filter", "2", "models:/bid_filter/2")


class RecordingController:
    """Answers status and records rollbacks (the transport is not what these tests are about)."""

    def __init__(self, champion: ModelVersion = V1) -> None:
        self.rollbacks: list[tuple[str, tuple[str, ...], dict[str, Any]]] = []
        self.champion = champion

    def status(self) -> DeploymentState:
        canary = None if self.rollbacks else V2
        return DeploymentState(champion=self.champion, canary=canary, canary_percent=20 if canary else 0)

    def rollback(
        self, *, actor: str, reasons: Sequence[str] = (), metrics: Any = None, expect_canary: str | None = None
    ) -> Transition:
        self.rollbacks.append((actor, tuple(reasons), dict(metrics or {})))
        return Transition("rollback", V2, actor, tuple(reasons), dict(metrics or {}), self.status())


def split(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(payloads without the test's outcome field, outcomes of every auction)."""
    outcomes = [{"id": r["request"]["instances"][0]["request"]["id"], "bids": r["bids"]} for r in records]
    return [{k: v for k, v in r.items() if k != "bids"} for r in records], outcomes


@pytest.fixture
def reference_detector(payloads: Payloads) -> DriftDetector:
    from bidflow.monitoring.drift import drift_row
    from bidflow.openrtb import decode_request_obj
    from bidflow.openrtb.features import request_features

    rows = []
    for record in payloads("none", "champion"):
        instance = record["request"]["instances"][0]
        scores = [d["score"] for d in record["response"]["predictions"][0]["decisions"]]
        features = request_features(decode_request_obj(instance["request"]), instance["ts_ms"])
        rows.append(drift_row(features, sum(scores) / len(scores)))
    return fit_detector(drift_frame(rows), p_value=0.01, backend="scipy")


def monitor(tmp_path: Path, detector: DriftDetector, controller: RecordingController | None) -> Monitor:
    config = Config(
        monitor=MonitorConfig(window_size=WINDOW, p_value=0.01),
        canary=CanaryConfig(state=tmp_path / "deploy", min_requests=100),
    )
    return Monitor(config, controller, detector_loader=lambda version: detector)


def test_drift_in_the_canarys_traffic_rolls_it_back(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector
) -> None:
    controller = RecordingController()
    watch = monitor(tmp_path, reference_detector, controller)
    champion, _ = split(payloads("none", "champion"))
    canary, _ = split(payloads("device_shift", "canary"))
    watch.payloads(champion[:WINDOW])
    watch.payloads(canary[:WINDOW])

    (rollback,) = controller.rollbacks
    actor, reasons, metrics = rollback
    assert actor == "monitor" and "drift in the canary's traffic" in reasons[0]
    assert "device_type" in reasons[0]  # the scenario moves the device mix
    assert metrics["drift"]["drift"] is True and metrics["window"]["canary"]["requests"] >= WINDOW
    status = watch.status()
    assert status["counts"]["rollbacks"] == 1 and status["counts"]["alerts"] == 0
    assert status["latest"]["canary"]["action"] == "rollback"
    assert status["latest"]["champion"]["report"]["drift"] is False  # same market as its reference
    assert status["roles"]["canary"]["window_fill"] == 0  # the rolled-back canary's window is gone


def test_drift_in_the_champions_traffic_alerts_and_requests_retraining(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector
) -> None:
    controller = RecordingController()
    watch = monitor(tmp_path, reference_detector, controller)
    drifted, _ = split(payloads("publisher_flood", "champion"))
    watch.payloads(drifted[:WINDOW])
    assert controller.rollbacks == []  # never roll back the champion
    assert watch.status()["counts"]["alerts"] == 1
    (request,) = [
        json.loads(line) for line in (tmp_path / "deploy" / "retrain_requests.jsonl").read_text().splitlines()
    ]
    assert request["pipeline"] == "bid_filter" and "champion" in request["reason"]


def test_online_recall_on_the_exploration_share(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector
) -> None:
    watch = monitor(tmp_path, reference_detector, None)
    records, outcomes = split(payloads("none", "champion"))
    # Outcomes may arrive before their payloads (separate batches): both orders count.
    watch.outcomes(outcomes[: len(outcomes) // 2])
    watch.payloads(records)
    watch.outcomes(outcomes[len(outcomes) // 2 :])
    explored = [r for r in records if r["response"]["predictions"][0]["explored"]]
    assert explored, "the exploration share produced no auction"
    expected_bids = expected_kept = 0
    by_id = {o["id"]: set(o["bids"]) for o in outcomes}
    for record in explored:
        prediction = record["response"]["predictions"][0]
        for d in prediction["decisions"]:
            if d["partner"] in by_id[prediction["id"]]:
                expected_bids += 1
                expected_kept += d["score"] >= d["threshold"]
    roles = watch.status()["roles"]["champion"]
    assert roles["explored_bids"] == expected_bids > 0
    assert roles["online_recall"] == pytest.approx(expected_kept / expected_bids)


def test_bad_payloads_are_counted_and_skipped(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector
) -> None:
    watch = monitor(tmp_path, reference_detector, None)
    good, _ = split(payloads("none", "champion")[:5])
    bad: list[Any] = [
        {"role": "champion"},
        {"role": "nobody", "version": "1", "request": {}, "response": {}},
        {"role": "canary", "version": "2", "request": {"instances": [{"request": {"id": 5}}]},
         "response": {"predictions": [{}]}},
        "not an object",
    ]  # fmt: skip
    assert watch.payloads([*bad, *good]) == 5
    assert watch.status()["counts"]["bad"] == len(bad)


def test_the_service_takes_payloads_cloud_events_and_reports(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector
) -> None:
    records, outcomes = split(payloads("none", "champion"))
    served = records[0]["version"]  # a server loaded from a folder reports the folder: the deployment knows it
    controller = RecordingController(ModelVersion("bid_filter", "1", served))
    records = [r | {"version": "1"} for r in records]  # the router names the deployment's version
    watch = monitor(tmp_path, reference_detector, controller)
    with TestClient(build_app(watch)) as http:
        assert http.post("/v1/payloads", json={"records": records[:50]}).json() == {"received": 50, "auctions": 50}
        assert http.post("/v1/outcomes", json={"records": outcomes[:50]}).status_code == 200
        # KServe's payload logger: the request and its response as two CloudEvents with one id.
        request, response = records[60]["request"], records[60]["response"]
        for kind, body in (("org.kubeflow.serving.inference.request", request),
                           ("org.kubeflow.serving.inference.response", response)):  # fmt: skip
            sent = http.post("/", json=body, headers={"ce-id": "evt-1", "ce-type": kind})
            assert sent.status_code == 202
        assert watch.status()["roles"]["champion"]["auctions"] == 51
        assert http.post("/v1/payloads", content=b"{not json").status_code == 400
        assert http.post("/", json=request, headers={"ce-type": "x"}).status_code == 400
        status = http.get("/status").json()
        assert status["counts"]["payloads"] == 51
        watch.payloads(records[100 : 100 + WINDOW])
        metrics = http.get("/metrics").text
        assert 'bidflow_drift_p_value{feature="device_type",role="champion"}' in metrics
        assert "bidflow_drift_window_size" in metrics and http.get("/healthz").json() == {"ok": True}


def test_the_intake_refuses_senders_without_the_token_and_never_takes_a_role_from_a_record(
    tmp_path: Path, payloads: Payloads, reference_detector: DriftDetector
) -> None:
    records, _ = split(payloads("device_shift", "canary"))
    controller = RecordingController()
    watch = monitor(tmp_path, reference_detector, controller)
    token = "s3cret-token-of-the-deployment"
    with TestClient(build_app(watch, token)) as http:
        # The forged-rollback probe: drifted "canary" traffic from someone without the token.
        for route in ("/v1/payloads", "/v1/outcomes"):
            for headers in ({}, {"authorization": "Bearer wrong-token-of-the-same-len"}, {"authorization": token}):
                assert http.post(route, json={"records": records[:10]}, headers=headers).status_code == 401
        event = {"ce-id": "e1", "ce-type": "org.kubeflow.serving.inference.request"}
        assert http.post("/", json=records[0]["request"], headers=event).status_code == 401
        forged = [r | {"role": "canary", "version": "7"} for r in records]  # a version the deployment does not serve
        sent = http.post("/v1/payloads", json={"records": forged}, headers={"authorization": f"Bearer {token}"})
        assert sent.status_code == 200 and sent.json()["auctions"] == 0
        claimed = [r | {"role": "canary", "version": "1"} for r in records[:WINDOW]]  # the champion's version
        sent = http.post("/v1/payloads", json={"records": claimed}, headers={"authorization": f"Bearer {token}"})
        assert sent.json()["auctions"] == WINDOW
        assert http.post(f"/?token={token}", json=records[0]["request"], headers=event).status_code == 202
    status = watch.status()
    assert controller.rollbacks == [], "nothing unauthenticated, and no record's own role, moved traffic"
    assert status["roles"]["canary"]["auctions"] == 0 and status["roles"]["champion"]["auctions"] == WINDOW
    assert status["counts"]["unauthorized"] == 7 and status["counts"]["bad"] == len(forged)


def test_the_intake_is_bounded_and_a_version_never_becomes_a_path_of_its_own(
    tmp_path: Path, reference_detector: DriftDetector
) -> None:
    from bidflow.errors import MonitorError
    from bidflow.monitoring import service

    watch = monitor(tmp_path, reference_detector, RecordingController())
    with TestClient(build_app(watch)) as http:
        huge = b'{"records": [' + b'"x",' * (service._MAX_BODY_BYTES // 4) + b'"x"]}'
        assert http.post("/v1/payloads", content=huge).status_code == 413
        many = {"records": [{}] * (service._MAX_RECORDS + 1)}
        assert http.post("/v1/payloads", json=many).status_code == 413
        assert http.get("/healthz").status_code == 200
    folder = Config(monitor=MonitorConfig(detector=tmp_path / "detectors"))
    loading = Monitor(folder, None)
    for version in ("/etc", "../outside", "..", "a/b", "x" * 65):
        with pytest.raises(MonitorError, match="not a plain name"):
            loading._load_from_folder(version)
    loaded: list[str] = []
    counting = Monitor(folder, None, detector_loader=lambda v: loaded.append(v) or reference_detector)
    for version in [str(v) for v in range(20)] + ["19", "0"]:
        counting._detector(version)
    assert len(counting._detectors) <= 4 and loaded.count("0") == 2, "old versions are let go, then reloaded"
