"""The chart's monitoring objects on a real kube-apiserver 1.20.2: install, upgrade (monitors off), uninstall.

The API server needs the monitoring.coreos.com kinds to exist: stand-in CRDs are applied first, with the Operator's
group, versions, kinds and plurals and a schema that keeps any spec (no file of the Prometheus Operator is kept in
this repository; the objects' fields are validated offline against the Operator's schemas, test_chart_monitoring.py).
What this shows: the objects are accepted, owned and removed by Helm like the rest of the release; not what the
Prometheus Operator or Grafana make of them (neither runs here).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from bidflow.observability.render import CHART_DASHBOARDS, CHART_RULES_FILE
from tests.k8s.cluster import REPO, ApiServer, Tools
from tests.k8s.test_apiserver import crd_installed
from tests.k8s.test_chart_monitoring import ON

__all__ = ["crd_installed"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CHART = REPO / "helm" / "bidflow"
GROUP, VERSION = "monitoring.coreos.com", "v1"
KINDS = {"PrometheusRule": "prometheusrules", "ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors"}


def stand_in_crd(kind: str, plural: str) -> dict[str, Any]:
    """A CRD serving ``kind`` in monitoring.coreos.com/v1 whose spec may hold anything (structural, pruning nothing)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
            }],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def monitoring_crds(kube: Tools, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("monitoring-crds") / "crds.yaml"
    path.write_text(yaml.safe_dump_all([stand_in_crd(k, p) for k, p in KINDS.items()]), encoding="utf-8")
    kube.run("kubectl", "apply", "--server-side", "--field-manager=bidflow-tests", "-f", str(path))
    deadline = time.monotonic() + 15
    while kube.run("kubectl", "get", ",".join(KINDS.values()), "--all-namespaces", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the stand-in monitoring CRDs are not served"
        time.sleep(0.25)


def objects(apiserver: ApiServer, namespace: str, kind: str) -> list[dict[str, Any]]:
    found = client.CustomObjectsApi(apiserver.client).list_namespaced_custom_object(
        GROUP, VERSION, namespace, KINDS[kind]
    )
    return list(found["items"])


def test_helm_installs_upgrades_and_removes_the_monitoring_objects(
    crd_installed: float, monitoring_crds: None, kube: Tools, apiserver: ApiServer
) -> None:
    namespace = f"bidflow-monitoring-{time.monotonic_ns() % 100000}"
    helm = ["--namespace", namespace]
    eks = str(CHART / "values-eks.yaml")
    kube.run("helm", "install", "bidflow", str(CHART), *helm, "--create-namespace", "-f", eks, *ON)
    (rule,) = objects(apiserver, namespace, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((REPO / CHART_RULES_FILE).read_text())
    assert sorted(m["metadata"]["name"] for m in objects(apiserver, namespace, "PodMonitor")) == [
        "bidflow-bid-filter", "bidflow-ctr",
    ]  # fmt: skip
    assert [m["metadata"]["name"] for m in objects(apiserver, namespace, "ServiceMonitor")] == ["bidflow-monitor"]
    core = client.CoreV1Api(apiserver.client)
    maps = core.list_namespaced_config_map(namespace, label_selector="grafana_dashboard=1").items
    assert sorted(next(iter(m.data)) for m in maps) == sorted(p.name for p in (REPO / CHART_DASHBOARDS).glob("*.json"))

    # Monitors off by an upgrade: the PodMonitors and the ServiceMonitor go, the rules and dashboards stay.
    kube.run("helm", "upgrade", "bidflow", str(CHART), *helm, "--reuse-values",
             "--set", "monitoring.serviceMonitors.enabled=false")  # fmt: skip
    assert objects(apiserver, namespace, "PodMonitor") == objects(apiserver, namespace, "ServiceMonitor") == []
    assert len(objects(apiserver, namespace, "PrometheusRule")) == 1

    kube.run("helm", "uninstall", "bidflow", *helm)
    assert objects(apiserver, namespace, "PrometheusRule") == []
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("bidflow-dashboard-serving", namespace)
    assert gone.value.status == 404
