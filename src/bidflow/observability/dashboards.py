"""What each Grafana dashboard shows: panels as plain data, built into Grafana JSON by ``grafana``.

Three kinds of dashboard:

* **serving** (every model server): scoring requests, latency against the SLO, 5xx share, readiness
  and the served versions, fail-opens by reason, the explain route's load;
* **canary and drift** (the release loop): traffic and p99 per served model version (the servers'
  ``bidflow_serving_model_info`` joined to their requests, so it works on KServe revisions and on
  the local backend alike), the local router's split, transitions and payload delivery, the drift
  monitor's p-values, windows, online recall, actions and intake;
* **economics**, one per registered model kind (``bidflow_kind`` target label): what serving the
  kind costs and saves. A thresholded kind (per-partner call/skip decisions) shows the partner calls
  saved against the bids kept on the exploration share, per partner; every kind shows its traffic,
  its fail-open share, its latency and the drift of the columns the monitor watches for it.

The thresholds drawn on panels are the alert rules' (``RuleSettings``), so a panel's red line is where
its alert fires. Queries use only the metrics the servers export; a test holds every expression to
the names the code really exposes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from bidflow.observability.rules import KIND_LABEL, RuleSettings

if TYPE_CHECKING:
    from bidflow.kinds import Kind

RATE: Final = "$__rate_interval"  # Grafana's range for rate(): at least four scrape intervals
SERVING_INFO: Final = "bidflow_serving_model_info"
EVENTS: Final = "bidflow_monitor_events_total"
MONITOR_ACTIONS: Final = (
    "rollbacks", "alerts", "retrain_runs", "retrain_succeeded", "retrain_gate_failed", "retrain_submitted",
    "retrain_failed",
)  # fmt: skip
MONITOR_INTAKE: Final = ("payloads", "auctions", "outcomes", "bad", "unauthorized")


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel; ``legend`` is Grafana's legend format (``{{model}}``)."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """One panel: ``style`` timeseries, stat (latest value) or table (instant query, one row per series).

    ``threshold`` draws a red line (or colours a stat) from that value on; ``unit`` is Grafana's unit id.
    """

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    style: Literal["timeseries", "stat", "table"] = "timeseries"
    threshold: float | None = None
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class Variable:
    """A dashboard variable from ``label_values(...)`` (multi-select, with "All")."""

    name: str
    label: str
    query: str


@dataclass(frozen=True)
class Dashboard:
    """A whole dashboard: rows of panels; ``file`` is its JSON file's name without ``.json``."""

    file: str
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    rows: tuple[tuple[str, tuple[Panel, ...]], ...]
    tags: tuple[str, ...] = field(default=("bidflow",))

    @property
    def panels(self) -> tuple[Panel, ...]:
        """Every panel, row by row."""
        return tuple(panel for _, panels in self.rows for panel in panels)


def matches(label: str, pattern: str) -> str:
    """A regex matcher, ``label=~"pattern"``."""
    return f'{label}=~"{pattern}"'


def selector(*matchers: str) -> str:
    """A label selector from matchers (``job=~"$job"``); empty matchers are left out."""
    kept = [m for m in matchers if m]
    return "{" + ", ".join(kept) + "}" if kept else ""


def rate(metric: str, sel: str, by: str | None = None) -> str:
    """``sum [by (...)] (rate(metric{sel}[$__rate_interval]))``."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{sel}[{RATE}]))"


def ratio(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` (both already aggregated to the same labels)."""
    return f"{numerator}\n/\n{denominator}"


def quantile(q: float, histogram: str, sel: str, by: str) -> str:
    """The ``q`` quantile of a prometheus_client histogram (its ``_bucket`` series) per ``by``."""
    return f"histogram_quantile({q:g}, sum by ({by}, le) (rate({histogram}_bucket{sel}[{RATE}])))"


def by_version(expr: str, sel: str, on: str) -> str:
    """``expr`` with each series' served ``version`` joined from ``bidflow_serving_model_info`` on ``on``."""
    return f"{expr}\n* on ({on}) group_left (version)\nmax by ({on}, version) ({SERVING_INFO}{sel} == 1)"


