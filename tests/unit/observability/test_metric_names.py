"""Every rule and every dashboard query reads only what the code really exports.

The shipped files (the rules file and the chart's dashboards, which test_generated_files holds equal
to the code's output) are read back, every PromQL expression in them is reduced to the metric names it
selects, and each name must be a series one of the servers exposes (``exported``) or a series a
recording rule of the same file defines. Label values the rules and panels match on (the monitor's
event kinds, the fail-open reasons, decisions) are checked against the code that produces them. A
metric or label value renamed in the code without its rule or panel fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bidflow.observability.promql import metric_names
from bidflow.observability.render import CHART_DASHBOARDS, RULES_FILE
from tests.conftest import REPO
from tests.unit.observability.exported import bidder_names, monitor_names_and_event_kinds, router_names, serving_names

_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    monitor, _ = monitor_names_and_event_kinds(tmp_path_factory.mktemp("monitor"))
    return serving_names() | bidder_names() | router_names() | monitor


@pytest.fixture(scope="module")
def event_kinds(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return monitor_names_and_event_kinds(tmp_path_factory.mktemp("monitor-kinds"))[1]


def rules() -> list[dict[str, str]]:
    document = yaml.safe_load((REPO / RULES_FILE).read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_files() -> list[Path]:
    found = sorted((REPO / CHART_DASHBOARDS).glob("*.json"))
    assert found, f"no dashboards under {CHART_DASHBOARDS}: run `make observability`"
    return found


def expressions() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every rule, panel query and variable query in the shipped files."""
    for rule in rules():
        yield f"{RULES_FILE}: {rule.get('alert') or rule['record']}", rule["expr"]
    for path in dashboard_files():
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["expr"]
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                found = _LABEL_VALUES.match(variable["query"])
                assert found, f"{path.name}: variable {variable['name']}: not a label_values() query"
                yield f"{path.name}: variable {variable['name']}", found["selector"]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def test_every_rule_and_panel_reads_only_exported_or_recorded_series(exported: set[str]) -> None:
    known = exported | recorded_names()
    unknown = {f"{where}: {name}" for where, expr in expressions() for name in metric_names(expr) if name not in known}
    assert unknown == set(), "names no server exports (renamed in the code?): " + "; ".join(sorted(unknown))


def test_the_check_catches_a_renamed_metric(exported: set[str]) -> None:
    """The guard really guards: a panel reading a name nobody exports is reported."""
    renamed = 'sum(rate(bidflow_serving_fail_opens_total{job=~"$job"}[$__rate_interval]))'
    assert metric_names(renamed) - exported == {"bidflow_serving_fail_opens_total"}


def test_every_exporter_is_read_by_something(exported: set[str]) -> None:
    """Each server's metrics are used by a rule or a dashboard (a scrape that nothing reads is a blind spot)."""
    used = {name for _, expr in expressions() for name in metric_names(expr)}
    for prefix in (
        "bidflow_serving_",
        "bidflow_bidder_",
        "bidflow_router_",
        "bidflow_drift_",
        "bidflow_monitor_",
        "bidflow_online_",
    ):
        assert any(name.startswith(prefix) for name in used), prefix
    unused = {
        name for name in exported
        if not name.endswith(("_created", "_sum")) and name not in used
        and name not in ("bidflow_serving_filtered_share", "bidflow_serving_exploration_share")  # gauges for a glance
    }  # fmt: skip
    assert unused == set(), f"exported but read by no rule or panel: {sorted(unused)}"


def test_monitor_event_kinds_matched_by_rules_and_panels_are_real(event_kinds: set[str]) -> None:
    matchers = re.compile(r"bidflow_monitor_events_total\{([^}]*)\}")
    kind = re.compile(r'(?<![\w])kind=~?"([^"]*)"')
    used = set()
    for _, expr in expressions():
        for labels in matchers.findall(expr):
            for pattern in kind.findall(labels):
                used.update(pattern.split("|"))
    assert {"rollbacks", "alerts", "retrain_failed", "bad", "unauthorized", "payloads"} <= used
    assert used - event_kinds == set(), f"kinds the monitor never counts: {sorted(used - event_kinds)}"


def test_fail_open_reasons_and_decisions_matched_are_what_the_server_counts() -> None:
    from bidflow.serving.online import GuardedReader, _reason

    class DeadStore:
        backend = "redis"

        def features(self, *args: object, **kwargs: object) -> None:
            raise ConnectionError("refused")

    reader = GuardedReader(DeadStore(), cooldown_s=60)  # type: ignore[arg-type]
    first = reader.bid_filter(["atlas"], "p", "US", "banner", 2, 0.0).fail_reason
    second = reader.bid_filter(["atlas"], "p", "US", "banner", 2, 0.0).fail_reason
    reasons = {first, second, _reason(TimeoutError()), _reason(ValueError())}
    assert reasons == {"unreachable", "breaker_open", "timeout", "error"}
    from bidflow.serving.bidder_metrics import ZERO_REASONS

    text = "\n".join(expr for _, expr in expressions() if "bidflow_bidder_" not in expr)
    for value in re.findall(r'reason!?=~?"([^"]*)"', text):
        assert set(value.split("|")) <= reasons, value
    bidder = "\n".join(expr for _, expr in expressions() if "bidflow_bidder_" in expr)
    for value in re.findall(r'reason!?=~?"([^"]*)"', bidder):
        assert set(value.split("|")) <= set(ZERO_REASONS), value
    assert set(re.findall(r'decision="([^"]*)"', text)) <= {"call", "skip"}
    assert set(re.findall(r'(?:explored|fail_open)="([^"]*)"', text)) <= {"true", "false"}
