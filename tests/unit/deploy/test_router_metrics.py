"""The router's own Prometheus metrics: counters that survive the per-transition reset the analysis needs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.journal import Transition
from bidflow.deploy.local import Routes
from bidflow.deploy.router import RouterState, build_router

V1 = ModelVersion("bid_filter", "1", "models:/bid_filter/1")
V2 = ModelVersion("bid_filter", "2", "models:/bid_filter/2")


class Backend:
    def __init__(self) -> None:
        self.routes = Routes(champion=SimpleNamespace(model=V1), canary=SimpleNamespace(model=V2), percent=20)


class Controller:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def rollback(self, *, actor: str, reasons: Any = (), metrics: Any = None, **expectations: Any) -> Transition:
        self.backend.routes = Routes(champion=self.backend.routes.champion)
        return Transition("rollback", V2, actor, tuple(reasons))


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_are_the_routers_own_and_survive_a_transition() -> None:
    backend = Backend()
    state = RouterState(controller=Controller(backend), backend=backend, payloads=None)  # type: ignore[arg-type]
    client = TestClient(build_router(state))  # no lifespan: nothing to start or stop
    state.stats["champion"].requests, state.stats["canary"].requests, state.stats["canary"].errors = 40, 10, 2
    before = samples(client)
    assert before[("bidflow_router_canary_percent", ())] == 20
    assert before[("bidflow_router_requests_total", (("role", "canary"),))] == 10
    assert before[("bidflow_router_model_info", (("role", "canary"), ("version", "2")))] == 1

    assert client.post("/admin/rollback", json={"actor": "test", "reasons": ["drift"]}).status_code == 200
    assert state.stats["canary"].requests == 0  # the analysis starts a new stretch...
    after = samples(client)
    assert after[("bidflow_router_requests_total", (("role", "canary"),))] == 10  # ...the counters never go back
    assert after[("bidflow_router_errors_total", (("role", "canary"),))] == 2
    assert after[("bidflow_router_requests_total", (("role", "champion"),))] == 40
    assert after[("bidflow_router_transitions_total", (("action", "rollback"),))] == 1
    assert after[("bidflow_router_canary_percent", ())] == 0
    assert ("bidflow_router_model_info", (("role", "canary"), ("version", "2"))) not in after