def serving(settings: RuleSettings) -> Dashboard:
    """Every model server: traffic, latency, errors, readiness, online features, explanations."""
    job, model = 'job=~"$job"', 'model=~"$model"'
    sel = selector(job, model)
    requests = "bidflow_serving_request_seconds_count"
    traffic = (
        Panel("Scoring requests", "Predict/infer requests per second, per model and protocol (v1 | v2).",
              (Query(rate(requests, sel, "model, protocol"), "{{model}} {{protocol}}"),), "reqps"),
        Panel("Latency p50 / p99", "From receiving a scoring request to the start of its response; the red line "
              "is the p99 SLO (canary.max_p99_ms) where BidflowLatencyP99AboveSLO fires.",
              (Query(quantile(0.5, "bidflow_serving_request_seconds", sel, "model"), "{{model}} p50"),
               Query(quantile(0.99, "bidflow_serving_request_seconds", sel, "model"), "{{model}} p99")),
              "s", threshold=settings.p99_slo_seconds),
    )  # fmt: skip
    errors = (
        Panel("5xx share", "5xx answers per scoring request (503: the model is not ready, or a store a request "
              "cannot be answered without is down; 500: a bug). Scoring fails open instead when the online store is "
              "down.",
              (Query(ratio(rate("bidflow_serving_server_errors_total", selector(job), "job"),
                           rate(requests, selector(job), "job")), "{{job}}"),),
              "percentunit", threshold=settings.server_error_share, width=8),
        Panel("5xx by status", "5xx answers per second, by status.",
              (Query(rate("bidflow_serving_server_errors_total", selector(job), "job, status"), "{{job}} {{status}}"),),
              "reqps", width=8),
        Panel("Model ready", "1: loaded and serving; 0: answering 503 (loading, or failed to load), the smallest "
              "over the model's servers.",
              (Query(f"min by (model) (bidflow_serving_model_ready{sel})", "{{model}}"),),
              style="stat", threshold=1, width=8),
        Panel("Served versions", "Which model version each server serves, from where, with which predictor.",
              (Query(f"max by (job, model, version, source, predictor) ({SERVING_INFO}{sel} == 1)", instant=True),),
              style="table", width=24, height=6),
    )  # fmt: skip
    online = (
        Panel("Fail-open share", "Scoring requests answered without online features (every partner called, or "
              "rows scored on the feature defaults); the red line is where BidflowFailOpenHigh fires.",
              (Query(ratio(rate("bidflow_serving_fail_open_total", sel, "model"), rate(requests, sel, "model")),
                     "{{model}}"),),
              "percentunit", threshold=settings.fail_open_share),
        Panel("Fail-opens by reason", "timeout and unreachable: the store failed; breaker_open: the store is left "
              "alone for a moment after a failure; error: anything else.",
              (Query(rate("bidflow_serving_fail_open_total", sel, "model, reason"), "{{model}} {{reason}}"),),
              "reqps"),
    )  # fmt: skip
    explain = (
        Panel("Explain requests and rows", "The :explain route (exact TreeSHAP, far costlier than scoring).",
              (Query(rate("bidflow_serving_explain_seconds_count", sel, "model"), "{{model}} requests"),
               Query(rate("bidflow_serving_explained_total", sel, "model"), "{{model}} rows")),
              "reqps"),
        Panel("Explain latency p99", "From receiving an explain request to the start of its response.",
              (Query(quantile(0.99, "bidflow_serving_explain_seconds", sel, "model"), "{{model}}"),), "s"),
    )  # fmt: skip
    return Dashboard(
        file="bidflow-serving",
        uid="bidflow-serving",
        title="bidflow / serving",
        description="The model servers: traffic, latency against the SLO, errors, readiness, online features.",
        variables=(
            Variable("job", "job", f"label_values({SERVING_INFO}, job)"),
            Variable("model", "model", f'label_values({SERVING_INFO}{{job=~"$job"}}, model)'),
        ),
        rows=(
            ("Traffic and latency", traffic),
            ("Errors and readiness", errors),
            ("Online features", online),
            ("Explanations", explain),
        ),
    )


