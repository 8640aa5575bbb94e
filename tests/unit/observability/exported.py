"""The series names bidflow's servers really expose, read from their own collectors.

Each exporter is built as its server builds it (the model server's ``ServingMetrics``, the router's
``RouterMetrics`` over a router state, the monitor's ``MonitorMetrics`` over a real ``Monitor``), fed
one of everything it counts, and scraped in Prometheus' text format; the names are parsed back from
that text. A metric renamed in the code changes these names, and the rule and panel checks fail.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

# What prometheus_client writes for each metric type (a family without samples still has its type line).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a scrape of ``registry`` can hold (from the families' types, samples or not)."""
    names = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def serving_names() -> set[str]:
    """A model server's metrics, after a load, a decision, a fail-open, an explain and a 5xx."""
    from bidflow.serving.metrics import ServingMetrics

    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    counts = metrics.model("bid_filter", ["atlas"], version="1", source="models:/bid_filter/1", predictor="numba")
    counts.record(["atlas", "zenith"], [True, False], explored=False, fail_open=False)
    metrics.latency.labels("bid_filter", "v1").observe(0.001)
    metrics.explain_latency.labels("bid_filter").observe(0.01)
    metrics.explained.labels("bid_filter").inc()
    metrics.fail_open.labels("bid_filter", "unreachable").inc()
    metrics.model_ready.labels("bid_filter").set(1)
    metrics.server_errors.labels("503").inc()
    return exposed_names(registry)


def bidder_names() -> set[str]:
    """The bidder server's metrics, after a bid of each kind, a settled reservation and an unknown notice."""
    from bidflow.serving.bidder_metrics import BidderMetrics

    registry = CollectorRegistry()
    metrics = BidderMetrics(registry).model("bidder")
    metrics.bids.inc()
    metrics.amount.inc(57)
    for counter in (*metrics.zero.values(), *metrics.reservations.values(), metrics.unknown, metrics.rebids):
        counter.inc()
    metrics.budget_left.set(1_000)
    return exposed_names(registry)


def router_names() -> set[str]:
    """The local router's metrics, with a champion and a canary, after a transition and a payload."""
    from bidflow.deploy.backend import ModelVersion
    from bidflow.deploy.local import Routes
    from bidflow.deploy.router import PayloadLogger, RouterState
    from bidflow.deploy.router_metrics import RouterMetrics

    def server(version: str) -> Any:
        return SimpleNamespace(model=ModelVersion("bid_filter", version, f"models:/bid_filter/{version}"))

    backend = SimpleNamespace(routes=Routes(champion=server("1"), canary=server("2"), percent=20))
    payloads = PayloadLogger("http://127.0.0.1:9/", batch=1, queue=1)
    state = RouterState(controller=None, backend=backend, payloads=payloads)  # type: ignore[arg-type]
    state.stats["canary"].requests += 1
    state.transitions["rollback"] = 1
    registry = CollectorRegistry()
    registry.register(RouterMetrics(state))
    return exposed_names(registry)


class _WithAWindow:
    """A real monitor's status, plus one closed window and an online recall (a fresh monitor has neither)."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def status(self, history: bool = True) -> dict[str, Any]:
        status: dict[str, Any] = self.monitor.status(history=history)
        status["latest"] = {"champion": {"report": {"features": [{"name": "score", "p_value": 0.5, "drift": False}]}}}
        for figures in status["roles"].values():
            figures["online_recall"] = 0.9
        return status


def monitor_names_and_event_kinds(state_dir: Path) -> tuple[set[str], set[str]]:
    """The drift monitor's metrics, and every value its events counter's ``kind`` label takes.

    The kinds are the real monitor's counts (and the retraining trigger's), plus ``unauthorized``,
    which the intake adds on its first refusal: an unauthenticated post is sent to get it.
    """
    from starlette.testclient import TestClient

    from bidflow.config import CanaryConfig, Config
    from bidflow.monitoring.service import MonitorMetrics, build_app
    from bidflow.monitoring.watch import Monitor

    monitor = Monitor(Config(canary=CanaryConfig(state=state_dir)), None, detector_loader=lambda version: None)
    with TestClient(build_app(monitor, "a-token-of-at-least-16-chars")) as http:
        assert http.post("/v1/payloads", json={"records": []}).status_code == 401
    registry = CollectorRegistry()
    registry.register(MonitorMetrics(_WithAWindow(monitor)))  # type: ignore[arg-type]
    return exposed_names(registry), set(monitor.status(history=False)["counts"])
