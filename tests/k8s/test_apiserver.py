"""Against a real kube-apiserver 1.20.2 on 127.0.0.1: the generated CRD, InferenceService CRUD over HTTP, the
chart's install/upgrade/rollback, the kustomize overlays (server-side dry run) and the rollback controller's RBAC.

What this cannot show (no controllers, no kubelet, no KServe/Knative): pods running, KServe's webhook, Knative
traffic splitting. Those stay validated on paper; see helm/bidflow/README.md.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from bidflow.deploy.crd import GROUP, PLURAL, VERSION
from tests.k8s.cluster import REPO, ApiServer, Tools, run_script
from tests.k8s.test_crd import valid_isvc

# The first test on a fresh machine also builds kube-apiserver inside the session fixture (3-7 minutes on 2 shared
# cores), which counts against pytest-timeout; afterwards the whole module takes about 20 s. CI can run
# scripts/k8s/build-apiserver.sh as a step of its own (cached by key) to keep test timings honest.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CHART = REPO / "helm" / "bidflow"
CRD_SERVED_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def crd_installed(kube: Tools, crd_file: Path) -> float:
    """Apply the generated CRD server-side (it is too big for the last-applied annotation); seconds until served."""
    kube.run("kubectl", "apply", "--server-side", "--field-manager=bidflow-tests", "-f", str(crd_file))
    started = time.monotonic()
    while True:
        done = kube.run("kubectl", "get", "isvc", "--all-namespaces", check=False)
        if done.returncode == 0:
            return time.monotonic() - started
        if time.monotonic() - started > CRD_SERVED_WITHIN_S:
            pytest.fail(
                f"`kubectl get isvc` still failing {CRD_SERVED_WITHIN_S}s after the CRD was applied:\n{done.stderr}"
            )
        time.sleep(0.25)


@pytest.fixture
def namespace(apiserver: ApiServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards; nothing finalizes it without controllers, so names differ)."""
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{time.monotonic_ns() % 100000}"
    core = client.CoreV1Api(apiserver.client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def custom(apiserver: ApiServer) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(apiserver.client)


def get_isvc(apiserver: ApiServer, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = custom(apiserver).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return found


# --- the build script ------------------------------------------------------------------------------------------


def test_the_build_script_is_idempotent(apiserver: ApiServer) -> None:
    """Once built, the script only checks the cache: no apt, no Go, no network, well under a second or two."""
    started = time.monotonic()
    bin_dir, log = run_script("build-apiserver.sh")
    assert time.monotonic() - started < 10
    assert "cached:" in log
    assert run_script("build-apiserver.sh", "--print-dir")[0] == bin_dir
    assert REPO not in bin_dir.parents, "binaries must be cached outside the work tree"


# --- the CRD ----------------------------------------------------------------------------------------------------


def test_the_generated_crd_applies_and_is_served_quickly(crd_installed: float, kube: Tools) -> None:
    assert crd_installed < CRD_SERVED_WITHIN_S
    established = kube.run(
        "kubectl", "get", "crd", "inferenceservices.serving.kserve.io",
        "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}",
    )  # fmt: skip
    assert established.stdout == "True"
    # The server accepted the schema as structural (otherwise NonStructuralSchema is set and pruning is off).
    conditions = kube.run("kubectl", "get", "crd", "inferenceservices.serving.kserve.io", "-o", "yaml").stdout
    assert "NonStructuralSchema" not in conditions


def test_kubectl_knows_the_short_name(crd_installed: float, kube: Tools, namespace: str) -> None:
    done = kube.run("kubectl", "get", "isvc", "-n", namespace)
    assert "No resources found" in done.stderr


# --- an InferenceService through the official Python client over real HTTP --------------------------------------


def test_create_get_merge_patch_and_conflict(crd_installed: float, apiserver: ApiServer, namespace: str) -> None:
    api = custom(apiserver)
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, valid_isvc())
    assert created["metadata"]["resourceVersion"]

    with pytest.raises(ApiException) as duplicate:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, valid_isvc())
    assert duplicate.value.status == 409

    stale = get_isvc(apiserver, namespace, "bid-filter")
    assert stale["spec"]["predictor"]["canaryTrafficPercent"] == 10

    # What the rollback controller will do: move the traffic split with a JSON merge patch.
    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "bid-filter", {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    )
    assert patched["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert patched["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]
    # null removes a field in a merge patch.
    cleared = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "bid-filter", {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    )
    assert "canaryTrafficPercent" not in cleared["spec"]["predictor"]

    # Optimistic concurrency: a write based on an old read is refused, not merged blindly.
    stale["spec"]["predictor"]["canaryTrafficPercent"] = 50
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "bid-filter", stale)
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as conflict_patch:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "bid-filter",
            {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
             "spec": {"predictor": {"canaryTrafficPercent": 50}}},
        )  # fmt: skip
    assert conflict_patch.value.status == 409
    assert "canaryTrafficPercent" not in get_isvc(apiserver, namespace, "bid-filter")["spec"]["predictor"]

    with pytest.raises(ApiException) as missing:
        get_isvc(apiserver, namespace, "no-such-model")
    assert missing.value.status == 404


