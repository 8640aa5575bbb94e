"""The model server as a real process on 127.0.0.1: v1/v2 round trips with Feast features, fail-open, 503.

The bid filter here reads the ``bid_filter`` FeatureService, is loaded from the MLflow registry by
its ``candidate`` alias, and its scores are checked against the training path (pandas frame ->
``TrainedModel.predict`` with xgboost) on logged requests with the same online features.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pandas as pd
import pytest

from bidflow.openrtb import decode_request_obj
from bidflow.openrtb.features import request_features
from tests.integration.serving.conftest import RedisServer, ServerProcess, Setup, bid_filter_views

pytestmark = pytest.mark.integration


def _last_hour(bid_logs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` auctions of the held-out hour (after the training window), spread over it."""
    last = max(r["ts_ms"] for r in bid_logs) // 3_600_000
    held_out = [r for r in bid_logs if r["ts_ms"] // 3_600_000 == last]
    return held_out[:: max(1, len(held_out) // n)][:n]


def _v1(server: ServerProcess, record: dict[str, Any], partners: list[str]) -> dict[str, Any]:
    body = {"instances": [{"request": record["request"], "partners": partners, "ts_ms": record["ts_ms"]}]}
    response = httpx.post(f"{server.url}/v1/models/bid_filter:predict", json=body, timeout=10)
    assert response.status_code == 200, response.text
    prediction: dict[str, Any] = response.json()["predictions"][0]
    return prediction


def _v2(server: ServerProcess, record: dict[str, Any], partners: list[str]) -> dict[str, Any]:
    body = {
        "inputs": [
            {"name": "request", "shape": [1], "datatype": "BYTES", "data": [json.dumps(record["request"])]},
            {"name": "partners", "shape": [len(partners)], "datatype": "BYTES", "data": partners},
        ],
        "parameters": {"ts_ms": record["ts_ms"]},
    }
    response = httpx.post(f"{server.url}/v2/models/bid_filter/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def _listening(pid: int) -> list[str]:
    """``ip:port`` of every listening TCP socket of process ``pid``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink()) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN
                address, port = fields[1].split(":")
                if address.startswith("0000000000000000FFFF0000"):  # IPv4-mapped IPv6 (gRPC's sockets)
                    address = address[-8:]
                ip = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)) if len(address) == 8 else address
                found.append(f"{ip}:{int(port, 16)}")
    return found


def test_v1_and_v2_round_trips_with_feast_features(
    feast_model: Setup, bid_logs: list[dict[str, Any]], start_server: Callable[..., ServerProcess]
) -> None:
    from bidflow.features.online import OnlineFeatureReader
    from bidflow.features.store import open_store
    from bidflow.modeling import registry
    from bidflow.serving.bid_filter_features import LAYOUT

    config = feast_model.config("local")
    server = start_server("--config", str(feast_model.config_file("local", "serve.yaml")), "--model", "candidate")
    port = int(server.url.rsplit(":", 1)[1])
    assert _listening(server.process.pid) == [f"127.0.0.1:{port}"]  # loopback only, and no gRPC listener

    ref, model = registry.load(config.registry, "bid_filter", "candidate")
    reader = OnlineFeatureReader(open_store(config.features), "bid_filter", layout=LAYOUT)
    live = compared = 0
    for record in _last_hour(bid_logs, 25):
        partners = [o["partner"] for o in record["outcomes"]] + ["never-seen"]
        one, two = _v1(server, record, partners), _v2(server, record, partners)
        assert one["model_version"] == ref.version and one["fail_open"] is False
        scores = [d["score"] for d in one["decisions"]]
        assert two["score"] == scores and two["decision"] == [d["decision"] for d in one["decisions"]]
        # The training path on the same request and the same online features.
        features = request_features(decode_request_obj(record["request"]), record["ts_ms"])
        block = reader.features(
            partners, features.publisher_id, features.country, features.format, features.device_type,
            at=record["ts_ms"] / 1000,
        )  # fmt: skip
        frame = pd.DataFrame([msgspec.structs.asdict(features)] * len(partners)).assign(partner=partners)
        frame = pd.concat([frame, pd.DataFrame(block, columns=list(reader.feature_names))], axis=1)
        np.testing.assert_allclose(scores, model.predict(frame), atol=1e-5, rtol=0)
        live += int((~np.isclose(block, reader.defaults, equal_nan=True)).any(axis=1).sum())
        compared += len(partners)
    reader.close()
    assert live > compared / 2  # the features were really there, not only defaults
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    info = 'predictor="numba",source="models:/bid_filter@candidate"'
    assert f'bidflow_serving_model_info{{model="bid_filter",{info},version="{ref.version}"}} 1.0' in metrics


def test_fail_open_when_redis_is_killed_mid_run(
    feast_model: Setup,
    bid_logs: list[dict[str, Any]],
    private_redis: RedisServer,
    start_server: Callable[..., ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bidflow.features import store as feature_store

    env = {
        "BIDFLOW_FEAST_REGISTRY_URL": f"sqlite:///{feast_model.root / f'registry-{private_redis.port}.db'}",
        "BIDFLOW_FEAST_REDIS": f"127.0.0.1:{private_redis.port}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = feast_model.config("production")
    store = feature_store.open_store(config.features)
    feature_store.apply(store, config.features)
    end = pd.Timestamp(max(r["ts_ms"] for r in bid_logs), unit="ms", tz="UTC").to_pydatetime()
    feature_store.materialize(store, end - pd.Timedelta(days=2), end + pd.Timedelta(hours=1), bid_filter_views(store))

    server = start_server(
        "--config", str(feast_model.config_file("production", "serve-redis.yaml")),
        "--model", "candidate", "--breaker-cooldown-s", "0.5", "--feature-timeout-ms", "50",
        "--feature-cache-s", "0",  # every auction asks the store: each one after the kill must fail open
        env=env,
    )  # fmt: skip
    records = _last_hour(bid_logs, 30)
    for record in records[:10]:
        partners = [o["partner"] for o in record["outcomes"]]
        assert _v1(server, record, partners)["fail_open"] is False

    private_redis.kill()
    for record in records[10:30]:
        partners = [o["partner"] for o in record["outcomes"]]
        started = time.perf_counter()
        prediction = _v1(server, record, partners)
        assert time.perf_counter() - started < 1.0  # no stall waiting for a dead store
        assert prediction["fail_open"] is True and prediction["fail_open_reason"] in ("unreachable", "breaker_open")
        assert {d["decision"] for d in prediction["decisions"]} == {"call"}
        assert _v2(server, record, partners)["fail_open"] == [True]
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    failed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("bidflow_serving_fail_open_total{")
    )
    assert failed == 40

    private_redis.start()  # back, empty: reads succeed again (every entity on its defaults)
    time.sleep(0.6)
    record = records[0]
    assert _v1(server, record, [o["partner"] for o in record["outcomes"]])["fail_open"] is False


def test_a_model_that_cannot_load_is_503_with_the_reason(
    feast_model: Setup, start_server: Callable[..., ServerProcess]
) -> None:
    config_file = feast_model.config_file("local", "serve-missing.yaml")
    server = start_server("--config", str(config_file), "--model", "99", "--load-retry-s", "1", ready=False)
    deadline = time.monotonic() + 60
    while True:
        response = httpx.post(f"{server.url}/v1/models/bid_filter:predict", json={"instances": []}, timeout=5)
        if response.status_code == 503 and "no version '99'" in response.json()["reason"]:
            break
        assert time.monotonic() < deadline, (response.status_code, response.text, server.output())
        time.sleep(0.5)
    assert httpx.get(f"{server.url}/v2/models/bid_filter/ready", timeout=5).status_code == 503


def test_grpc_v2_when_asked_for(
    model_dir: Path, bid_logs: list[dict[str, Any]], start_server: Callable[..., ServerProcess]
) -> None:
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest

    from tests.integration.serving.conftest import free_port

    grpc_port = free_port()
    server = start_server("--model", str(model_dir), "--grpc-port", str(grpc_port))
    assert sorted(_listening(server.process.pid)) == sorted(
        [f"127.0.0.1:{grpc_port}", f"127.0.0.1:{server.url.rsplit(':', 1)[1]}"]
    )
    record = bid_logs[0]
    partners = [o["partner"] for o in record["outcomes"]]
    rest = _v1(server, record, partners)

    async def call() -> Any:
        client = InferenceGRPCClient(f"127.0.0.1:{grpc_port}", channel_args=[("grpc.enable_retries", 0)])
        request = InferRequest(
            model_name="bid_filter",
            infer_inputs=[
                InferInput("request", [1], "BYTES", [json.dumps(record["request"]).encode()]),
                InferInput("partners", [len(partners)], "BYTES", [p.encode() for p in partners]),
            ],
            parameters={"ts_ms": record["ts_ms"]},
        )
        try:
            return await client.infer(request)
        finally:
            await client.close()

    response = asyncio.run(call())
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    assert [p.decode() if isinstance(p, bytes) else p for p in outputs["partner"]] == partners
    np.testing.assert_array_equal(outputs["score"], [d["score"] for d in rest["decisions"]])


def _post(port: int, path: str, body: bytes) -> tuple[socket.socket, int, bytes]:
    """One HTTP/1.1 request on a new connection, left open: (the connection, status, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    header, _, rest = reply.partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return sock, int(header.split(b" ")[1]), rest


def _children(pid: int) -> list[int]:
    """The worker processes of server ``pid`` (not multiprocessing's resource tracker)."""
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [p for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _owner(local_port: int, server_port: int, pids: list[int]) -> int:
    """The pid holding the server side of the connection from ``local_port``."""
    (inode,) = [
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[1] == f"0100007F:{server_port:04X}" and fields[2] == f"0100007F:{local_port:04X}"
    ]
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            if fd.is_symlink() and str(fd.readlink()) == f"socket:[{inode}]":
                return pid
    raise AssertionError(f"no worker holds the connection from port {local_port}")


def _total(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name))


def _all_ready(url: str) -> bool:
    # New connections land on either worker: both must answer.
    return all(httpx.get(f"{url}/v2/models/bid_filter/ready", timeout=2).status_code == 200 for _ in range(12))


def test_two_workers_share_the_port_and_their_metrics(
    model_dir: Path, bid_logs: list[dict[str, Any]], start_server: Callable[..., ServerProcess]
) -> None:
    import signal

    server = start_server("--model", str(model_dir), "--workers", "2")
    port = int(server.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 120
    while len(workers := _children(server.process.pid)) < 2 or not _all_ready(server.url):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.5)
    assert _listening(server.process.pid) == []  # the parent only supervises
    assert sorted(a for pid in workers for a in _listening(pid)) == [f"127.0.0.1:{port}"] * 2

    connections, owners, partners_sent = [], set(), 0
    for record in bid_logs[:24]:
        partners = [o["partner"] for o in record["outcomes"]]
        body = {"instances": [{"request": record["request"], "partners": partners, "ts_ms": record["ts_ms"]}]}
        sock, status, reply = _post(port, "/v1/models/bid_filter:predict", json.dumps(body).encode())
        assert status == 200, reply
        assert [d["partner"] for d in json.loads(reply)["predictions"][0]["decisions"]] == partners
        owners.add(_owner(sock.getsockname()[1], port, workers))
        connections.append(sock)
        partners_sent += len(partners)
    assert owners == set(workers)  # the kernel spread the connections over both workers
    for sock in connections:
        sock.close()

    def settled() -> str:  # each worker publishes its per-partner counts and latencies once a second
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"{server.url}/metrics", timeout=5).text
            decisions = _total(text, "bidflow_serving_decisions_total{")
            if decisions == partners_sent and _total(text, "bidflow_serving_request_seconds_count{") == 24:
                return text
            assert time.monotonic() < deadline, text
            time.sleep(0.3)

    metrics = settled()
    assert _total(metrics, "bidflow_serving_auctions_total{") == 24
    assert _total(metrics, "bidflow_serving_request_seconds_count{") == 24
    skips = _total(metrics, 'bidflow_serving_decisions_total{decision="skip"')
    assert f'bidflow_serving_filtered_share{{model="bid_filter"}} {skips / partners_sent}' in metrics
    assert 'bidflow_serving_model_info{model="bid_filter",predictor="numba"' in metrics

    # A worker killed from outside is replaced; what it counted stays counted.
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while workers[0] in (now := _children(server.process.pid)) or len(now) < 2 or not _all_ready(server.url):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.5)
    assert server.process.poll() is None
    assert _total(settled(), "bidflow_serving_auctions_total{") == 24
