"""The drift monitor: how many served auctions it checks per second, and how fast a drifted canary is rolled back.

Throughput: the monitor (its own environment, alibi-detect) runs as a process in watch-only mode; batches of
256 served payloads (generated auctions, each with 10-30 partner decisions) are posted one after another, and
every window of 2,000 auctions is tested with TabularDrift. Feature vectors/s = auctions / wall time, decoding,
the shared request transform and the drift tests included.

Detection to rollback: the local deployment (router + two model-server processes) and the monitor run as in the
demo; a 20 % canary gets traffic from an hour in which the device mix shifts. Measured from the moment the
canary's window test ends to the recorded rollback (the router stops routing to the canary), and from the
replay's first request to the rollback.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.harness import Result
from bidflow.config import Config, EvaluateConfig, SimulateConfig, TrainConfig
from bidflow.data.batch import read_frame
from bidflow.data.ingest import ingest
from bidflow.data.simulate import simulate
from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.canary import RouterClient
from bidflow.deploy.replay import read_auctions, replay
from bidflow.deploy.steps import monitor_python
from bidflow.kinds import bid_filter
from bidflow.modeling import inputs, train
from bidflow.modeling.economics import is_exploration
from bidflow.monitoring.drift import drift_frame, drift_row
from bidflow.openrtb import decode_request_obj
from bidflow.openrtb.features import request_features

START = datetime(2026, 11, 2, 14, tzinfo=UTC)
BATCH = 256
WINDOW = 2_000
AUCTIONS = 20_000


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        root = Path(tmp)
        return [_throughput(root), *_rollback(root)]


def _throughput(root: Path) -> Result:
    raw = root / "raw-throughput"
    simulate(SimulateConfig(start=START, hours=1, auctions_per_hour=AUCTIONS + 5_000, publishers=200), raw)
    lines = [json.loads(line) for path in sorted(raw.rglob("*.jsonl.gz")) for line in _gz_lines(path)]
    rng = np.random.default_rng(0)
    records = [_record(line, rng) for line in lines]
    reference, traffic = records[:5_000], records[5_000 : 5_000 + AUCTIONS]
    detector = _fit(root, reference, "throughput")
    config = _config_file(root, "throughput", detector, window=WINDOW)
    port = yaml.safe_load(config.read_text())["monitor"]["port"]
    command = [str(monitor_python()), "-m", "bidflow.monitoring", "--config", str(config), "serve", "--watch-only"]
    with (root / "monitor.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/healthz")
        bodies = [json.dumps({"records": traffic[i : i + BATCH]}).encode() for i in range(0, len(traffic), BATCH)]
        started = time.perf_counter()
        for body in bodies:
            request = urllib.request.Request(
                f"{url}/v1/payloads", data=body, headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        seconds = time.perf_counter() - started
        status = _get(f"{url}/status")
    finally:
        process.terminate()
        process.wait(timeout=30)
    windows = len(status["history"])
    partners = np.mean([len(r["request"]["instances"][0]["partners"]) for r in traffic])
    return Result(
        "monitor: feature vectors/s (HTTP intake, decode, features, alibi TabularDrift)",
        len(traffic) / seconds,
        "auctions/s",
        f"{len(traffic):,} served auctions ({partners:.1f} partners each) in batches of {BATCH}, {windows} windows "
        f"of {WINDOW:,} tested, {seconds:.1f} s, one process",
    )


def _rollback(root: Path) -> list[Result]:
    from bidflow.demo.services import free_port, running_services

    raw = root / "raw-train"
    simulate(SimulateConfig(start=START, hours=3, auctions_per_hour=3_000, publishers=80), raw)
    ingest(raw, root / "parquet", Config().ingest.model_copy(update={"workers": 1}))
    frame = read_frame(root / "parquet")
    quick = TrainConfig(n_estimators=60, max_depth=5, nthread=1)
    model = train.fit(frame, bid_filter.spec(), quick, time_column=inputs.TIME, policy=EvaluateConfig())
    versions = [ModelVersion("bid_filter", v, str(train.save_model(model, root / f"model-v{v}"))) for v in "12"]
    baseline = [_record(line, np.random.default_rng(1)) for path in sorted(raw.rglob("*.jsonl.gz")) for line in
                map(json.loads, _gz_lines(path))][-5_000:]  # fmt: skip
    detector = _fit(root, baseline, "rollback")
    for v in "12":
        (root / "detectors").mkdir(exist_ok=True)
        (root / "detectors" / v).symlink_to(detector, target_is_directory=True)
    ports = {"router": free_port(), "champion": free_port(), "canary": free_port(), "monitor": free_port()}
    config = _config_file(root, "rollback", root / "detectors", window=500, ports=ports)
    shifted = root / "raw-shift"
    simulate(
        SimulateConfig(start=START + timedelta(hours=3), hours=1, auctions_per_hour=4_000, publishers=80,
                       scenario="device_shift", scenario_start_hour=0),
        shifted,
    )  # fmt: skip
    auctions = list(read_auctions(sorted(shifted.rglob("*.jsonl.gz"))))
    with running_services(config, ports["router"], ports["monitor"], root / "logs") as services:
        client = RouterClient(services.router)
        client.deploy(versions[0], 20, actor="bench")
        client.deploy(versions[1], 20, actor="bench")
        predict = f"{services.router}/v1/models/bid_filter:predict"
        report = asyncio.run(replay(auctions, predict, concurrency=8, monitor_url=services.monitor))
        deadline = time.monotonic() + 60
        while client.status().canary is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        status = _get(f"{services.monitor}/status")
        transitions = client.transitions()
    rollback = transitions[-1]
    window = next(h for h in status["history"] if h["role"] == "canary" and h["action"] == "rollback")
    detection = rollback.at - window["detected_at"]
    from_start = rollback.at - report.started_at
    detail = (
        f"canary at 20 %, windows of 500 auctions; drifted: {', '.join(rollback.reasons)}; replay of "
        f"{report.sent:,} auctions, {report.failed} failed; {from_start:.1f} s from the first drifted request"
    )
    return [Result("monitor: detection to rollback (local backend)", detection * 1000, "ms", detail)]


def _record(line: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One served payload as the router logs it (scores drawn at random: the monitor does not judge the model)."""
    partners = [o["partner"] for o in line["outcomes"]]
    request = {"instances": [{"request": line["request"], "partners": partners, "ts_ms": line["ts_ms"]}]}
    scores = rng.beta(1.2, 9.0, len(partners))
    explored = is_exploration(line["request"]["id"], 0.05)
    decisions = [{"partner": p, "score": float(s), "threshold": 0.05, "decision": "call" if s >= 0.05 else "skip"}
                 for p, s in zip(partners, scores, strict=True)]  # fmt: skip
    response = {"predictions": [{"id": line["request"]["id"], "model_version": "1", "explored": explored,
                                 "fail_open": False, "decisions": decisions}]}  # fmt: skip
    return {"role": "champion", "version": "1", "ts": line["ts_ms"] / 1000, "request": request, "response": response}


