"""The alert rules in a real Prometheus: a model server under load loses Redis, and the fail-open alert goes pending.

Debian's Prometheus (scripts/install-prometheus.sh) scrapes, every second, a bid-filter model server whose
online features live in a private redis-server, the local router (no model deployed: its own metrics only)
and the drift monitor (its own environment), and evaluates the generated rules with short windows
(``RuleSettings``: the production rules with a 10 s rate window and a 1 minute ``for``). Then:

1. every target is up, every rule evaluates without error, and no alert is active under clean load;
2. every dashboard query (Grafana variables filled in) is accepted and evaluated by Prometheus;
3. Redis is killed while the load goes on: the recorded fail-open share jumps, and ``BidflowFailOpenHigh``
   (with ``BidflowOnlineStoreErrors``) goes pending for the model server's series.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from bidflow.observability.render import CHART_DASHBOARDS, rules_yaml
from bidflow.observability.rules import KIND_LABEL, RuleSettings
from tests.conftest import REPO, free_port, running_monitor, running_router
from tests.integration.serving.conftest import (
    RedisServer,
    ServerProcess,
    Setup,
    bid_filter_views,
    bid_logs,
    bid_parquet,
    bid_rows,
    feast_model,
    private_redis,
    split_rows,
    start_server,
    trained,
)
from tests.prometheus import PrometheusServer, Target, running_prometheus

__all__ = [
    "bid_logs", "bid_parquet", "bid_rows", "feast_model", "private_redis", "split_rows", "start_server", "trained",
]  # fmt: skip

pytestmark = pytest.mark.e2e

# The production rules with windows a test can wait for: Prometheus scrapes and evaluates every second.
TEST_RULES = replace(RuleSettings(), rate_window="10s", fail_open_for="1m", store_errors_for="1m", interval="1s")
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$job": ".*", "$model": ".*", "$monitor": ".*"}


class Load:
    """Scoring requests to a model server from a thread, until stopped: (answers, status codes seen)."""

    def __init__(self, url: str, bodies: list[bytes]) -> None:
        self.url = f"{url}/v1/models/bid_filter:predict"
        self.bodies = bodies
        self.sent = 0
        self.statuses: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=5, headers={"content-type": "application/json"}) as client:
            while not self._stop.is_set():
                response = client.post(self.url, content=self.bodies[self.sent % len(self.bodies)])
                self.statuses.add(response.status_code)
                self.sent += 1
                time.sleep(0.01)  # about 50-80 requests/s: enough for every rate window, light on 2 cores


def bodies(bid_logs: list[dict[str, Any]], n: int = 200) -> list[bytes]:
    last = max(r["ts_ms"] for r in bid_logs) // 3_600_000
    held_out = [r for r in bid_logs if r["ts_ms"] // 3_600_000 == last][:n]
    instances = [{"request": r["request"], "partners": [o["partner"] for o in r["outcomes"]], "ts_ms": r["ts_ms"]}
                 for r in held_out]  # fmt: skip
    return [json.dumps({"instances": [instance]}).encode() for instance in instances]


@pytest.fixture
def redis_backed_server(
    feast_model: Setup,
    bid_logs: list[dict[str, Any]],
    private_redis: RedisServer,
    start_server: Callable[..., ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> ServerProcess:
    """The bid filter reading its features from the private Redis, asking the store for every auction."""
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
    return start_server(
        "--config", str(feast_model.config_file("production", "serve-alerts.yaml")),
        "--model", "candidate", "--breaker-cooldown-s", "0.5", "--feature-timeout-ms", "50", "--feature-cache-s", "0",
        env=env,
    )  # fmt: skip


@pytest.fixture
def router_and_monitor(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``bidflow canary serve`` with nothing deployed, and the drift monitor, sharing one state folder."""
    monitor_port = free_port()
    settings = {
        "registry": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": str(tmp_path / "art")},
        "canary": {"state": str(tmp_path / "deploy"), "router_port": free_port(), "champion_port": free_port(),
                   "canary_port": free_port(), "monitor_url": f"http://127.0.0.1:{monitor_port}"},
        "monitor": {"port": monitor_port, "detector": str(tmp_path / "detector")},
    }  # fmt: skip
    config_file = tmp_path / "bidflow.yaml"
    config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
    with running_monitor(config_file) as monitor, running_router(config_file) as router:
        yield router, monitor


