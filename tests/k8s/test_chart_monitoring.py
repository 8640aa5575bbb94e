"""The chart's monitoring objects: PrometheusRule, PodMonitors and ServiceMonitor, and the Grafana dashboard ConfigMaps.

Rendered with the monitoring values on (they are off by default: the monitoring.coreos.com objects need the
Prometheus Operator's CRDs), then: the monitoring.coreos.com objects validated against the schemas of the Operator's
CRDs (@kubernetes-models/prometheus-operator, pinned, installed by scripts/k8s/fetch-monitoring-schemas.sh; they check
types, required fields and patterns, not unknown fields), every other object strictly at the EKS version; the rules
equal the generated file; each monitor selects exactly the pods or Service it is meant for, on the port that serves
/metrics; the dashboards carry the sidecar's label and the generated JSON. On a real kube-apiserver the chart
installs and upgrades with them (tests/k8s/test_apiserver_monitoring.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bidflow.observability.render import CHART_DASHBOARDS, CHART_RULES_FILE
from tests.k8s.cluster import REPO, Tools, run_script
from tests.k8s.test_chart import KIND, VALUES_FILES, one, schema_problems, template, values_args

pytestmark = pytest.mark.integration

MONITORING = ("PrometheusRule", "PodMonitor", "ServiceMonitor")
ON = [
    "--set", "monitoring.prometheusRule.enabled=true",
    "--set", "monitoring.serviceMonitors.enabled=true",
    "--set", "monitoring.dashboards.enabled=true",
]  # fmt: skip


@pytest.fixture(scope="session")
def monitoring_validator() -> Path:
    """The directory of validate.mjs with its pinned npm packages (installed once per machine, outside the tree)."""
    directory, log = run_script("fetch-monitoring-schemas.sh")
    if not (directory / "validate.mjs").is_file():
        pytest.fail(f"scripts/k8s/fetch-monitoring-schemas.sh left no validator in {directory}:\n{log}", pytrace=False)
    return directory


def monitoring_problems(validator: Path, docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    done = subprocess.run(
        ["node", "validate.mjs"], cwd=validator, input=json.dumps(docs), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    problems: list[dict[str, str]] = json.loads(done.stdout)
    return problems


def dashboard(doc: dict[str, Any]) -> bool:
    """Every ConfigMap of the chart but the feature store's (always there) is a dashboard."""
    return bool(doc["kind"] == "ConfigMap" and doc["metadata"]["name"] != "bidflow-feature-store")


def test_off_by_default(tools: Tools) -> None:
    docs, _ = template(tools)
    assert not [doc for doc in docs if doc["kind"] in MONITORING or dashboard(doc)]


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_monitoring_objects_are_valid(tools: Tools, monitoring_validator: Path, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values), *ON)
    monitoring = [doc for doc in docs if doc["kind"] in MONITORING]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in monitoring) == [
        ("PodMonitor", "bidflow-bid-filter"), ("PodMonitor", "bidflow-ctr"),
        ("PrometheusRule", "bidflow"), ("ServiceMonitor", "bidflow-monitor"),
    ]  # fmt: skip
    assert monitoring_problems(monitoring_validator, monitoring) == []
    others = [doc for doc in docs if doc["kind"] not in MONITORING]
    assert [problem for doc in others for problem in schema_problems(doc)] == []


def test_the_validator_catches_a_bad_monitor(tools: Tools, monitoring_validator: Path) -> None:
    """The schema check really checks: a malformed duration and a missing selector are reported."""
    docs, _ = template(tools, *ON)
    rule = one(docs, "PrometheusRule", "bidflow")
    rule["spec"]["groups"][1]["rules"][0]["for"] = "five minutes"
    monitor = one(docs, "ServiceMonitor", "bidflow-monitor")
    del monitor["spec"]["selector"]
    problems = monitoring_problems(monitoring_validator, [rule, monitor])
    assert [p["name"] for p in problems] == ["PrometheusRule/bidflow", "ServiceMonitor/bidflow-monitor"]
    assert "for must match pattern" in problems[0]["problem"] and "selector" in problems[1]["problem"]


def test_the_prometheus_rule_is_the_generated_rules_file(tools: Tools) -> None:
    docs, _ = template(tools, *ON, "--set", "monitoring.labels.release=kube-prometheus-stack")
    rule = one(docs, "PrometheusRule", "bidflow")
    assert rule["spec"] == yaml.safe_load((REPO / CHART_RULES_FILE).read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_each_monitor_selects_its_workload_on_the_metrics_port(tools: Tools) -> None:
    docs, _ = template(tools, *ON)
    for name, component in (("bid-filter", "bid-filter"), ("ctr", "ctr")):
        predictor = one(docs, KIND, name)["spec"]["predictor"]
        monitor = one(docs, "PodMonitor", f"bidflow-{component}")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= predictor["labels"].items()
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        container = predictor["containers"][0]
        assert endpoint["targetPort"] == container["ports"][0]["containerPort"] and endpoint["path"] == "/metrics"
        kind = next(arg.removeprefix("--kind=") for arg in container["args"] if arg.startswith("--kind="))
        assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "bidflow_kind", "replacement": kind}]
    # The other InferenceService's pods are not matched (each component has its own label value).
    bid_filter = one(docs, "PodMonitor", "bidflow-bid-filter")["spec"]["selector"]["matchLabels"]
    assert not bid_filter.items() <= one(docs, KIND, "ctr")["spec"]["predictor"]["labels"].items()
    service = one(docs, "Service", "bidflow-monitor")
    monitor = one(docs, "ServiceMonitor", "bidflow-monitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}
    # The monitor's NetworkPolicy already lets Prometheus reach that port.
    policy = one(docs, "NetworkPolicy", "bidflow-monitor")
    assert any("podSelector" in peer for rule in policy["spec"]["ingress"] for peer in rule["from"])


def test_dashboards_are_config_maps_for_the_grafana_sidecar(tools: Tools) -> None:
    files = sorted((REPO / CHART_DASHBOARDS).glob("*.json"))
    docs, _ = template(
        tools, *ON, "--set", "monitoring.dashboards.namespace=monitoring",
        "--set", "monitoring.dashboards.annotations.grafana_folder=bidflow",
    )  # fmt: skip
    maps = [doc for doc in docs if dashboard(doc)]
    assert len(maps) == len(files) >= 4
    for config_map, path in zip(sorted(maps, key=lambda d: next(iter(d["data"]))), files, strict=True):
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "bidflow"}
        assert config_map["data"] == {path.name: path.read_text().rstrip("\n")}
        assert json.loads(config_map["data"][path.name])["uid"] == path.stem
        assert len(json.dumps(config_map)) < 1_000_000  # a ConfigMap holds at most 1 MiB


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "monitoring.serviceMonitors.interval=5 minutes"], "monitoring.serviceMonitors.interval"),
        (["--set", "monitoring.dashboards.namespace=Not_A_Namespace"], "monitoring.dashboards.namespace"),
        (["--set", "monitoring.prometheusRules.enabled=true"], "prometheusRules"),
    ],
)
def test_bad_monitoring_values_are_refused(tools: Tools, args: list[str], message: str) -> None:
    docs, stderr = template(tools, *args, check=False)
    assert not docs and message in stderr
