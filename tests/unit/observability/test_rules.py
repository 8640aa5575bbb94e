"""The rule builder: production defaults from the canary settings, parameters that really change the rules."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bidflow.config import CanaryConfig, Config
from bidflow.errors import ConfigError
from bidflow.observability.promql import metric_names
from bidflow.observability.rules import RuleSettings, rule_groups

ALERTS = {
    "BidflowFailOpenHigh", "BidflowLatencyP99AboveSLO", "BidflowServer5xx", "BidflowModelNotReady",
    "BidflowOnlineStoreErrors", "BidflowCanaryRolledBack", "BidflowChampionDrift", "BidflowMonitorIntakeRejecting",
    "BidflowRetrainingFailed", "BidflowBidderBudgetUnavailable",
}  # fmt: skip


def alerts(settings: RuleSettings | None = None) -> dict[str, dict[str, object]]:
    return {rule["alert"]: rule for group in rule_groups(settings) for rule in group["rules"] if "alert" in rule}


def test_the_alerts_the_issue_asks_for_are_there_with_severity_and_text() -> None:
    found = alerts()
    assert set(found) == ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name  # type: ignore[index]
        assert {"summary", "description"} == set(rule["annotations"]), name  # type: ignore[arg-type]


def test_slo_defaults_are_the_canary_analysis_settings() -> None:
    defaults = RuleSettings()
    assert defaults.p99_slo_seconds == CanaryConfig().max_p99_ms / 1000
    assert defaults.server_error_share == CanaryConfig().max_error_rate
    configured = RuleSettings.from_config(Config(canary=CanaryConfig(max_p99_ms=20, max_error_rate=0.002)))
    assert alerts(configured)["BidflowLatencyP99AboveSLO"]["expr"].endswith("> 0.02")  # type: ignore[union-attr]
    assert alerts(configured)["BidflowServer5xx"]["expr"].endswith("> 0.002")  # type: ignore[union-attr]


def test_a_variant_changes_windows_durations_and_interval_everywhere() -> None:
    variant = replace(RuleSettings(), rate_window="20s", fail_open_for="30s", fail_open_share=0.2, interval="1s")
    groups = rule_groups(variant)
    assert {group["interval"] for group in groups} == {"1s"}
    text = str(groups)
    assert "[5m]" not in text and "rate5m" not in text
    fail_open = alerts(variant)["BidflowFailOpenHigh"]
    assert fail_open["for"] == "30s" and fail_open["expr"] == "bidflow:serving_fail_open:ratio_rate20s > 0.2"
    assert "interval" not in rule_groups()[0]


def test_alerts_read_recorded_series_that_are_defined_first() -> None:
    defined: set[str] = set()
    for group in rule_groups():
        for rule in group["rules"]:
            used = {name for name in metric_names(rule["expr"]) if name.startswith("bidflow:")}
            assert used <= defined, (rule, used - defined)
            if "record" in rule:
                defined.add(rule["record"])


@pytest.mark.parametrize(
    ("field", "value"), [("fail_open_for", "5 minutes"), ("rate_window", "5"), ("fail_open_share", 0.0)]
)
def test_bad_settings_are_a_config_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        RuleSettings(**{field: value})  # type: ignore[arg-type]
    assert raised.value.where == f"RuleSettings.{field}"
