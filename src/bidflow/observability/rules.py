"""Prometheus recording and alerting rules over bidflow's metrics, built as data.

Every threshold and duration is a field of ``RuleSettings`` with its production default, so the
rules that ship (``bidflow ops render``) and a variant with short windows (the end-to-end test that
kills Redis under load and waits for the fail-open alert in a real Prometheus) come from the same
code. Two defaults are the canary analysis' own settings, so one number means one thing:
``canary.max_p99_ms`` (the p99 above which the analysis raises an alert) is the latency SLO, and
``canary.max_error_rate`` the 5xx share.

Series are aggregated by ``namespace, job, bidflow_kind, model``: ``namespace`` and ``job`` tell
deployments and workloads apart (absent labels are simply empty), ``bidflow_kind`` is the model kind
a scrape target serves (the chart's PodMonitors and ServiceMonitor add it; a Prometheus of one's own
adds it with a target label), ``model`` is the served model's name.

Rules, and the metric each reads:

=====================================  ===========================================================
alert                                  fires when
=====================================  ===========================================================
``BidflowFailOpenHigh``                fail-opens / scoring requests > ``fail_open_share``
                                       (``bidflow_serving_fail_open_total``)
``BidflowLatencyP99AboveSLO``          p99 of ``bidflow_serving_request_seconds`` > ``p99_slo_seconds``
``BidflowServer5xx``                   5xx answers / scoring requests > ``server_error_share``
                                       (``bidflow_serving_server_errors_total``)
``BidflowModelNotReady``               ``bidflow_serving_model_ready`` is 0 (loading, or failed to load)
``BidflowOnlineStoreErrors``           reads of the online store (Redis in production) time out, cannot
                                       connect or fail (``bidflow_serving_fail_open_total{reason}``)
``BidflowCanaryRolledBack``            the drift monitor rolled a canary back
                                       (``bidflow_monitor_events_total{kind="rollbacks"}``)
``BidflowChampionDrift``               the monitor raised a drift alert on the champion's traffic
                                       (``{kind="alerts"}``, which also requests retraining)
``BidflowMonitorIntakeRejecting``      rejected intake records (bad, unauthorized) / all > share
``BidflowRetrainingFailed``            a retraining run ended ``failed`` (``{kind="retrain_failed"}``)
=====================================  ===========================================================

Not here yet: the streaming feature processor's lag (it exports no metric yet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Final

from bidflow.config import CanaryConfig
from bidflow.errors import ConfigError

KIND_LABEL: Final = "bidflow_kind"  # the target label naming the model kind a scrape target serves
SERVING_BY: Final = f"namespace, job, {KIND_LABEL}, model"
MONITOR_BY: Final = f"namespace, job, {KIND_LABEL}"
_DURATION: Final = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")


def _canary_default(name: str) -> Any:
    """A ``canary.*`` setting's default (read from the model's field, never restated here)."""
    return CanaryConfig.model_fields[name].default


@dataclass(frozen=True)
class RuleSettings:
    """Thresholds and durations of the rules (production defaults; a test renders a variant).

    Attributes:
        rate_window: the range of every ``rate``/``increase`` over serving and intake counters.
        fail_open_share: fail-opens per scoring request above which the fail-open alert fires.
        fail_open_for: how long the share must stay above it.
        p99_slo_seconds: the p99 latency SLO (default ``canary.max_p99_ms``).
        p99_for: how long p99 must stay above it.
        server_error_share: 5xx answers per scoring request (default ``canary.max_error_rate``).
        server_error_for: how long the share must stay above it.
        not_ready_for: how long a model may answer 503 before it pages (a load takes seconds to minutes).
        store_errors_for: how long online-store reads must keep failing.
        event_window: how far back a rollback or a champion drift alert keeps its alert firing.
        retrain_window: how far back a failed retraining run keeps its alert firing.
        intake_reject_share: rejected intake records per record above which the intake alert fires.
        intake_for: how long the share must stay above it.
        interval: the groups' evaluation interval (None: the Prometheus server's global one).
    """

    rate_window: str = "5m"
    fail_open_share: float = 0.05
    fail_open_for: str = "5m"
    p99_slo_seconds: float = field(default_factory=lambda: _canary_default("max_p99_ms") / 1000.0)
    p99_for: str = "10m"
    server_error_share: float = field(default_factory=lambda: _canary_default("max_error_rate"))
    server_error_for: str = "5m"
    not_ready_for: str = "10m"
    store_errors_for: str = "5m"
    event_window: str = "15m"
    retrain_window: str = "1h"
    intake_reject_share: float = 0.05
    intake_for: str = "10m"
    interval: str | None = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, str) and not _DURATION.match(value):
                raise ConfigError(
                    "a rule duration is not a Prometheus duration",
                    where=f"RuleSettings.{item.name}",
                    expected="e.g. 30s, 5m, 1h30m",
                    got=value,
                )
            if isinstance(value, float) and not value > 0:
                raise ConfigError(
                    "a rule threshold must be positive", where=f"RuleSettings.{item.name}", got=str(value)
                )

    @classmethod
    def from_config(cls, config: Any) -> RuleSettings:
        """The production defaults with this configuration's canary SLOs (``canary.max_p99_ms``, ``max_error_rate``)."""
        return cls(p99_slo_seconds=config.canary.max_p99_ms / 1000.0, server_error_share=config.canary.max_error_rate)

    @property
    def window_name(self) -> str:
        """The rate window as recorded series spell it (``rate5m``)."""
        return f"rate{self.rate_window}"


