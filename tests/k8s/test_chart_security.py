"""Trust boundaries and faults in the chart: the rollback controller's Role, the monitor's secrets, the model servers'
probes, disruption budgets and image digests.

Offline parts render with helm (scripts/k8s/fetch-helm.sh) and validate like test_chart.py; the RBAC parts apply the
rendered Role to the real kube-apiserver 1.20.2 (scripts/k8s/build-apiserver.sh) and ask it, as the rollback
controller's ServiceAccount, what it may do, then run the monitor's real rollback path with that identity. The
probes are checked against the model server itself (its ASGI app, in-process): the paths the chart renders must
answer 503 while the model loads (readiness) and 200 all along (liveness). What stays on paper: kubelet and Knative
actually probing, and evictions honouring the budgets (no nodes or controllers here).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.crd import GROUP, KIND, PLURAL, VERSION
from bidflow.deploy.journal import Transition
from bidflow.deploy.kserve import InferenceServiceLog, KServeBackend
from bidflow.deploy.kserve_api import InferenceServiceClient
from bidflow.deploy.validation import validate_inference_service
from bidflow.errors import DeploymentError
from tests.k8s.cluster import ApiServer, Tools
from tests.k8s.test_kserve_backend import crd_served

__all__ = ["crd_served"]  # the fixture, shared with the KServe backend's tests
from tests.k8s.test_chart import CHART, VALUES_FILES, one, schema_problems, template, values_args

# helm from the npm registry, and (for the RBAC tests) the kube-apiserver build: not unit tests.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

ROLLBACK_SA = "bidflow-rollback-controller"
IMAGE = "bidflow/serving:0.1.0"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def version(n: int) -> ModelVersion:
    return ModelVersion("bid_filter", str(n), f"s3://bidflow-models/bid_filter/{n}")


# --- the rollback controller's Role, rendered -------------------------------------------------------------------


def role_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (role,) = [doc for doc in docs if doc["kind"] == "Role"]
    rules: list[dict[str, Any]] = role["rules"]
    return rules


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_the_role_names_the_bid_filter_and_grants_only_get_and_patch(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values))
    (rule,) = role_rules(docs)
    assert rule["resourceNames"] == ["bid-filter"], "patch on every InferenceService runs any image as any account"
    assert sorted(rule["verbs"]) == ["get", "patch"], "list/watch/create are never sent by the rollback path"
    assert (rule["apiGroups"], rule["resources"]) == (["serving.kserve.io"], ["inferenceservices"])


def test_the_role_follows_the_bid_filter_name(tools: Tools) -> None:
    docs, _ = template(tools, "--set", "bidFilter.name=filter-eu")
    (rule,) = role_rules(docs)
    assert rule["resourceNames"] == ["filter-eu"]
    # ... which is the InferenceService the monitor is told to roll back.
    (monitor,) = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in monitor["env"]}
    assert env["BIDFLOW__CANARY__INFERENCE_SERVICE"] == "filter-eu"


# --- the Role on a real kube-apiserver ----------------------------------------------------------------------------


@pytest.fixture
def namespace(apiserver: ApiServer, crd_served: None, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"sec-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{time.monotonic_ns() % 100000}"
    core = client.CoreV1Api(apiserver.client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def apply_rendered_rbac(kube: Tools, namespace: str) -> None:
    """The chart's own ServiceAccount, Role and RoleBinding for this namespace, applied as the admin."""
    docs, _ = template(kube, "--namespace", namespace)
    wanted = [
        doc
        for doc in docs
        if doc["kind"] in ("Role", "RoleBinding")
        or (doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == ROLLBACK_SA)
    ]
    assert len(wanted) == 3
    kube.run("kubectl", "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(wanted))


def allowed(apiserver: ApiServer, namespace: str, verb: str, name: str | None = None) -> bool:
    """A SubjectAccessReview for the rollback controller's ServiceAccount (as the apiserver authenticates it)."""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{ROLLBACK_SA}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=GROUP, resource=PLURAL, name=name
            ),
        )
    )
    answer = client.AuthorizationV1Api(apiserver.client).create_subject_access_review(review)
    return bool(answer.status.allowed)


