"""Prometheus' own checks of the generated rules: ``promtool check rules`` and ``promtool test rules``.

The unit tests under ops/prometheus/tests feed synthetic series to the production rules and assert that
each alert fires above its threshold (with its labels and rendered annotations) and stays silent below
it. Debian's promtool (scripts/install-prometheus.sh; `make test` runs it) must be there: never a skip.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from bidflow.observability.render import CHART_RULES_FILE, RULES_FILE, rules_yaml
from bidflow.observability.rules import RuleSettings
from tests.conftest import REPO
from tests.prometheus import binary

# promtool is a binary from Debian's package (installed by the project's script): like helm, not a unit test.
pytestmark = pytest.mark.integration

UNIT_TESTS = REPO / "ops" / "prometheus" / "tests"


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary("promtool")), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", [RULES_FILE, CHART_RULES_FILE])
def test_promtool_checks_the_shipped_rules(path: str) -> None:
    rules = yaml.safe_load((REPO / path).read_text())
    count = sum(len(group["rules"]) for group in rules["groups"])
    done = promtool("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_promtool_checks_a_short_window_variant(tmp_path: Path) -> None:
    """The variant the end-to-end test loads is valid Prometheus too (its durations are parameters)."""
    variant = replace(RuleSettings(), rate_window="10s", fail_open_for="1m", interval="1s")
    (tmp_path / "rules.yml").write_text(rules_yaml(variant), encoding="utf-8")
    done = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    files = sorted(UNIT_TESTS.glob("*.yml"))
    assert files
    done = promtool("test", "rules", *(str(f.relative_to(REPO)) for f in files))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files)


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert of the rules file has a unit test expecting it, and one expecting it absent."""
    rules = yaml.safe_load((REPO / RULES_FILE).read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    fired, silent = set(), set()
    for path in UNIT_TESTS.glob("*.yml"):
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == ["../bidflow-rules.yml"], path
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert alerts - fired == set(), f"alerts no unit test sees firing: {sorted(alerts - fired)}"
    assert alerts - silent == set(), f"alerts no unit test sees silent: {sorted(alerts - silent)}"


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    """The check really checks: a rule with a PromQL syntax error fails it."""
    broken = {"groups": [{"name": "x", "rules": [{"alert": "Broken", "expr": "sum(rate(x[5m])"}]}]}
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert promtool("check", "rules", "broken.yml", cwd=tmp_path).returncode != 0