def test_the_server_enforces_the_generated_schema(crd_installed: float, apiserver: ApiServer, namespace: str) -> None:
    api = custom(apiserver)
    wrong_type = valid_isvc()
    wrong_type["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    with pytest.raises(ApiException) as invalid:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, wrong_type)
    assert invalid.value.status == 422
    assert "canaryTrafficPercent" in invalid.value.body

    bad_quantity = valid_isvc()
    bad_quantity["spec"]["predictor"]["containers"][0]["resources"]["limits"]["memory"] = "1 GB"
    with pytest.raises(ApiException) as invalid_quantity:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, bad_quantity)
    assert invalid_quantity.value.status == 422

    # Unknown fields are pruned (structural schema), which is why the offline schema rejects them instead.
    typo = valid_isvc()
    typo["spec"]["predictor"]["canaryTraficPercent"] = 10
    stored = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, typo)
    assert "canaryTraficPercent" not in stored["spec"]["predictor"]


# --- the chart ------------------------------------------------------------------------------------------------


def test_helm_install_upgrade_rollback(crd_installed: float, kube: Tools, apiserver: ApiServer) -> None:
    namespace = f"bidflow-helm-{time.monotonic_ns() % 100000}"
    helm = ["--namespace", namespace]
    kube.run(
        "helm", "install", "bidflow", str(CHART), *helm, "--create-namespace", "-f", str(CHART / "values-eks.yaml")
    )
    isvc = get_isvc(apiserver, namespace, "bid-filter")
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    # Its URL carries the monitor's generated intake token (tests/k8s/test_chart_token.py).
    token = base64.b64decode(client.CoreV1Api(apiserver.client).read_namespaced_secret(
        "bidflow-monitor-token", namespace).data["token"]).decode()  # fmt: skip
    # The payload logger survived the server's structural schema (an unknown field would have been pruned).
    assert isvc["spec"]["predictor"]["logger"] == {
        "mode": "all",
        "url": f"http://bidflow-monitor.{namespace}.svc.cluster.local:8090/?token={token}",
    }
    assert get_isvc(apiserver, namespace, "ctr")["spec"]["predictor"]["containers"][0]["args"][0] == "--kind=ctr"
    apps = client.AppsV1Api(apiserver.client)
    core = client.CoreV1Api(apiserver.client)
    assert apps.read_namespaced_deployment("bidflow-feature-server", namespace).spec.replicas == 2
    monitor = apps.read_namespaced_deployment("bidflow-monitor", namespace).spec
    assert monitor.template.spec.service_account_name == "bidflow-rollback-controller"
    assert monitor.template.spec.init_containers[0].name == "storage-initializer"
    assert core.read_namespaced_service("bidflow-monitor", namespace).spec.ports[0].port == 8090
    for name, role in (("bidflow-bid-filter", "bidflow-bid-filter"), ("bidflow-ctr", "bidflow-ctr")):
        account = core.read_namespaced_service_account(name, namespace)
        assert account.metadata.annotations["eks.amazonaws.com/role-arn"].endswith(f":role/{role}")

    # A canary: new model location, 20% of traffic to it.
    kube.run(
        "helm", "upgrade", "bidflow", str(CHART), *helm, "-f", str(CHART / "values-eks.yaml"),
        "--set", "bidFilter.canaryTrafficPercent=20", "--set", "bidFilter.storageUri=s3://bidflow-models/bid-filter/v2",
    )  # fmt: skip
    predictor = get_isvc(apiserver, namespace, "bid-filter")["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["containers"][0]["env"][0]["value"] == "s3://bidflow-models/bid-filter/v2"

    # Bad values never reach the cluster: the schema stops the upgrade, the release stays at revision 2.
    refused = kube.run(
        "helm", "upgrade", "bidflow", str(CHART), *helm, "--reuse-values",
        "--set", "bidFilter.canaryTrafficPercent=150", check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "canaryTrafficPercent: Must be less than or equal to 100" in refused.stderr

    kube.run("helm", "rollback", "bidflow", "1", *helm)
    predictor = get_isvc(apiserver, namespace, "bid-filter")["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["containers"][0]["env"][0]["value"] == "s3://bidflow-models-111122223333/bid-filter/champion"
    history = kube.run("helm", "history", "bidflow", *helm, "-o", "json").stdout
    assert history.count('"revision"') == 3

    kube.run("helm", "uninstall", "bidflow", *helm)
    with pytest.raises(ApiException) as gone:
        get_isvc(apiserver, namespace, "bid-filter")
    assert gone.value.status == 404


def test_helm_upgrade_turns_the_monitor_and_its_payload_logger_off_and_on(
    crd_installed: float, kube: Tools, apiserver: ApiServer
) -> None:
    namespace = f"bidflow-monitor-{time.monotonic_ns() % 100000}"
    helm = ["--namespace", namespace]
    apps = client.AppsV1Api(apiserver.client)
    local = str(CHART / "values-local.yaml")
    kube.run("helm", "install", "bidflow", str(CHART), *helm, "--create-namespace", "-f", local)
    assert "logger" in get_isvc(apiserver, namespace, "bid-filter")["spec"]["predictor"]
    pod = apps.read_namespaced_deployment("bidflow-monitor", namespace).spec.template.spec
    assert pod.volumes[0].persistent_volume_claim.read_only is True  # values.yaml's pvc:// detector
    assert not pod.init_containers

    kube.run("helm", "upgrade", "bidflow", str(CHART), *helm, "--reuse-values", "--set", "monitor.enabled=false")
    assert "logger" not in get_isvc(apiserver, namespace, "bid-filter")["spec"]["predictor"]
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_deployment("bidflow-monitor", namespace)
    assert gone.value.status == 404

    # Back on, now downloading the detector from S3: the Deployment is recreated with the storage initializer.
    kube.run(
        "helm", "upgrade", "bidflow", str(CHART), *helm, "--reuse-values", "--set", "monitor.enabled=true",
        "--set", "monitor.detectorUri=s3://bidflow-models/bid-filter/detector/7", "--set", "ctr.enabled=false",
    )  # fmt: skip
    assert get_isvc(apiserver, namespace, "bid-filter")["spec"]["predictor"]["logger"]["mode"] == "all"
    pod = apps.read_namespaced_deployment("bidflow-monitor", namespace).spec.template.spec
    assert pod.init_containers[0].args == ["s3://bidflow-models/bid-filter/detector/7", "/mnt/detector"]
    assert pod.volumes[0].empty_dir is not None
    with pytest.raises(ApiException) as ctr_gone:
        get_isvc(apiserver, namespace, "ctr")
    assert ctr_gone.value.status == 404
    kube.run("helm", "uninstall", "bidflow", *helm)


@pytest.mark.parametrize("overlay", ["local", "eks"])
def test_overlays_pass_a_server_side_dry_run(
    crd_installed: float, kube: Tools, apiserver: ApiServer, overlay: str
) -> None:
    core = client.CoreV1Api(apiserver.client)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bidflow")))
    except ApiException as exc:
        if exc.status != 409:
            raise
    rendered = kube.run("kubectl", "kustomize", str(REPO / "k8s" / "overlays" / overlay)).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    for doc in docs:
        if doc["kind"] == "PodDisruptionBudget":
            # 1.20 serves only policy/v1beta1 (same fields); policy/v1 is validated offline at 1.31 in test_chart.py.
            assert doc["apiVersion"] == "policy/v1"
            doc["apiVersion"] = "policy/v1beta1"
    done = kube.run("kubectl", "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))
    assert done.stdout.count("(server dry run)") == len(docs) == {"local": 15, "eks": 18}[overlay], done.stdout
    # A dry run stores nothing.
    stored = {account.metadata.name for account in core.list_namespaced_service_account("bidflow").items}
    assert not {name for name in stored if name.startswith("bidflow-")}


# --- least privilege for the rollback controller ------------------------------------------------------------------


def can(
    apiserver: ApiServer,
    user: str,
    groups: list[str],
    namespace: str,
    verb: str,
    resource: str,
    group: str,
    name: str | None = None,
) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=groups,
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, resource=resource, group=group, name=name
            ),
        )
    )
    answer = client.AuthorizationV1Api(apiserver.client).create_subject_access_review(review)
    return bool(answer.status.allowed)


def test_the_rollback_controller_can_patch_inference_services_and_nothing_else(
    crd_installed: float, kube: Tools, apiserver: ApiServer
) -> None:
    namespace = f"bidflow-rbac-{time.monotonic_ns() % 100000}"
    kube.run("helm", "install", "bidflow", str(CHART), "--namespace", namespace, "--create-namespace")
    user = f"system:serviceaccount:{namespace}:bidflow-rollback-controller"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]

    def allowed(verb: str, resource: str, group: str = "", ns: str = namespace, name: str | None = None) -> bool:
        return can(apiserver, user, groups, ns, verb, resource, group, name)

    # The bid filter's InferenceService, by name: what the rollback path sends (get, merge patch); nothing else.
    for verb in ("get", "patch"):
        assert allowed(verb, "inferenceservices", GROUP, name="bid-filter"), verb
        assert not allowed(verb, "inferenceservices", GROUP, name="ctr"), verb
    for verb in ("get", "list", "watch", "patch", "create", "update", "delete", "deletecollection"):
        assert not allowed(verb, "inferenceservices", GROUP), verb
    assert not allowed("get", "secrets")
    assert not allowed("list", "secrets")
    assert not allowed("patch", "deployments", "apps")
    assert not allowed("patch", "inferenceservices", GROUP, ns="default", name="bid-filter"), "its own namespace only"
    # The same answer through kubectl's impersonation, as an operator would check it on EKS.
    assert kube.run("kubectl", "auth", "can-i", "patch", "inferenceservices.serving.kserve.io/bid-filter",
                    "-n", namespace, f"--as={user}").stdout.strip() == "yes"  # fmt: skip
    denied = kube.run("kubectl", "auth", "can-i", "get", "secrets", "-n", namespace, f"--as={user}", check=False)
    assert denied.stdout.strip() == "no"
    kube.run("helm", "uninstall", "bidflow", "--namespace", namespace)