def test_the_rollback_controller_may_patch_the_bid_filter_and_no_other_inference_service(
    kube: Tools, apiserver: ApiServer, namespace: str
) -> None:
    apply_rendered_rbac(kube, namespace)
    assert allowed(apiserver, namespace, "get", "bid-filter")
    assert allowed(apiserver, namespace, "patch", "bid-filter")
    for other in ("ctr", "any-other-model"):
        for verb in ("get", "patch", "update", "delete"):
            assert not allowed(apiserver, namespace, verb, other), f"{verb} {other}"
    for verb in ("list", "watch", "create", "deletecollection"):
        assert not allowed(apiserver, namespace, verb), verb
    for verb in ("update", "delete"):
        assert not allowed(apiserver, namespace, verb, "bid-filter"), verb
    # As an operator checks it on EKS: kubectl impersonating the ServiceAccount.
    user = f"--as=system:serviceaccount:{namespace}:{ROLLBACK_SA}"

    def can_i(*args: str) -> str:
        return kube.run("kubectl", "auth", "can-i", *args, "-n", namespace, user, check=False).stdout.strip()

    assert can_i("patch", f"inferenceservices.{GROUP}/bid-filter") == "yes"
    assert can_i("patch", f"inferenceservices.{GROUP}/ctr") == "no"
    assert can_i("list", f"inferenceservices.{GROUP}") == "no"
    assert can_i("get", "secrets") == "no"


def impersonating(apiserver: ApiServer, user: str) -> Any:
    api_client = config.new_client_from_config(config_file=str(apiserver.kubeconfig))
    api_client.set_default_header("Impersonate-User", user)
    return api_client


def test_the_rendered_role_is_enough_for_the_monitors_rollback_and_nothing_beside_it(
    kube: Tools, apiserver: ApiServer, namespace: str
) -> None:
    """The rollback path the monitor runs (get, merge patch, the transition log) as the chart's ServiceAccount."""
    apply_rendered_rbac(kube, namespace)
    for name in ("bid-filter", "ctr"):  # what `bidflow canary deploy` (an operator or CI) sets up
        operator = KServeBackend(
            apiserver.client, namespace=namespace, name=name, image=IMAGE, service_account="bidflow-bid-filter"
        )
        operator.deploy(version(7), 20)
        operator.deploy(version(8), 20)

    monitor_client = impersonating(apiserver, f"system:serviceaccount:{namespace}:{ROLLBACK_SA}")
    try:
        monitor = KServeBackend(monitor_client, namespace=namespace, name="bid-filter", image=IMAGE)
        state = monitor.rollback()
        assert (state.champion, state.canary, state.canary_percent) == (version(7), None, 0)
        InferenceServiceLog(monitor).append(Transition("rollback", version(8), "monitor", ("drift",), {}, state))
        assert [t.actor for t in InferenceServiceLog(monitor).read()] == ["monitor"]

        # Another InferenceService of the namespace: neither readable nor patchable with the same token.
        with pytest.raises(DeploymentError) as no_get:
            KServeBackend(monitor_client, namespace=namespace, name="ctr", image=IMAGE).rollback()
        assert "not allowed to get" in no_get.value.what
        stored = client.CustomObjectsApi(apiserver.client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "ctr"
        )
        ctr = InferenceServiceClient(monitor_client, namespace, "ctr", timeout_s=30)
        hijack = {"spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "evil/miner:1"}]}}}
        with pytest.raises(DeploymentError) as no_patch:
            ctr.patch(stored["metadata"]["resourceVersion"], hijack)
        assert "not allowed to patch" in no_patch.value.what
        with pytest.raises(DeploymentError) as no_create:
            KServeBackend(monitor_client, namespace=namespace, name="new-model", image=IMAGE).deploy(version(1), 20)
        assert "not allowed to get" in no_create.value.what or "not allowed to create" in no_create.value.what
    finally:
        monitor_client.close()
    unchanged = client.CustomObjectsApi(apiserver.client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "ctr"
    )
    assert unchanged["spec"]["predictor"]["containers"][0]["image"] == IMAGE


# --- the monitor's pods: no MLflow secret, only the intake token ---------------------------------------------


def secrets_in(pod: dict[str, Any]) -> list[str]:
    """Every way a pod spec can get a Secret's content: envFrom, valueFrom.secretKeyRef, secret/projected volumes."""
    found = []
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        found += [f"envFrom {e['secretRef']['name']}" for e in container.get("envFrom", []) if "secretRef" in e]
        found += [f"env {e['name']}" for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    found += [f"volume {v['name']}" for v in pod.get("volumes", []) if "secret" in v or "projected" in v]
    return found


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_the_monitor_gets_no_secret_but_its_intake_token(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values))
    pod = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]
    assert secrets_in(pod) == ["volume intake-token"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "bidflow-monitor-token"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]  # that one key, nothing else
    env = {e["name"] for c in pod["containers"] for e in c.get("env", [])}
    assert not {name for name in env if name.startswith(("BIDFLOW__REGISTRY__", "MLFLOW_"))}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "monitor.envFromSecret=bidflow-mlflow"], "Additional property envFromSecret is not allowed"),
        (
            [
                "--set", "monitor.env[0].name=BIDFLOW__REGISTRY__TRACKING_URI",
                "--set", "monitor.env[0].valueFrom.secretKeyRef.name=bidflow-mlflow",
                "--set", "monitor.env[0].valueFrom.secretKeyRef.key=BIDFLOW__REGISTRY__TRACKING_URI",
            ],
            "monitor.env[0] BIDFLOW__REGISTRY__TRACKING_URI: the monitor never uses the model registry",
        ),
        (
            [
                "--set", "monitor.env[0].name=DB",
                "--set", "monitor.env[0].valueFrom.secretKeyRef.name=anything",
                "--set", "monitor.env[0].valueFrom.secretKeyRef.key=k",
            ],
            "monitor.env[0] DB: the monitor never uses the model registry or any Secret",
        ),
        (
            ["--set", "monitor.env[0].name=MLFLOW_EXPERIMENT_NAME", "--set", "monitor.env[0].value=x"],
            "monitor.env[0] MLFLOW_EXPERIMENT_NAME: the monitor never uses the model registry",
        ),
    ],
    ids=["envFromSecret", "registry-secretKeyRef", "any-secretKeyRef", "mlflow-env"],
)  # fmt: skip
def test_a_secret_for_the_monitor_is_refused(tools: Tools, args: list[str], message: str) -> None:
    docs, stderr = template(tools, *args, check=False)
    assert docs == []
    assert message in stderr, stderr


def test_the_monitor_still_takes_plain_variables(tools: Tools) -> None:
    docs, _ = template(tools, "--set", "monitor.env[0].name=BIDFLOW__MONITOR__WINDOW_SIZE",
                       "--set-string", "monitor.env[0].value=500")  # fmt: skip
    (monitor,) = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]["containers"]
    assert {"name": "BIDFLOW__MONITOR__WINDOW_SIZE", "value": "500"} in monitor["env"]


# --- probes on the model servers ----------------------------------------------------------------------------------


def model_server(isvc: dict[str, Any]) -> dict[str, Any]:
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    found: dict[str, Any] = container
    return found


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_every_predictor_has_readiness_on_its_model_and_liveness_on_the_process(
    tools: Tools, values: str | None
) -> None:
    docs, _ = template(tools, *values_args(values))
    isvcs = [doc for doc in docs if doc["kind"] == KIND]
    assert {isvc["metadata"]["name"] for isvc in isvcs} == {"bid-filter", "ctr"}
    for isvc in isvcs:
        name = isvc["metadata"]["name"]
        server = model_server(isvc)
        port = server["ports"][0]["containerPort"]
        assert f"--http-port={port}" in server["args"] and f"--model_name={name}" in server["args"]
        ready, live = server["readinessProbe"], server["livenessProbe"]
        assert ready["httpGet"] == {"path": f"/v2/models/{name}/ready", "port": port}
        assert live["httpGet"] == {"path": "/v2/health/live", "port": port}
        # A slow start is tolerated: at least a minute before a silent process is restarted.
        assert live["initialDelaySeconds"] + live["periodSeconds"] * live["failureThreshold"] >= 60
        assert live["timeoutSeconds"] >= 1 and ready["timeoutSeconds"] >= 1
        assert "startupProbe" not in server  # Knative before 1.15 refuses it; liveness needs none (see below)
        assert validate_inference_service(isvc) == []


def test_probes_follow_the_port_and_name_values(tools: Tools) -> None:
    docs, _ = template(tools, "--set", "ctr.runtime.port=9000", "--set", "ctr.name=ctr-eu")
    server = model_server(one(docs, KIND, "ctr-eu"))
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/models/ctr-eu/ready", "port": 9000}
    assert server["livenessProbe"]["httpGet"]["port"] == 9000


def test_the_probe_paths_mean_what_the_chart_says_on_the_model_server(tools: Tools, tmp_path: Path) -> None:
    """The rendered paths against the model server's own app: readiness 503 until the model loads, then 200;
    liveness 200 throughout, so a loading server is never restarted."""
    from kserve import Model
    from starlette.testclient import TestClient

    from bidflow.config import Config
    from bidflow.serving.base import ModelSource
    from bidflow.serving.bid_filter import BidFilterModel
    from bidflow.serving.server import build_app

    docs, _ = template(tools)
    server = model_server(one(docs, KIND, "bid-filter"))
    ready_path = server["readinessProbe"]["httpGet"]["path"]
    live_path = server["livenessProbe"]["httpGet"]["path"]

    loading = BidFilterModel("bid-filter", Config(), ModelSource.parse("bid_filter", str(tmp_path / "not-yet")))
    assert not loading.load()  # what the server sees until the storage initializer's model is readable
    with TestClient(build_app([loading])) as http:
        assert http.get(ready_path).status_code == 503
        assert http.get(live_path).status_code == 200

    class Loaded(Model):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.ready = True

    with TestClient(build_app([Loaded("bid-filter")])) as http:
        assert http.get(ready_path).status_code == 200
        assert http.get(live_path).status_code == 200


# --- PodDisruptionBudgets -----------------------------------------------------------------------------------------


def budgets(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "PodDisruptionBudget"}


def pod_labels(docs: list[dict[str, Any]], budget_name: str) -> dict[str, str]:
    """The labels of the pods a budget is meant for: the feature server's template, or a predictor's labels."""
    if budget_name.endswith("-predictor"):
        labels: dict[str, str] = one(docs, KIND, budget_name.removesuffix("-predictor"))["spec"]["predictor"]["labels"]
        return labels
    deployment = one(docs, "Deployment", budget_name)
    assert deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {"bidflow-feature-server"}),  # values.yaml: feature server x2, predictors minReplicas 1
        (values_args("values-local.yaml"), set()),  # one pod of everything
        (values_args("values-eks.yaml"), {"bidflow-feature-server", "bid-filter-predictor", "ctr-predictor"}),
        (["--set", "featureServer.replicas=1"], set()),
        (["--set", "bidFilter.minReplicas=2"], {"bidflow-feature-server", "bid-filter-predictor"}),
        (["--set", "ctr.minReplicas=2", "--set", "featureServer.enabled=false"], {"ctr-predictor"}),
        ([*values_args("values-eks.yaml"), "--set", "ctr.enabled=false"], {"bidflow-feature-server",
                                                                            "bid-filter-predictor"}),
    ],
    ids=["values.yaml", "local", "eks", "one-feature-server", "bid-filter-x2", "ctr-x2-only", "eks-without-ctr"],
)  # fmt: skip
def test_a_disruption_budget_for_every_workload_with_two_or_more_pods(
    tools: Tools, args: list[str], expected: set[str]
) -> None:
    docs, _ = template(tools, *args)
    found = budgets(docs)
    assert set(found) == expected
    for name, budget in found.items():
        assert budget["apiVersion"] == "policy/v1"  # what EKS 1.31 serves (policy/v1beta1 is gone since 1.25)
        if name.endswith("-predictor"):  # k8s/overlays/eks adds these outside k8s/base (and its namespace)
            assert budget["metadata"]["namespace"] == "bidflow"
        assert schema_problems(budget) == []
        assert budget["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in budget["spec"]
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector and selector.items() <= pod_labels(docs, name).items(), name
    # No budget selects the monitor (one pod, replaced on upgrade) or another workload's pods.
    monitor = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["metadata"]["labels"]
    for name, budget in found.items():
        assert not budget["spec"]["selector"]["matchLabels"].items() <= monitor.items(), name


def test_the_predictor_pods_carry_the_labels_their_budget_selects(tools: Tools) -> None:
    """KServe puts spec.predictor.labels on the predictor's pods (every revision's, canary included)."""
    import importlib

    models = importlib.import_module("kserve.models")
    assert models.V1beta1PredictorSpec.attribute_map["labels"] == "labels"
    assert "component pod" in (models.V1beta1PredictorSpec.labels.__doc__ or "")
    docs, _ = template(tools, *values_args("values-eks.yaml"))
    bid_filter, ctr = (one(docs, KIND, name)["spec"]["predictor"]["labels"] for name in ("bid-filter", "ctr"))
    assert bid_filter["app.kubernetes.io/component"] == "bid-filter"
    assert ctr["app.kubernetes.io/component"] == "ctr"


def test_helm_installs_the_budgets_on_a_cluster_without_policy_v1(kube: Tools, apiserver: ApiServer) -> None:
    """kube-apiserver 1.20 serves only policy/v1beta1: the chart asks the cluster and installs what it serves."""
    namespace = f"bidflow-pdb-{time.monotonic_ns() % 100000}"
    helm = ["--namespace", namespace]
    off = ["--set", "ctr.enabled=false", "--set", "bidFilter.enabled=false", "--set", "monitor.enabled=false"]
    kube.run("helm", "install", "bidflow", str(CHART), *helm, "--create-namespace", *off)
    try:
        listed = kube.run("kubectl", "get", "poddisruptionbudgets.v1beta1.policy", "-n", namespace, "-o", "json")
        (budget,) = json.loads(listed.stdout)["items"]
        assert budget["metadata"]["name"] == "bidflow-feature-server"
        assert budget["spec"]["maxUnavailable"] == 1
    finally:
        kube.run("helm", "uninstall", "bidflow", *helm)


# --- image digests ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind", "name"),
    [
        ("bidFilter.runtime.image", KIND, "bid-filter"),
        ("ctr.runtime.image", KIND, "ctr"),
        ("featureServer.image", "Deployment", "bidflow-feature-server"),
        ("monitor.image", "Deployment", "bidflow-monitor"),
    ],
)
def test_a_digest_pins_the_image(tools: Tools, key: str, kind: str, name: str) -> None:
    docs, _ = template(tools, *values_args("values-eks.yaml"), "--set", f"{key}.digest={DIGEST}",
                       "--set", f"{key}.tag=ignored")  # fmt: skip
    doc = one(docs, kind, name)
    spec = doc["spec"]["predictor"] if kind == KIND else doc["spec"]["template"]["spec"]
    image = spec["containers"][0]["image"]
    assert image.endswith(f"@{DIGEST}") and ":ignored" not in image
    assert image.startswith("111122223333.dkr.ecr.eu-west-1.amazonaws.com/")
    assert schema_problems(doc) == []
    # Only that image: the others keep their tags.
    others = [
        c["image"]
        for d in docs
        if d is not doc and d["kind"] in (KIND, "Deployment")
        for c in (d["spec"]["predictor"] if d["kind"] == KIND else d["spec"]["template"]["spec"])["containers"]
    ]
    assert others and not [image for image in others if "@" in image]


def test_the_storage_initializer_takes_a_digest_too(tools: Tools) -> None:
    docs, _ = template(tools, *values_args("values-eks.yaml"),
                       "--set", f"monitor.storageInitializer.image.digest={DIGEST}")  # fmt: skip
    (init,) = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]["initContainers"]
    assert init["image"] == f"kserve/storage-initializer@{DIGEST}"


def test_no_digest_renders_the_tag(tools: Tools) -> None:
    docs, _ = template(tools)
    assert model_server(one(docs, KIND, "bid-filter"))["image"] == "bidflow/serving:0.1.0"


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "bidFilter.runtime.image.digest=sha256:abc123"],  # too short
        ["--set", f"bidFilter.runtime.image.digest={DIGEST.upper()}"],  # upper case: not a digest
        ["--set", f"bidFilter.runtime.image.digest={DIGEST[7:]}"],  # no algorithm
        ["--set", f"bidFilter.runtime.image.digest=md5:{DIGEST[7:]}"],
        ["--set", f"bidFilter.runtime.image.digest={DIGEST}0"],  # 65 hex digits
        ["--set", f"monitor.image.digest=@{DIGEST}"],
        ["--set", f"featureServer.image.digest={DIGEST} "],
        ["--set", f"monitor.storageInitializer.image.digest={DIGEST[:-1]}"],
    ],
    ids=["short", "upper", "no-algorithm", "md5", "65-digits", "at-sign", "trailing-space", "63-digits"],
)
def test_a_malformed_digest_is_refused_by_the_schema(tools: Tools, args: list[str]) -> None:
    docs, stderr = template(tools, *args, check=False)
    assert docs == []
    key = args[1].split("=", 1)[0]
    assert f"{key}: Does not match pattern" in stderr, stderr


def test_a_digest_inside_the_repository_is_refused(tools: Tools) -> None:
    docs, stderr = template(tools, "--set", f"bidFilter.runtime.image.repository=bidflow/serving@{DIGEST}",
                            check=False)  # fmt: skip
    assert docs == []
    assert "bidFilter.runtime.image.repository: Does not match pattern" in stderr, stderr