def _fit(root: Path, records: list[dict[str, Any]], name: str) -> Path:
    rows = []
    for record in records:
        instance = record["request"]["instances"][0]
        features = request_features(decode_request_obj(instance["request"]), instance["ts_ms"])
        scores = [d["score"] for d in record["response"]["predictions"][0]["decisions"]]
        rows.append(drift_row(features, float(np.mean(scores)) if scores else None))
    reference = root / f"reference-{name}.parquet"
    drift_frame(rows).to_parquet(reference, index=False)
    out = root / f"detector-{name}"
    command = [
        str(monitor_python()),
        "-m",
        "bidflow.monitoring",
        "fit",
        "--reference",
        str(reference),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return out


def _config_file(root: Path, name: str, detector: Path, *, window: int, ports: dict[str, int] | None = None) -> Path:
    from bidflow.demo.services import free_port

    ports = ports or {"router": free_port(), "champion": free_port(), "canary": free_port(), "monitor": free_port()}
    settings = {
        "canary": {
            "state": str(root / f"deploy-{name}"),
            "router_port": ports["router"],
            "champion_port": ports["champion"],
            "canary_port": ports["canary"],
            "monitor_url": f"http://127.0.0.1:{ports['monitor']}",
            "max_p99_ms": 10_000.0,  # judged on drift only: the 2-core machine runs everything at once
            "max_p99_ratio": 100.0,
        },
        "monitor": {"port": ports["monitor"], "window_size": window, "detector": str(detector)},
        "registry": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
    }
    path = root / f"bidflow-{name}.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _gz_lines(path: Path) -> list[bytes]:
    import gzip

    with gzip.open(path, "rb") as lines:
        return list(lines)


def _wait(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())