def recorded(name: str, settings: RuleSettings, operation: str = "") -> str:
    """A recorded series' name, ``bidflow:<name>:<operation><window>`` (Prometheus' level:metric:operations)."""
    return f"bidflow:{name}:{operation}{settings.window_name}"


def rule_groups(settings: RuleSettings | None = None) -> list[dict[str, Any]]:
    """The rule groups, in Prometheus' rule-file layout (``groups[].rules[]``)."""
    s = settings or RuleSettings()
    w = s.rate_window
    requests = recorded("serving_requests", s)
    fail_open = recorded("serving_fail_open", s, "ratio_")
    p99 = recorded("serving_request_seconds", s, "p99_")
    errors = recorded("serving_server_errors", s, "ratio_")
    store = recorded("serving_online_store_errors", s)
    saved = recorded("serving_calls_saved", s, "ratio_")
    serving_records = [
        _record(requests, f"sum by ({SERVING_BY}) (rate(bidflow_serving_request_seconds_count[{w}]))"),
        _record(
            fail_open,
            f"sum by ({SERVING_BY}) (rate(bidflow_serving_fail_open_total[{w}]))\n/ on ({SERVING_BY}) {requests}",
        ),
        _record(
            p99,
            f"histogram_quantile(0.99, sum by ({SERVING_BY}, le) (rate(bidflow_serving_request_seconds_bucket[{w}])))",
        ),
        _record(
            errors,
            f"sum by ({MONITOR_BY}) (rate(bidflow_serving_server_errors_total[{w}]))\n"
            f"/ on ({MONITOR_BY}) sum by ({MONITOR_BY}) ({requests})",
        ),
        _record(
            store,
            f'sum by ({SERVING_BY}, reason) (rate(bidflow_serving_fail_open_total{{reason!="breaker_open"}}[{w}]))',
        ),
        _record(
            saved,
            f'sum by ({SERVING_BY}) (rate(bidflow_serving_decisions_total{{decision="skip"}}[{w}]))\n'
            f"/ sum by ({SERVING_BY}) (rate(bidflow_serving_decisions_total[{w}]))",
        ),
    ]
    serving_alerts = [
        _alert(
            "BidflowFailOpenHigh",
            f"{fail_open} > {s.fail_open_share:g}",
            s.fail_open_for,
            "warning",
            "serving",
            "{{ $labels.model }} fails open on {{ $value | humanizePercentage }} of its scoring requests",
            "Scoring requests of {{ $labels.model }} ({{ $labels.job }}) are answered without online features: "
            "a model with per-partner thresholds calls every partner, others score on the feature defaults. "
            "The online store "
            "(Redis) is down or slow, or the circuit breaker is open: see BidflowOnlineStoreErrors and the "
            "reason label of bidflow_serving_fail_open_total.",
        ),
        _alert(
            "BidflowLatencyP99AboveSLO",
            f"{p99} > {s.p99_slo_seconds:g}",
            s.p99_for,
            "warning",
            "serving",
            "p99 latency of {{ $labels.model }} is {{ $value | humanizeDuration }}, above the SLO",
            f"The 99th percentile of bidflow_serving_request_seconds over {w} is above "
            f"{s.p99_slo_seconds * 1000:g} ms (canary.max_p99_ms). Check CPU throttling, the online store's "
            "latency and the number of partners per auction.",
        ),
        _alert(
            "BidflowServer5xx",
            f"{errors} > {s.server_error_share:g}",
            s.server_error_for,
            "critical",
            "serving",
            "{{ $labels.job }} answers {{ $value | humanizePercentage }} of scoring requests with a 5xx",
            "5xx answers (bidflow_serving_server_errors_total: 503 the model is not ready, or a store a request "
            "cannot be answered without is down; 500 a bug, logged with its traceback) per scoring request. "
            "Scoring itself never fails for the online store: it fails open.",
        ),
        _alert(
            "BidflowModelNotReady",
            "bidflow_serving_model_ready == 0",
            s.not_ready_for,
            "critical",
            "serving",
            "{{ $labels.model }} on {{ $labels.instance }} is not ready",
            "The server answers 503: its model is still loading or failed to load (the reason is in the 503 "
            "body and the server's log); it retries the load. Check the registry or storage URI and the "
            "online store.",
        ),
        _alert(
            "BidflowOnlineStoreErrors",
            f"{store} > 0",
            s.store_errors_for,
            "warning",
            "serving",
            "online feature reads of {{ $labels.model }} fail ({{ $labels.reason }})",
            "Reads of the online feature store (Redis in production) time out, cannot connect or fail; "
            "every such request fails open. Check Redis (ElastiCache) and the network path from the predictors.",
        ),
        _alert(
            "BidflowBidderBudgetUnavailable",
            f'sum by ({SERVING_BY}) (rate(bidflow_bidder_zero_bids_total{{reason="budget_unavailable"}}[{w}])) > 0',
            s.store_errors_for,
            "warning",
            "serving",
            "{{ $labels.model }} bids 0: its budget store is unreachable",
            "The bidder's budget lives in Redis (bidder.budget_url), shared by its replicas; while Redis is down "
            "or slow every bid is 0, since spending without a budget could overspend it. Check Redis and the "
            "network path from the predictors.",
        ),
    ]
    events = "bidflow_monitor_events_total"
    loop_alerts = [
        _alert(
            "BidflowCanaryRolledBack",
            f'sum by ({MONITOR_BY}) (increase({events}{{kind="rollbacks"}}[{s.event_window}])) > 0',
            None,
            "warning",
            "canary",
            "the drift monitor rolled a canary back",
            "The canary's traffic drifted or broke an SLO and the monitor rolled it back; `bidflow canary "
            "status` shows the transition with its reasons and the features that moved the scores.",
        ),
        _alert(
            "BidflowChampionDrift",
            f'sum by ({MONITOR_BY}) (increase({events}{{kind="alerts"}}[{s.event_window}])) > 0',
            None,
            "warning",
            "drift",
            "drift in the champion's traffic",
            "A detection window of the champion's traffic drifted (bidflow_drift_detected names the features); "
            "the monitor requested retraining (monitor.retrain decides whether a run starts).",
        ),
        _alert(
            "BidflowMonitorIntakeRejecting",
            f'sum by ({MONITOR_BY}) (rate({events}{{kind=~"bad|unauthorized"}}[{w}]))\n'
            f'/ sum by ({MONITOR_BY}) (rate({events}{{kind=~"payloads|bad|unauthorized"}}[{w}]))\n'
            f"> {s.intake_reject_share:g}",
            s.intake_for,
            "warning",
            "monitor",
            "the drift monitor rejects {{ $value | humanizePercentage }} of what it is sent",
            "Records the intake cannot read, from versions the deployment does not serve, or from senders "
            "without the intake token are dropped: drift in that traffic goes unseen. Check the payload "
            "logger's URL and token, and GET /status of the monitor (errors).",
        ),
        _alert(
            "BidflowRetrainingFailed",
            f'sum by ({MONITOR_BY}) (increase({events}{{kind="retrain_failed"}}[{s.retrain_window}])) > 0',
            None,
            "warning",
            "retraining",
            "a retraining run failed",
            "A retraining run the monitor started ended `failed` (retrain_runs.jsonl and the run's log under "
            "retrain/<run id>/ say why); no new run starts before the cool-down ends.",
        ),
    ]
    groups = [
        {"name": "bidflow-serving-records", "rules": serving_records},
        {"name": "bidflow-serving-alerts", "rules": serving_alerts},
        {"name": "bidflow-canary-drift-alerts", "rules": loop_alerts},
    ]
    if s.interval is not None:
        for group in groups:
            group["interval"] = s.interval
    return groups


def rules_file(settings: RuleSettings | None = None) -> dict[str, Any]:
    """A Prometheus rule file (``rule_files:``, ``promtool check rules``): ``{"groups": [...]}``."""
    return {"groups": rule_groups(settings)}


def _record(name: str, expr: str) -> dict[str, Any]:
    return {"record": name, "expr": expr}


def _alert(
    name: str, expr: str, wait: str | None, severity: str, component: str, summary: str, description: str
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if wait is not None:
        rule["for"] = wait
    rule["labels"] = {"severity": severity, "component": component}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule
