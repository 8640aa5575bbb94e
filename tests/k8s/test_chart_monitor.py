"""The chart's CTR InferenceService, the drift monitor and the bid filter's payload-logger wiring, rendered offline.

Like test_chart.py: helm/kubectl from scripts/k8s/fetch-helm.sh, no apiserver. The same objects are installed on a
real kube-apiserver in test_apiserver.py; KServe's agent actually delivering payloads is validated on paper only.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import yaml

from bidflow.deploy.crd import KIND
from bidflow.deploy.validation import validate_inference_service
from tests.k8s.cluster import Tools
from tests.k8s.test_chart import CHART, VALUES_FILES, one, schema_problems, template, values_args

pytestmark = pytest.mark.integration

MONITOR_ARGS = ["serve", "--host", "0.0.0.0", "--port", "8090"]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def template_release(tools: Tools, release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    done = tools.run("helm", "template", release, str(CHART), "--namespace", namespace, *args)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def env_of(container_spec: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container_spec.get("env", []) if "value" in e}


# --- the CTR InferenceService -----------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_ctr_is_the_model_server_run_with_kind_ctr(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values))
    ctr, bid_filter = one(docs, KIND, "ctr"), one(docs, KIND, "bid-filter")
    assert validate_inference_service(ctr) == []
    (server,) = ctr["spec"]["predictor"]["containers"]
    assert server["args"][:4] == ["--kind=ctr", "--model_name=ctr", "--model=/mnt/models", "--http-port=8080"]
    assert bid_filter["spec"]["predictor"]["containers"][0]["args"][:3] == [
        "--kind=bid_filter",
        "--model_name=bid-filter",
        "--model=/mnt/models",  # where KServe's storage initializer puts STORAGE_URI (the image's CMD is replaced)
    ]
    # Same shape as the bid filter: image, ports, security, volumes; its own identity, location and no logger.
    assert server["image"] == bid_filter["spec"]["predictor"]["containers"][0]["image"]
    assert ctr["spec"]["predictor"]["serviceAccountName"] == "bidflow-ctr"
    assert server["env"][0]["name"] == "STORAGE_URI"
    assert "/ctr" in server["env"][0]["value"]
    assert "logger" not in ctr["spec"]["predictor"]
    assert ctr["metadata"]["labels"]["app.kubernetes.io/component"] == "ctr"


def test_the_ctr_server_can_be_turned_off_and_takes_extra_args(tools: Tools) -> None:
    docs, _ = template(tools, "--set", "ctr.enabled=false")
    assert [doc["metadata"]["name"] for doc in docs if doc["kind"] == KIND] == ["bid-filter"]
    docs, _ = template(tools, "--set", "ctr.runtime.args={--feature-timeout-ms=5}", "--set", "ctr.runtime.port=9000")
    (server,) = one(docs, KIND, "ctr")["spec"]["predictor"]["containers"]
    assert server["args"][3:] == ["--http-port=9000", "--feature-timeout-ms=5"]
    assert server["ports"] == [{"containerPort": 9000, "protocol": "TCP"}]


# --- the drift monitor ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_the_monitor_deployment(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values))
    deployment = one(docs, "Deployment", "bidflow-monitor")
    assert schema_problems(deployment) == []
    spec = deployment["spec"]
    # One monitor at a time: windows live in memory and two could both act on one canary.
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    # It runs as the rollback controller, the only account whose token is mounted (it patches InferenceServices).
    assert pod["serviceAccountName"] == "bidflow-rollback-controller"
    assert pod["automountServiceAccountToken"] is True
    monitor = container(deployment, "monitor")
    assert monitor["args"] == MONITOR_ARGS
    assert monitor["ports"] == [{"name": "http", "containerPort": 8090, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert monitor[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert env_of(monitor) == {
        "HOME": "/tmp",
        "BIDFLOW__CANARY__BACKEND": "kserve",
        "BIDFLOW__CANARY__NAMESPACE": "bidflow",
        "BIDFLOW__CANARY__INFERENCE_SERVICE": "bid-filter",
        "BIDFLOW__MONITOR__DETECTOR": "/mnt/detector",
        # The intake token, mounted from its Secret (tests/k8s/test_chart_token.py).
        "BIDFLOW__MONITOR__TOKEN_FILE": "/var/run/secrets/bidflow/monitor-token/token",
    }
    (detector,) = [m for m in monitor["volumeMounts"] if m["name"] == "detector"]
    assert detector["mountPath"] == "/mnt/detector"
    assert detector["readOnly"] is True
    assert set(monitor["resources"]) == {"requests", "limits"}
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/component"] == "monitor"


def test_the_monitor_follows_the_release_namespace_and_the_bid_filter_name(tools: Tools) -> None:
    # A release whose name lacks "bidflow" prefixes its objects with "<release>-bidflow".
    docs = template_release(tools, "shop", "ads", "--set", "bidFilter.name=filter-eu")
    monitor = container(one(docs, "Deployment", "shop-bidflow-monitor"), "monitor")
    assert env_of(monitor)["BIDFLOW__CANARY__NAMESPACE"] == "ads"
    assert env_of(monitor)["BIDFLOW__CANARY__INFERENCE_SERVICE"] == "filter-eu"
    logger = one(docs, KIND, "filter-eu")["spec"]["predictor"]["logger"]
    assert logger["mode"] == "all"
    assert logger["url"].startswith("http://shop-bidflow-monitor.ads.svc.cluster.local:8090/?token=")
    assert one(docs, "Secret", "shop-bidflow-monitor-token")


def test_the_monitor_service_is_the_payload_loggers_target(tools: Tools) -> None:
    docs, _ = template(tools)
    service = one(docs, "Service", "bidflow-monitor")
    assert schema_problems(service) == []
    (port,) = service["spec"]["ports"]
    assert port == {"name": "http", "port": 8090, "targetPort": "http", "protocol": "TCP"}
    pod_labels = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    predictor = one(docs, KIND, "bid-filter")["spec"]["predictor"]
    # <service>.<namespace>.svc.cluster.local:<service port>/ : the Service above, in the release namespace.
    # (with the intake token as ?token=, since KServe's agent cannot add a header).
    assert predictor["logger"]["mode"] == "all"
    assert predictor["logger"]["url"].startswith("http://bidflow-monitor.bidflow.svc.cluster.local:8090/?token=")
    assert validate_inference_service(one(docs, KIND, "bid-filter")) == []

    docs, _ = template(tools, "--set", "monitor.service.port=9000")
    assert ":9000/?token=" in one(docs, KIND, "bid-filter")["spec"]["predictor"]["logger"]["url"]
    assert one(docs, "Service", "bidflow-monitor")["spec"]["ports"][0]["port"] == 9000


def test_without_the_monitor_there_is_no_logger_and_no_monitor_objects(tools: Tools) -> None:
    docs, _ = template(tools, "--set", "monitor.enabled=false")
    assert "logger" not in one(docs, KIND, "bid-filter")["spec"]["predictor"]
    assert not [doc for doc in docs if doc["metadata"]["name"] == "bidflow-monitor"]
    # The bid filter and CTR can still be turned off together with the monitor.
    docs, _ = template(tools, "--set", "monitor.enabled=false", "--set", "bidFilter.enabled=false")
    assert [doc["metadata"]["name"] for doc in docs if doc["kind"] == KIND] == ["ctr"]


def test_the_logger_field_names_are_kserves() -> None:
    """Checked against the installed kserve SDK (LoggerSpec), and a misspelt field fails our offline schema."""
    models = importlib.import_module("kserve.models")
    assert models.V1beta1PredictorSpec.attribute_map["logger"] == "logger"
    assert models.V1beta1PredictorSpec.openapi_types["logger"] == "V1beta1LoggerSpec"
    assert {"mode", "url"} <= set(models.V1beta1LoggerSpec.attribute_map.values())
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "bid-filter"},
        "spec": {"predictor": {"logger": {"mode": "all", "uri": "http://x/"}, "containers": [{"name": "c"}]}},
    }
    problems = validate_inference_service(isvc)
    assert problems and any("uri" in problem for problem in problems), problems


def test_the_detector_comes_from_a_read_only_pvc_without_a_download(tools: Tools) -> None:
    docs, _ = template(tools)  # values.yaml: pvc://bidflow-models/detector
    pod = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    (volume,) = [v for v in pod["volumes"] if v["name"] == "detector"]
    assert volume["persistentVolumeClaim"] == {"claimName": "bidflow-models", "readOnly": True}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "detector"]
    assert mount == {"name": "detector", "mountPath": "/mnt/detector", "readOnly": True, "subPath": "detector"}

    docs, _ = template(tools, "--set", "monitor.detectorUri=pvc://detectors")  # the whole claim
    pod = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "detector"]
    assert "subPath" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == "detector"]
    assert volume["persistentVolumeClaim"]["claimName"] == "detectors"


@pytest.mark.parametrize(
    "uri", ["s3://bidflow-models/bid-filter/detector/7", "gs://models/detector", "https://example.com/detector.tgz"]
)
def test_a_remote_detector_is_downloaded_by_kserves_storage_initializer(tools: Tools, uri: str) -> None:
    docs, _ = template(tools, "--set", f"monitor.detectorUri={uri}")
    deployment = one(docs, "Deployment", "bidflow-monitor")
    assert schema_problems(deployment) == []
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["name"] == "storage-initializer"
    assert init["image"] == "kserve/storage-initializer:v0.21.0"
    assert init["args"] == [uri, "/mnt/detector"]
    assert {"name": "detector", "mountPath": "/mnt/detector"} in init["volumeMounts"]  # writable for the download
    (volume,) = [v for v in pod["volumes"] if v["name"] == "detector"]
    assert volume == {"name": "detector", "emptyDir": {"sizeLimit": "1Gi"}}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "detector"]
    assert mount == {"name": "detector", "mountPath": "/mnt/detector", "readOnly": True}


def test_eks_downloads_the_detector_from_s3_with_the_monitors_irsa_role(tools: Tools) -> None:
    docs, _ = template(tools, *values_args("values-eks.yaml"))
    pod = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"][0].startswith("s3://")
    account = one(docs, "ServiceAccount", pod["serviceAccountName"])
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.endswith(":role/bidflow-rollback-controller")
    assert account["automountServiceAccountToken"] is True
    assert container(one(docs, "Deployment", "bidflow-monitor"), "monitor")["image"].startswith(
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com/bidflow-monitor:"
    )


def test_only_the_monitor_pods_mount_a_service_account_token(tools: Tools) -> None:
    docs, _ = template(tools)
    accounts = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "ServiceAccount"}
    assert {name for name, sa in accounts.items() if sa["automountServiceAccountToken"]} == {
        "bidflow-rollback-controller"
    }
    assert (
        one(docs, "Deployment", "bidflow-feature-server")["spec"]["template"]["spec"]["automountServiceAccountToken"]
        is False
    )