def canary_drift(settings: RuleSettings) -> Dashboard:
    """The release loop: canary traffic per version, the local router, drift, the monitor's actions and intake."""
    job, monitor = 'job=~"$job"', 'job=~"$monitor"'
    served = selector(job)
    target = "namespace, job, instance, model"
    counts = by_version(f"rate(bidflow_serving_request_seconds_count{served}[{RATE}])", served, target)
    buckets = by_version(f"rate(bidflow_serving_request_seconds_bucket{served}[{RATE}])", served, target)
    canary = (
        Panel("Scoring requests by model version", "Each server's requests with the version it serves "
              "(bidflow_serving_model_info): champion and canary side by side, on KServe revisions or locally.",
              (Query(f"sum by (model, version) (\n{counts}\n)", "{{model}} v{{version}}"),), "reqps"),
        Panel("Latency p99 by model version", "The canary analysis compares these (canary.max_p99_ratio); the red "
              "line is the SLO.",
              (Query(f"histogram_quantile(0.99, sum by (model, version, le) (\n{buckets}\n))",
                     "{{model}} v{{version}}"),),
              "s", threshold=settings.p99_slo_seconds),
    )  # fmt: skip
    router = (
        Panel("Canary share (local router)", "The share of scoring requests the local router sends to the canary.",
              (Query("max(bidflow_router_canary_percent)", "canary %"),), "percent", width=6),
        Panel("Requests and errors by role (local router)", "Scoring requests routed, and those answered 5xx or "
              "not answered, per role.",
              (Query(rate("bidflow_router_requests_total", "", "role"), "{{role}}"),
               Query(rate("bidflow_router_errors_total", "", "role"), "{{role}} errors")),
              "reqps", width=10),
        Panel("Versions per role (local router)", "Which version serves as champion and as canary.",
              (Query("max by (role, version) (bidflow_router_model_info)", instant=True),), style="table", width=8),
        Panel("Transitions (local router)", "Deploys, promotions and rollbacks through the router.",
              (Query(f"sum by (action) (increase(bidflow_router_transitions_total[{RATE}]))", "{{action}}"),),
              width=12),
        Panel("Payloads to the monitor (local router)", "Served payloads delivered to the drift monitor, and "
              "dropped (queue full, monitor unreachable): dropped traffic is not watched for drift.",
              (Query("sum(rate(bidflow_router_payloads_sent_total[$__rate_interval]))", "sent"),
               Query("sum(rate(bidflow_router_payloads_dropped_total[$__rate_interval]))", "dropped")),
              "reqps", width=12),
    )  # fmt: skip
    msel = selector(monitor)
    drift = (
        Panel("Drift p-value per feature", "The latest window's test per monitored column and role (K-S for "
              "numbers and the score, Chi-square for categories, Bonferroni-corrected at monitor.p_value).",
              (Query(f"min by (role, feature) (bidflow_drift_p_value{msel})", "{{role}} {{feature}}"),), width=12),
        Panel("Drifted features", "Monitored columns whose latest window drifted, per role.",
              (Query(f"sum by (role) (bidflow_drift_detected{msel})", "{{role}}"),), width=12),
        Panel("Detection window fill", "How full each role's open window is (it is tested when full).",
              (Query(ratio(f"max by (role) (bidflow_drift_window_fill{msel})",
                           f"max by (role) (bidflow_drift_window_size{msel})"), "{{role}}"),),
              "percentunit", width=12),
        Panel("Online bid recall", "Bids kept among the partners that bid on explored auctions (labels from the "
              "exploration share), per role.",
              (Query(f"max by (role) (bidflow_online_bid_recall{msel})", "{{role}}"),), "percentunit", width=12),
    )  # fmt: skip
    acted = selector(monitor, matches("kind", "|".join(MONITOR_ACTIONS)))
    actions = (
        Panel("Monitor actions", "Rollbacks, champion drift alerts and retraining runs by outcome.",
              (Query(f"sum by (kind) (increase({EVENTS}{acted}[{RATE}]))", "{{kind}}"),), width=8),
        Panel("Monitor intake", "Records received and read, outcomes matched, and records rejected (bad, "
              "unauthorized).",
              (Query(rate(EVENTS, selector(monitor, matches("kind", "|".join(MONITOR_INTAKE))), "kind"), "{{kind}}"),),
              "reqps", width=8),
        Panel("Intake rejected share", "Rejected records per record; the red line is where "
              "BidflowMonitorIntakeRejecting fires.",
              (Query(ratio(rate(EVENTS, selector(monitor, matches("kind", "bad|unauthorized"))),
                           rate(EVENTS, selector(monitor, matches("kind", "payloads|bad|unauthorized")))),
                     "rejected"),),
              "percentunit", threshold=settings.intake_reject_share, width=8),
    )  # fmt: skip
    return Dashboard(
        file="bidflow-canary-drift",
        uid="bidflow-canary-drift",
        title="bidflow / canary and drift",
        description="The release loop: canary traffic per version, the local router, drift, the monitor.",
        variables=(
            Variable("job", "model servers", f"label_values({SERVING_INFO}, job)"),
            Variable("monitor", "monitor", f"label_values({EVENTS}, job)"),
        ),
        rows=(("Canary", canary), ("Local router", router), ("Drift", drift), ("Monitor", actions)),
    )