def test_the_monitor_runs_as_an_account_that_may_patch_inference_services_but_not_read_secrets(
    crd_installed: float, kube: Tools, apiserver: ApiServer
) -> None:
    """The identity is read from the installed Deployment, not assumed: whatever account the monitor's pods get."""
    namespace = f"bidflow-rbac-monitor-{time.monotonic_ns() % 100000}"
    kube.run("helm", "install", "bidflow", str(CHART), "--namespace", namespace, "--create-namespace")
    apps = client.AppsV1Api(apiserver.client)
    account = apps.read_namespaced_deployment("bidflow-monitor", namespace).spec.template.spec.service_account_name
    user = f"system:serviceaccount:{namespace}:{account}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]

    def allowed(
        verb: str, resource: str, group: str = "", ns: str = namespace, who: str = user, name: str | None = None
    ) -> bool:
        return can(apiserver, who, groups, ns, verb, resource, group, name)

    # What the monitor's rollback needs: read the bid filter's InferenceService, merge-patch its traffic split.
    assert allowed("get", "inferenceservices", GROUP, name="bid-filter")
    assert allowed("patch", "inferenceservices", GROUP, name="bid-filter")
    assert not allowed("patch", "inferenceservices", GROUP, name="ctr")
    for verb in ("get", "list", "watch"):
        assert not allowed(verb, "secrets"), f"the monitor must not {verb} secrets"
    assert not allowed("create", "pods")
    assert not allowed("create", "pods/exec")
    assert not allowed("patch", "deployments", "apps")
    assert not allowed("delete", "inferenceservices", GROUP)
    assert not allowed("patch", "inferenceservices", GROUP, ns="default", name="bid-filter")
    # The model servers' accounts have no API rights at all (they never get a token either).
    for other in ("bidflow-bid-filter", "bidflow-ctr", "bidflow-feature-server"):
        who = f"system:serviceaccount:{namespace}:{other}"
        assert not allowed("get", "inferenceservices", GROUP, who=who, name="bid-filter"), other
    assert kube.run("kubectl", "auth", "can-i", "patch", "inferenceservices.serving.kserve.io/bid-filter",
                    "-n", namespace, f"--as={user}").stdout.strip() == "yes"  # fmt: skip
    denied = kube.run("kubectl", "auth", "can-i", "list", "secrets", "-n", namespace, f"--as={user}", check=False)
    assert denied.stdout.strip() == "no"
    kube.run("helm", "uninstall", "bidflow", "--namespace", namespace)
