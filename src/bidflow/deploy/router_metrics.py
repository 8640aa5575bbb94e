"""The local router's Prometheus metrics (its ``GET /metrics``), read from its state at scrape time.

==========================================  =========  =========================================================
metric                                      type       labels
==========================================  =========  =========================================================
``bidflow_router_requests_total``           counter    role (champion | canary): scoring requests routed
``bidflow_router_errors_total``             counter    role: answered 5xx by the model server, or it was unreachable
``bidflow_router_canary_percent``           gauge      (none): the canary's share of scoring requests, 0 without one
``bidflow_router_model_info``               gauge = 1  role, version: which version serves each role
``bidflow_router_transitions_total``        counter    action (deploy | promote | rollback) through this router
``bidflow_router_payloads_sent_total``      counter    (none): payloads delivered to the drift monitor
``bidflow_router_payloads_dropped_total``   counter    (none): payloads dropped (queue full, monitor unreachable)
==========================================  =========  =========================================================

The router's per-role figures (``RoleStats``) start again at every transition, because the canary
analysis compares the two roles over the same stretch of traffic; Prometheus needs counters that only
grow, so the figures of closed stretches are kept in ``RouterState.served`` and added here. Nothing is
counted on the request path beyond what the router already counted; the samples are built only when
Prometheus scrapes, on the event loop's thread, which is also the only one that changes the figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from bidflow.deploy.backend import Role
    from bidflow.deploy.router import RouterState

ROLES: Final[tuple[Role, ...]] = ("champion", "canary")


class RouterMetrics(Collector):
    """The samples of one router (see the module docstring).

    Args:
        state: the router's shared state, read at every scrape.
    """

    def __init__(self, state: RouterState) -> None:
        self.state = state

    def describe(self) -> list[Any]:
        """Nothing: registering the collector must not read the state yet."""
        return []

    def collect(self) -> Iterator[Any]:
        """The router's samples, from its state now."""
        state = self.state
        requests = CounterMetricFamily("bidflow_router_requests", "Scoring requests routed, per role.", labels=["role"])
        errors = CounterMetricFamily(
            "bidflow_router_errors",
            "Requests answered 5xx or not answered by the role's model server.",
            labels=["role"],
        )
        for role in ROLES:
            before, now = state.served[role], state.stats[role]
            requests.add_metric([role], before[0] + now.requests)
            errors.add_metric([role], before[1] + now.errors)
        routes = state.backend.routes
        percent = GaugeMetricFamily("bidflow_router_canary_percent", "The canary's share of scoring requests (%).")
        percent.add_metric([], routes.percent if routes.canary is not None else 0)
        info = GaugeMetricFamily(
            "bidflow_router_model_info", "The model version serving each role (value 1).", labels=["role", "version"]
        )
        for role, server in (("champion", routes.champion), ("canary", routes.canary)):
            if server is not None:
                info.add_metric([role, server.model.version], 1)
        transitions = CounterMetricFamily(
            "bidflow_router_transitions", "Deploys, promotions and rollbacks through this router.", labels=["action"]
        )
        for action, count in sorted(state.transitions.items()):
            transitions.add_metric([action], count)
        sent = CounterMetricFamily("bidflow_router_payloads_sent", "Served payloads delivered to the drift monitor.")
        dropped = CounterMetricFamily(
            "bidflow_router_payloads_dropped", "Served payloads dropped (queue full, or the monitor did not take them)."
        )
        if state.payloads is not None:
            sent.add_metric([], state.payloads.sent)
            dropped.add_metric([], state.payloads.dropped)
        yield from (requests, errors, percent, info, transitions, sent, dropped)