def economics(kind: Kind, settings: RuleSettings) -> Dashboard:
    """One kind's economics: what serving it costs and, for a thresholded kind, the calls saved and bids kept."""
    of_kind = f'{KIND_LABEL}="{kind.name}"'
    sel = selector(of_kind, 'model=~"$model"')
    requests = "bidflow_serving_request_seconds_count"
    served = (
        Panel("Scoring requests", "Requests per second to the kind's model servers.",
              (Query(rate(requests, sel, "model"), "{{model}}"),), "reqps", width=8),
        Panel("Served without online features", "Fail-opens per scoring request (the red line: the fail-open alert).",
              (Query(ratio(rate("bidflow_serving_fail_open_total", sel, "model"), rate(requests, sel, "model")),
                     "{{model}}"),),
              "percentunit", threshold=settings.fail_open_share, width=8),
        Panel("Latency p99", "What a decision costs in time (the red line: the SLO).",
              (Query(quantile(0.99, "bidflow_serving_request_seconds", sel, "model"), "{{model}}"),),
              "s", threshold=settings.p99_slo_seconds, width=8),
    )  # fmt: skip
    rows: list[tuple[str, tuple[Panel, ...]]] = [("Serving", served)]
    if kind.thresholded:
        decisions = "bidflow_serving_decisions_total"
        auctions = "bidflow_serving_auctions_total"
        skip = selector(of_kind, 'model=~"$model"', 'decision="skip"')
        rows.append(("Partner calls saved and bids kept", (
            Panel("Partner calls saved", "Share of partner calls the filter skipped: the saving, against the bids "
                  "kept beside it.",
                  (Query(ratio(rate(decisions, skip), rate(decisions, sel)), "saved"),), "percentunit"),
            Panel("Bids kept (online recall)", "Among partners that bid on explored auctions (the exploration share "
                  "bypasses the filter, so it keeps producing labels), the share the filter would have called.",
                  (Query(f"max by (role) (bidflow_online_bid_recall{selector(of_kind)})", "{{role}}"),),
                  "percentunit"),
            Panel("Calls saved per partner", "Per demand partner (other: partners without a threshold).",
                  (Query(ratio(rate(decisions, skip, "partner"), rate(decisions, sel, "partner")), "{{partner}}"),),
                  "percentunit"),
            Panel("Partner calls per second", "Calls made and skipped.",
                  (Query(rate(decisions, sel, "decision"), "{{decision}}"),), "reqps"),
            Panel("Exploration share", "Auctions that bypass the filter (every partner called) to keep labels coming.",
                  (Query(ratio(rate(auctions, selector(of_kind, 'model=~"$model"', 'explored="true"')),
                               rate(auctions, sel)), "explored"),), "percentunit"),
            Panel("Auctions failing open", "Auctions scored without online features: every partner called, "
                  "nothing saved.",
                  (Query(ratio(rate(auctions, selector(of_kind, 'model=~"$model"', 'fail_open="true"')),
                               rate(auctions, sel)), "fail-open"),), "percentunit"),
        )))  # fmt: skip
    else:
        rows.append(("Explanations", (
            Panel("Explained rows per second", "Rows explained on the :explain route (exact TreeSHAP: far costlier "
                  "than scoring them).",
                  (Query(rate("bidflow_serving_explained_total", sel, "model"), "{{model}}"),), "reqps", width=24),
        )))  # fmt: skip
    if kind.panels is not None:
        from bidflow.kinds import load_object

        rows.extend(load_object(kind.panels, where=f"kinds.{kind.name}.panels")(sel))
    if kind.drift is not None:
        watched = selector(of_kind, matches("feature", "|".join(kind.drift.columns)))
        acted = selector(of_kind, matches("kind", "alerts|rollbacks"))
        rows.append(("Drift of what the model sees", (
            Panel("Drift p-value of the monitored columns", f"The columns the monitor watches for {kind.name} "
                  f"({', '.join(kind.drift.columns)}), per role, in the latest window.",
                  (Query(f"min by (role, feature) (bidflow_drift_p_value{watched})", "{{role}} {{feature}}"),)),
            Panel("Drift alerts and rollbacks", "The monitor's actions on this kind's traffic.",
                  (Query(f"sum by (kind) (increase({EVENTS}{acted}[{RATE}]))", "{{kind}}"),)),
        )))  # fmt: skip
    slug = kind.name.replace("_", "-")
    return Dashboard(
        file=f"bidflow-economics-{slug}",
        uid=f"bidflow-economics-{slug}",
        title=f"bidflow / {kind.name} economics",
        description=f"The {kind.name} kind ({kind.summary}): what serving it costs and saves.",
        variables=(Variable("model", "model", f"label_values({SERVING_INFO}{selector(of_kind)}, model)"),),
        rows=tuple(rows),
        tags=("bidflow", "economics"),
    )


def all_dashboards(kinds: list[Kind], settings: RuleSettings | None = None) -> list[Dashboard]:
    """Serving, canary and drift, and one economics dashboard per kind, in that order."""
    s = settings or RuleSettings()
    return [serving(s), canary_drift(s), *(economics(kind, s) for kind in kinds)]
