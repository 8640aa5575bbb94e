"""Redis faults on the model server's online reads: a hung Redis, added latency, a half-open connection.

The server reads Feast's Redis keys directly (``bidflow.features.online_redis``): with the
production feature store (plain Redis, serialization version 3) that is the only way serving
reads Redis; ``get_online_features`` is its fallback for stores the direct reader does not know
(Redis Cluster, Sentinel, versioned views), which no bidflow environment uses.

One server process, started with short public settings (``--feature-timeout-ms``,
``--breaker-cooldown-s``, ``--feature-cache-s 0`` so every auction asks the store), reads a
private ``redis-server`` through a small TCP proxy in the test that can delay replies or stop
forwarding. Each fault must be answered with 200 and every partner called (fail open) within
the feature timeout plus a margin, and the server must serve with features again within the
breaker cooldown plus a margin once the fault is gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.conftest import free_port
from tests.integration.serving.conftest import (
    RedisServer,
    ServerProcess,
    Setup,
    _connects,
    _ready,
    _wait,
    bid_filter_views,
)

pytestmark = pytest.mark.integration

TIMEOUT_MS = 100  # --feature-timeout-ms
COOLDOWN_S = 0.5  # --breaker-cooldown-s
# A request waits at most the feature timeout on the store; the margin is the HTTP round trip and
# the model (a few ms) on a loaded test machine. redis-py's own default would be a 5 s socket wait.
BOUND_S = TIMEOUT_MS / 1000 + 0.4
RECOVERY_S = COOLDOWN_S + 1.0  # the first request after the cooldown reads the store again
FAULT_S = 3 * COOLDOWN_S  # long enough for the breaker to close and reopen several times


class FaultProxy:
    """A TCP proxy to Redis on its own event loop: passes bytes, delays replies, or swallows requests.

    ``delay_s``: every reply from Redis waits this long before it is passed on.
    ``blackhole``: bytes from the client are swallowed and nothing is answered or closed (a
    half-open peer); new connections are accepted and treated the same.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.delay_s = 0.0
        self.blackhole = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        )
        self._server = future.result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            if self.blackhole:
                while await client_r.read(65536):
                    pass  # swallowed; the client gives up on its own
                return
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            try:
                await asyncio.gather(self._requests(client_r, upstream_w), self._replies(upstream_r, client_w))
            finally:
                upstream_w.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            client_w.close()

    async def _requests(self, client_r: asyncio.StreamReader, upstream_w: asyncio.StreamWriter) -> None:
        while data := await client_r.read(65536):
            if not self.blackhole:  # an open connection goes half-open too
                upstream_w.write(data)
                await upstream_w.drain()
        upstream_w.close()

    async def _replies(self, upstream_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        while data := await upstream_r.read(65536):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            client_w.write(data)
            await client_w.drain()
        client_w.close()


@dataclass
class Faulty:
    """The server, the private Redis behind the proxy, and auctions to send."""

    server: ServerProcess
    redis: RedisServer
    proxy: FaultProxy
    records: list[dict[str, Any]]
    sent: list[int] = field(default_factory=lambda: [0])

    def auction(self) -> tuple[dict[str, Any], float]:
        """One v1 bid-filter prediction (200 or the test fails) and how long it took."""
        record = self.records[self.sent[0] % len(self.records)]
        self.sent[0] += 1
        partners = [o["partner"] for o in record["outcomes"]]
        body = {"instances": [{"request": record["request"], "partners": partners, "ts_ms": record["ts_ms"]}]}
        started = time.perf_counter()
        response = httpx.post(f"{self.server.url}/v1/models/bid_filter:predict", json=body, timeout=10)
        took = time.perf_counter() - started
        assert response.status_code == 200, response.text
        prediction: dict[str, Any] = response.json()["predictions"][0]
        return prediction, took

    def fail_open_count(self, reason: str) -> float:
        metrics = httpx.get(f"{self.server.url}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("bidflow_serving_fail_open_total{") and f'reason="{reason}"' in line
        )


@pytest.fixture(scope="module")
def faulty(
    feast_model: Setup, bid_logs: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Faulty]:
    from bidflow.features import store as feature_store

    root = tmp_path_factory.mktemp("redis-faults")
    redis = RedisServer(free_port(), root)
    redis.start()
    proxy = FaultProxy(redis.port)
    proxy.start()
    registry = f"sqlite:///{root / 'registry.db'}"
    process: subprocess.Popen[bytes] | None = None
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("BIDFLOW_FEAST_REGISTRY_URL", registry)
            patch.setenv("BIDFLOW_FEAST_REDIS", f"127.0.0.1:{redis.port}")
            config = feast_model.config("production")
            store = feature_store.open_store(config.features)
            feature_store.apply(store, config.features)
            end = pd.Timestamp(max(r["ts_ms"] for r in bid_logs), unit="ms", tz="UTC").to_pydatetime()
            views = bid_filter_views(store)
            feature_store.materialize(store, end - pd.Timedelta(days=2), end + pd.Timedelta(hours=1), views)

        port = free_port()
        log = root / "server.log"
        env = os.environ | {"BIDFLOW_FEAST_REGISTRY_URL": registry, "BIDFLOW_FEAST_REDIS": f"127.0.0.1:{proxy.port}"}
        command = [
            sys.executable, "-m", "bidflow.serving", "--http-port", str(port),
            "--config", str(feast_model.config_file("production", "serve-faults.yaml")), "--model", "candidate",
            "--feature-timeout-ms", str(TIMEOUT_MS), "--breaker-cooldown-s", str(COOLDOWN_S),
            "--feature-cache-s", "0",
        ]  # fmt: skip
        with log.open("wb") as sink:
            process = subprocess.Popen(command, cwd=root, stdout=sink, stderr=subprocess.STDOUT, env=env)
        server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
        _wait(lambda: process.poll() is not None or _connects(port), 120, "server did not listen")
        _wait(lambda: _ready(server), 180, f"model did not become ready:\n{server.output()}")
        last = max(r["ts_ms"] for r in bid_logs) // 3_600_000
        held_out = [r for r in bid_logs if r["ts_ms"] // 3_600_000 == last]
        faulty = Faulty(server, redis, proxy, held_out[:: max(1, len(held_out) // 40)][:40])
        _serves_with_features(faulty)
        yield faulty
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        proxy.stop()
        if redis.process is not None:
            with suppress(ProcessLookupError):
                redis.process.send_signal(signal.SIGCONT)
        redis.kill()


def _serves_with_features(faulty: Faulty) -> None:
    for _ in range(5):
        prediction, took = faulty.auction()
        assert prediction["fail_open"] is False, prediction
        assert took < BOUND_S


def _fails_open_within_bound(faulty: Faulty) -> None:
    """For ``FAULT_S``: every auction is answered, fails open with every partner called, within ``BOUND_S``."""
    timeouts_before = faulty.fail_open_count("timeout")
    reasons = []
    slowest = 0.0
    deadline = time.monotonic() + FAULT_S
    while time.monotonic() < deadline:
        prediction, took = faulty.auction()
        slowest = max(slowest, took)
        assert prediction["fail_open"] is True, prediction
        assert {d["decision"] for d in prediction["decisions"]} == {"call"}
        reasons.append(prediction["fail_open_reason"])
        time.sleep(0.02)
    assert slowest < BOUND_S, f"an auction took {slowest:.3f} s; bound {BOUND_S:.3f} s"
    assert set(reasons) <= {"timeout", "breaker_open"}, reasons
    # The store was asked again after each cooldown, and each time the wait was cut at the timeout.
    timed_out = reasons.count("timeout")
    assert timed_out >= 2, reasons
    assert faulty.fail_open_count("timeout") - timeouts_before == timed_out


def _recovers(faulty: Faulty) -> float:
    """Seconds until an auction is served with features again (every answer meanwhile a 200 within the bound)."""
    started = time.monotonic()
    while True:
        prediction, took = faulty.auction()
        assert took < BOUND_S
        if prediction["fail_open"] is False:
            break
        assert time.monotonic() - started < RECOVERY_S, f"still failing open after {RECOVERY_S} s: {prediction}"
        time.sleep(0.02)
    recovered = time.monotonic() - started
    _serves_with_features(faulty)
    return recovered


def test_hung_redis_fails_open_within_the_timeout_and_recovers(faulty: Faulty) -> None:
    process = faulty.redis.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)  # the kernel still accepts connections; nothing answers
    try:
        _fails_open_within_bound(faulty)
    finally:
        process.send_signal(signal.SIGCONT)
    _recovers(faulty)


def test_added_latency_fails_open_within_the_timeout_and_recovers(faulty: Faulty) -> None:
    faulty.proxy.delay_s = 3 * TIMEOUT_MS / 1000
    try:
        _fails_open_within_bound(faulty)
    finally:
        faulty.proxy.delay_s = 0.0
    _recovers(faulty)
    # Latency under the timeout is only latency: served with features.
    faulty.proxy.delay_s = TIMEOUT_MS / 1000 / 5
    try:
        _serves_with_features(faulty)
    finally:
        faulty.proxy.delay_s = 0.0


def test_half_open_connection_fails_open_within_the_timeout_and_recovers(faulty: Faulty) -> None:
    faulty.proxy.blackhole = True  # the pooled connection and new ones: accepted, never answered, never closed
    try:
        _fails_open_within_bound(faulty)
    finally:
        faulty.proxy.blackhole = False
    _recovers(faulty)