def address(url: str) -> str:
    return url.removeprefix("http://")


def active(prometheus: PrometheusServer, name: str) -> list[dict[str, Any]]:
    return [a for a in prometheus.alerts() if a["labels"]["alertname"] == name and a["state"] in ("pending", "firing")]


def wait(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what} not seen within {seconds}s"
        time.sleep(0.5)
    return found


def test_killing_redis_under_load_makes_the_fail_open_alert_pending(
    redis_backed_server: ServerProcess,
    router_and_monitor: tuple[str, str],
    private_redis: RedisServer,
    bid_logs: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    router, monitor = router_and_monitor
    kind = {KIND_LABEL: "bid_filter"}
    targets = [
        Target("bid-filter", address(redis_backed_server.url), kind),
        Target("router", address(router), kind),
        Target("monitor", address(monitor), kind),
    ]
    with (
        running_prometheus(tmp_path / "prometheus", targets, rules_yaml(TEST_RULES)) as prometheus,
        Load(redis_backed_server.url, bodies(bid_logs)) as load,
    ):
        # 1. Clean load: targets up, requests recorded, rules healthy, no fail-open (its counter has no series yet).
        up = wait(lambda: len(prometheus.query("up == 1")) == 3 and prometheus.query("up == 1"), 30, "3 targets up")
        assert {r["metric"]["job"] for r in up} == {"bid-filter", "router", "monitor"}
        requests = 'bidflow:serving_requests:rate10s{job="bid-filter", model="bid_filter"} > 0'
        wait(lambda: prometheus.query(requests), 30, "the request rate recorded under clean load")
        assert prometheus.query("bidflow:serving_fail_open:ratio_rate10s") == []
        groups = prometheus.api("rules")["groups"]
        assert {g["name"] for g in groups} == {"bidflow-serving-records", "bidflow-serving-alerts",
                                               "bidflow-canary-drift-alerts"}  # fmt: skip

        def evaluated() -> list[dict[str, Any]]:  # a rule's health is "unknown" until its group's first evaluation
            rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            return rules if all(r["health"] != "unknown" for r in rules) else []

        rules = wait(evaluated, 10, "every rule evaluated once")
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
        assert active(prometheus, "BidflowFailOpenHigh") == []
        assert prometheus.query('bidflow_router_canary_percent{job="router"}')[0]["value"][1] == "0"
        assert prometheus.query('bidflow_monitor_events_total{job="monitor", kind="payloads"}')
        assert prometheus.query('bidflow_serving_model_ready{job="bid-filter"} == 1')

        # 2. Every dashboard query parses and evaluates in this Prometheus (Grafana's variables filled in).
        for path in sorted((REPO / CHART_DASHBOARDS).glob("*.json")):
            for panel in json.loads(path.read_text())["panels"]:
                for target in panel.get("targets", []):
                    expr = target["expr"]
                    for variable, value in GRAFANA_VARIABLES.items():
                        expr = expr.replace(variable, value)
                    prometheus.query(expr)  # asserts status "success"

        # 3. Redis dies under load: every request fails open, and the alert goes pending (for: 1m).
        sent_before = load.sent
        private_redis.kill()
        pending = wait(lambda: active(prometheus, "BidflowFailOpenHigh"), 45, "BidflowFailOpenHigh pending")
        (alert,) = pending
        assert alert["labels"] | {"severity": "warning"} == {
            "alertname": "BidflowFailOpenHigh", "severity": "warning", "component": "serving", "job": "bid-filter",
            KIND_LABEL: "bid_filter", "model": "bid_filter",
        }  # fmt: skip
        assert float(alert["value"]) > TEST_RULES.fail_open_share
        assert alert["state"] == "pending"  # the production-like `for` holds it back from firing this soon
        assert wait(lambda: active(prometheus, "BidflowOnlineStoreErrors"), 20, "BidflowOnlineStoreErrors")
        assert load.sent > sent_before and load.statuses == {200}  # failing open: never a 5xx
