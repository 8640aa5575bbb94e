"""The KServe backend without a cluster: the pure InferenceService builder and the mapping of apiserver refusals."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.kserve_api import api_error
from bidflow.deploy.kserve_spec import (
    CONTAINER_NAME,
    MODEL_ANNOTATION,
    MODEL_NAME_LABEL,
    MODEL_VERSION_LABEL,
    inference_service,
    label_value,
)
from bidflow.deploy.validation import validate_inference_service
from bidflow.errors import ConflictError, DeploymentError
from bidflow.serving.__main__ import parser

V7 = ModelVersion("bid_filter", "7", "s3://bidflow-models/bid_filter/7")
IMAGE = "bidflow/serving:0.1.0"


def build(model: ModelVersion = V7, **options: Any) -> dict[str, Any]:
    return inference_service("bid-filter", "bidflow", model, image=IMAGE, **options)


def predictor(doc: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = doc["spec"]["predictor"]
    return found


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (only,) = predictor(doc)["containers"]
    assert only["name"] == CONTAINER_NAME
    found: dict[str, Any] = only
    return found


def env(doc: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(doc)["env"]}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"canary_percent": 0},
        {"canary_percent": 20},
        {"canary_percent": 100},
        {"monitor_url": "http://bidflow-monitor.bidflow.svc:8090/"},
        {"service_account": "bidflow-bid-filter", "canary_percent": 20, "monitor_url": "http://m:8090/"},
        {"min_replicas": 0, "max_replicas": 1, "resources": {"requests": {"cpu": "1", "memory": "512Mi"}}},
        {"env": {"BIDFLOW__REGISTRY__TRACKING_URI": "http://mlflow:5000"}, "endpoint": "bid-filter-v2"},
    ],
)
def test_every_variant_validates_against_the_schema_generated_from_the_kserve_sdk(options: dict[str, Any]) -> None:
    doc = build(**options)
    assert validate_inference_service(doc) == []
    assert validate_inference_service(build(ModelVersion("bid_filter", "3", "models:/bid_filter/3"), **options)) == []


def test_the_canary_percent_is_set_only_when_given() -> None:
    assert "canaryTrafficPercent" not in predictor(build())
    assert predictor(build(canary_percent=20))["canaryTrafficPercent"] == 20
    # 0 is a value (KServe's rollback), not "absent".
    assert predictor(build(canary_percent=0))["canaryTrafficPercent"] == 0


@pytest.mark.parametrize("percent", [-1, 101, 150])
def test_a_percent_outside_0_to_100_is_refused_before_any_cluster_sees_it(percent: int) -> None:
    with pytest.raises(DeploymentError, match="between 0 and 100"):
        build(canary_percent=percent)


def test_replicas_out_of_order_are_refused() -> None:
    with pytest.raises(DeploymentError, match="replicas"):
        build(min_replicas=3, max_replicas=1)


def test_the_payload_logger_is_wired_only_with_a_monitor_url() -> None:
    assert "logger" not in predictor(build())
    url = "http://bidflow-monitor.bidflow.svc.cluster.local:8090/"
    assert predictor(build(monitor_url=url))["logger"] == {"mode": "all", "url": url}


def test_a_storage_uri_goes_through_kserves_storage_initializer_to_mnt_models() -> None:
    doc = build()
    assert env(doc)["STORAGE_URI"] == V7.uri
    args = parser().parse_args(container(doc)["args"])
    assert (args.model, args.name, args.host, args.http_port) == ("/mnt/models", "bid-filter", "0.0.0.0", 8080)
    assert container(doc)["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]


def test_the_server_reports_the_registry_version_and_is_probed_like_the_charts_predictors() -> None:
    doc = build(kind="ctr", endpoint="ctr_ipinyou")
    args = parser().parse_args(container(doc)["args"])
    assert (args.kind, args.model_version) == ("ctr", "7"), "/mnt/models says nothing of the version"
    ready, live = container(doc)["readinessProbe"], container(doc)["livenessProbe"]
    assert ready["httpGet"] == {"path": "/v2/models/ctr_ipinyou/ready", "port": 8080}
    assert live["httpGet"] == {"path": "/v2/health/live", "port": 8080} and live["initialDelaySeconds"] >= 30
    assert validate_inference_service(doc) == []


def test_an_mlflow_uri_is_given_to_the_server_and_not_to_the_storage_initializer() -> None:
    doc = build(ModelVersion("bid_filter", "3", "models:/bid_filter/3"), endpoint="bid-filter-v2")
    assert "STORAGE_URI" not in env(doc)
    args = parser().parse_args(container(doc)["args"])
    assert (args.model, args.name) == ("models:/bid_filter/3", "bid-filter-v2")


def test_the_model_version_is_recorded_on_the_object_and_on_each_revisions_pods() -> None:
    doc = build()
    for labels in (doc["metadata"]["labels"], predictor(doc)["labels"]):
        assert labels[MODEL_NAME_LABEL] == "bid_filter"
        assert labels[MODEL_VERSION_LABEL] == "7"
    assert ModelVersion.from_dict(json.loads(predictor(doc)["annotations"][MODEL_ANNOTATION])) == V7
    assert doc["metadata"]["namespace"] == "bidflow"
    # A new model changes the predictor, which is what makes KServe start a new revision.
    other = build(ModelVersion("bid_filter", "8", "s3://bidflow-models/bid_filter/8"))
    assert predictor(other)["containers"] != predictor(doc)["containers"]


def test_pods_run_as_the_chart_runs_them_non_root_read_only_no_capabilities() -> None:
    doc = build(service_account="bidflow-bid-filter")
    pod = predictor(doc)["securityContext"]
    assert (
        pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001 and pod["seccompProfile"]["type"] == "RuntimeDefault"
    )
    security = container(doc)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container(doc)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert predictor(doc)["serviceAccountName"] == "bidflow-bid-filter"
    assert container(doc)["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert env(doc)["HOME"] == "/tmp"


def test_the_builder_is_pure() -> None:
    options: dict[str, Any] = {"canary_percent": 20, "monitor_url": "http://m:8090/", "env": {"B": "2", "A": "1"}}
    first = build(**options)
    snapshot = copy.deepcopy(first)
    assert build(**options) == first
    assert json.dumps(build(**options)) == json.dumps(first), "same key order too"
    # The result is the caller's: changing it changes nothing for the next call, nor the inputs.
    first["spec"]["predictor"]["containers"][0]["resources"]["limits"]["cpu"] = "64"
    first["metadata"]["labels"].clear()
    assert build(**options) == snapshot
    assert options["env"] == {"B": "2", "A": "1"}
    assert [e["name"] for e in container(snapshot)["env"]] == ["STORAGE_URI", "HOME", "A", "B"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", "7"),
        ("bid_filter", "bid_filter"),
        ("runs:/abc/model", "runs-abc-model"),
        ("__x__", "x"),
        ("///", "unknown"),
    ],
)
def test_label_values_are_made_valid(text: str, expected: str) -> None:
    assert label_value(text) == expected
    assert len(label_value("v" * 100)) == 63


# --- what apiserver refusals become ---------------------------------------------------------------------------------


def refusal(status: int, reason: str, message: str, details: dict[str, Any] | None = None) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    exc.body = json.dumps(body)
    return exc


def test_a_409_is_a_conflict_that_says_to_re_run() -> None:
    exc = refusal(409, "Conflict", "the object has been modified", {"name": "bid-filter", "kind": "inferenceservices"})
    error = api_error(exc, verb="patch", namespace="bidflow", name="bid-filter")
    assert isinstance(error, ConflictError)
    assert "someone else changed" in error.what and "re-run" in (error.hint or "")


def test_a_403_names_the_missing_rbac_permission() -> None:
    exc = refusal(403, "Forbidden", 'inferenceservices.serving.kserve.io "bid-filter" is forbidden')
    error = api_error(exc, verb="patch", namespace="bidflow", name="bid-filter")
    assert not isinstance(error, ConflictError)
    assert "patch" in error.what and "inferenceservices.serving.kserve.io" in error.what
    assert "kubectl auth can-i patch inferenceservices.serving.kserve.io -n bidflow" in (error.hint or "")


def test_a_404_tells_a_missing_crd_from_a_missing_namespace_and_a_missing_object() -> None:
    crd = api_error(refusal(404, "NotFound", "the server could not find the requested resource", {}), verb="get",
                    namespace="bidflow", name="bid-filter")  # fmt: skip
    assert "CRD" in crd.what and "install KServe" in (crd.hint or "")
    namespace = api_error(
        refusal(404, "NotFound", 'namespaces "nope" not found', {"name": "nope", "kind": "namespaces"}),
        verb="create", namespace="nope", name="bid-filter",
    )  # fmt: skip
    assert "namespace nope does not exist" in namespace.what
    gone = api_error(
        refusal(404, "NotFound", "not found", {"name": "bid-filter", "group": "serving.kserve.io"}),
        verb="patch", namespace="bidflow", name="bid-filter",
    )  # fmt: skip
    assert "does not exist" in gone.what and "HTTP 404" in (gone.got or "")


def test_any_other_refusal_carries_status_and_reason_without_a_traceback() -> None:
    error = api_error(refusal(500, "InternalError", "etcd timed out"), verb="get", namespace="ns", name="x")
    assert type(error) is DeploymentError
    assert error.got == "HTTP 500 InternalError: etcd timed out"
    plain = ApiException(status=502, reason="Bad Gateway")  # a proxy's answer: no Status body
    assert api_error(plain, verb="get", namespace="ns", name="x").got == "HTTP 502 Bad Gateway"


def test_no_credentials_anywhere_is_a_deployment_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bidflow.config import CanaryConfig
    from bidflow.deploy.kserve import KServeBackend

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    with pytest.raises(DeploymentError, match="no Kubernetes credentials") as missing:
        KServeBackend.from_config(CanaryConfig(backend="kserve"), IMAGE)
    assert "KUBECONFIG" in (missing.value.hint or "")
