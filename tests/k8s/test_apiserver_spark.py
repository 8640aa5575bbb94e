"""SparkApplications on a real kube-apiserver 1.20.2: the Spark Operator's CRD, bidflow's manifests, the chart's
RBAC, and the submit-and-wait loop of the ``submit_spark_job`` component.

No operator runs here, so the tests do its part: they write ``status.applicationState`` through the status
subresource as the operator does (SUBMITTED, RUNNING, then COMPLETED or FAILED). What this cannot show: the
operator submitting, its webhook mounting the ConfigMap, Spark pods running, IRSA and S3 (validated on paper).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from bidflow.config import SparkKubernetesConfig
from bidflow.deploy import spark_application as sa
from bidflow.deploy.spark_submit import SparkRun, submit_and_wait
from bidflow.errors import EngineError
from tests.k8s import spark_crd
from tests.k8s.cluster import REPO, ApiServer, Tools, _write_kubeconfig
from tests.k8s.test_apiserver import can, crd_installed
from tests.k8s.test_spark_application import IMAGE, S3_CONFIG, SPARK_ON, render

__all__ = ["crd_installed"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CHART = REPO / "helm" / "bidflow"
SERVED_WITHIN_S = 15.0
RUNNER = "pipeline-runner"


@pytest.fixture(scope="module")
def spark_crd_installed(kube: Tools, tmp_path_factory: pytest.TempPathFactory) -> float:
    """Apply the kept CRD server-side (far too big for kubectl's last-applied annotation); seconds until served.

    Applied with its 47 empty-string defaults dropped, which kube-apiserver 1.20 refuses (spark_crd.for_apiserver_1_20);
    the schema is otherwise the upstream one.
    """
    adapted, dropped = spark_crd.for_apiserver_1_20()
    assert dropped == 47, "the kept CRD changed: look at what 1.20 refuses in it again"
    path = tmp_path_factory.mktemp("spark-crd") / "sparkapplications.json"
    path.write_text(json.dumps(adapted), encoding="utf-8")
    kube.run("kubectl", "apply", "--server-side", "--field-manager=bidflow-tests", "-f", str(path))
    started = time.monotonic()
    while (done := kube.run("kubectl", "get", "sparkapplications", "--all-namespaces", check=False)).returncode:
        if time.monotonic() - started > SERVED_WITHIN_S:
            pytest.fail(f"SparkApplications not served {SERVED_WITHIN_S}s after the CRD was applied:\n{done.stderr}")
        time.sleep(0.25)
    return time.monotonic() - started


@pytest.fixture
def release(crd_installed: float, spark_crd_installed: float, kube: Tools, apiserver: ApiServer) -> Iterator[str]:
    """The chart installed with the Spark values into a fresh namespace, the runner's account in the same one."""
    namespace = f"bidflow-spark-{time.monotonic_ns() % 100000}"
    kube.run("helm", "install", "bidflow", str(CHART), "--namespace", namespace, "--create-namespace", *SPARK_ON,
             "--set", "sparkOperator.pipelineRunner.namespace=")  # fmt: skip
    # Kubeflow Pipelines creates its runner's account, not this chart.
    account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=RUNNER))
    client.CoreV1Api(apiserver.client).create_namespaced_service_account(namespace, account)
    yield namespace
    kube.run("helm", "uninstall", "bidflow", "--namespace", namespace)


def custom(api: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def account_kubeconfig(apiserver: ApiServer, namespace: str, account: str, folder: Path) -> Path:
    """A kubeconfig holding a token of ``account`` (TokenRequest), as a pod running as that account would have."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["https://kubernetes.default.svc"], expiration_seconds=3600)
    )
    core = client.CoreV1Api(apiserver.client)
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    return _write_kubeconfig(folder / f"kubeconfig-{account}", apiserver.url, apiserver.ca_file, token)


def as_account(apiserver: ApiServer, namespace: str, account: str, folder: Path) -> Any:
    """An ApiClient authenticated with a token of ``account``."""
    kubeconfig = account_kubeconfig(apiserver, namespace, account, folder)
    return config.new_client_from_config(config_file=str(kubeconfig))


def settings_in(namespace: str) -> SparkKubernetesConfig:
    return SparkKubernetesConfig(namespace=namespace, timeout_s=60)


# --- the CRD and bidflow's manifests -----------------------------------------------------------------------------


def test_the_operators_crd_applies_and_is_served(spark_crd_installed: float, kube: Tools) -> None:
    assert spark_crd_installed < SERVED_WITHIN_S
    names = kube.run("kubectl", "api-resources", "--api-group=sparkoperator.k8s.io", "-o", "name").stdout.split()
    assert "sparkapplications.sparkoperator.k8s.io" in names


@pytest.mark.parametrize("step", sa.STEPS)
def test_every_steps_manifest_is_stored_as_rendered(
    spark_crd_installed: float, apiserver: ApiServer, namespace: str, step: str
) -> None:
    """Stored unchanged: the server prunes fields its schema does not know, so nothing pruned = every field known."""
    manifest = render(step, SparkKubernetesConfig(namespace=namespace, retries=1))
    stored = custom(apiserver.client).create_namespaced_custom_object(
        sa.GROUP, sa.VERSION, namespace, sa.PLURAL, manifest
    )
    assert stored["spec"] == manifest["spec"]
    assert stored["metadata"]["labels"] == manifest["metadata"]["labels"]


def test_the_server_enforces_the_crd(spark_crd_installed: float, apiserver: ApiServer, namespace: str) -> None:
    api = custom(apiserver.client)
    for path, value in (("cores", "two"), ("cores", 0)):
        manifest = render("train", SparkKubernetesConfig(namespace=namespace))
        manifest["spec"]["driver"][path] = value
        with pytest.raises(ApiException) as invalid:
            api.create_namespaced_custom_object(sa.GROUP, sa.VERSION, namespace, sa.PLURAL, manifest)
        assert invalid.value.status == 422 and "spec.driver.cores" in invalid.value.body
    manifest = render("train", SparkKubernetesConfig(namespace=namespace))
    del manifest["spec"]["mainApplicationFile"]
    with pytest.raises(ApiException) as missing:
        api.create_namespaced_custom_object(sa.GROUP, sa.VERSION, namespace, sa.PLURAL, manifest)
    assert missing.value.status == 422 and "mainApplicationFile" in missing.value.body


@pytest.fixture
def namespace(apiserver: ApiServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-spark-{request.node.name[:24].lower().replace('_', '-').replace('[', '-').strip('-]')}"
    name = f"{name.rstrip('-')}-{time.monotonic_ns() % 100000}"
    core = client.CoreV1Api(apiserver.client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


# --- the chart's account and RBAC ------------------------------------------------------------------------------


def test_the_chart_grants_the_runner_sparkapplications_and_the_driver_its_pods(
    release: str, apiserver: ApiServer
) -> None:
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{release}", "system:authenticated"]

    def allowed(account: str, verb: str, resource: str, group: str = "", ns: str = release) -> bool:
        return can(apiserver, f"system:serviceaccount:{release}:{account}", groups, ns, verb, resource, group)

    core = client.CoreV1Api(apiserver.client)
    spark = core.read_namespaced_service_account("bidflow-spark", release)
    assert spark.metadata.annotations["eks.amazonaws.com/role-arn"].endswith(":role/bidflow-spark")
    for verb in ("create", "get", "watch", "delete"):
        assert allowed(RUNNER, verb, "sparkapplications", sa.GROUP), verb
        assert allowed("bidflow-spark", verb, "pods"), verb
    assert allowed(RUNNER, "create", "configmaps")
    assert not allowed(RUNNER, "patch", "sparkapplications", sa.GROUP)
    assert not allowed(RUNNER, "create", "sparkapplications", sa.GROUP, ns="default"), "its namespace only"
    for account in (RUNNER, "bidflow-spark"):
        assert not allowed(account, "get", "secrets"), account
        assert not allowed(account, "patch", "inferenceservices", "serving.kserve.io"), account
    assert not allowed("bidflow-spark", "create", "sparkapplications", sa.GROUP), "jobs do not start jobs"


# --- submit and wait, as the pipeline runner -------------------------------------------------------------------


class Operator:
    """Plays the Spark Operator's part: finds the application the submitter created and writes its status."""

    def __init__(self, apiserver: ApiServer, namespace: str) -> None:
        self.api = custom(apiserver.client)
        self.namespace = namespace

    def created(self, submitter: Future[Any], within_s: float = 20.0) -> dict[str, Any]:
        """The one application in the namespace, once the submitter has created it (its own error if it failed)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            items = self.api.list_namespaced_custom_object(sa.GROUP, sa.VERSION, self.namespace, sa.PLURAL)["items"]
            if items:
                (app,) = items
                return dict(app)
            if submitter.done():
                submitter.result()  # raises what stopped the submitter before it created anything
            time.sleep(0.05)
        pytest.fail("the submitter created no SparkApplication")

    def set_state(self, name: str, state: str, error: str = "") -> None:
        status: dict[str, Any] = {"applicationState": {"state": state}, "driverInfo": {"podName": f"{name}-driver"}}
        if error:
            status["applicationState"]["errorMessage"] = error
        self.api.patch_namespaced_custom_object_status(
            sa.GROUP, sa.VERSION, self.namespace, sa.PLURAL, name, {"status": status}
        )


def submitting(apiserver: ApiServer, namespace: str, step: str, folder: Path, **kwargs: Any) -> Future[SparkRun]:
    """Start submit_and_wait in a thread, as the pipeline runner's account, polling fast."""
    pool = ThreadPoolExecutor(max_workers=1)
    runner = as_account(apiserver, namespace, RUNNER, folder)
    arguments = {"image": IMAGE, "spark_version": "4.3.0", "run_id": f"{step}-{time.monotonic_ns()}", "poll_s": 0.1}
    future = pool.submit(submit_and_wait, runner, step, S3_CONFIG, settings_in(namespace), **(arguments | kwargs))
    pool.shutdown(wait=False)
    return future


def test_submit_waits_for_completed_and_leaves_an_owned_configmap(
    release: str, apiserver: ApiServer, tmp_path: Path
) -> None:
    operator = Operator(apiserver, release)
    future = submitting(apiserver, release, "features", tmp_path)
    app = operator.created(future)
    name = app["metadata"]["name"]
    assert app["spec"]["arguments"] == ["features", "--config", "/etc/bidflow/bidflow.yaml"]
    assert app["spec"]["hadoopConf"]["fs.s3a.aws.credentials.provider"] == sa.S3A_CREDENTIALS_PROVIDER
    assert app["spec"]["driver"]["serviceAccount"] == "bidflow-spark"
    for state in ("SUBMITTED", "RUNNING"):
        operator.set_state(name, state)
        time.sleep(0.3)
        assert not future.done(), f"returned while {state}"
    operator.set_state(name, "COMPLETED")
    run = future.result(timeout=20)
    assert (run.name, run.namespace, run.state) == (name, release, "COMPLETED")

    config_map = client.CoreV1Api(apiserver.client).read_namespaced_config_map(f"{name}-config", release)
    (owner,) = config_map.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("SparkApplication", name, app["metadata"]["uid"])
    stored = yaml.safe_load(config_map.data["bidflow.yaml"])
    assert stored["paths"]["raw"] == "s3://bidflow-data/raw" and stored["spark"]["master"] == sa.IN_CLUSTER_MASTER


@pytest.mark.parametrize("state", ["FAILED", "SUBMISSION_FAILED"])
def test_a_failed_run_raises_with_the_operators_message_and_the_driver_pod(
    release: str, apiserver: ApiServer, state: str, tmp_path: Path
) -> None:
    operator = Operator(apiserver, release)
    future = submitting(apiserver, release, "train", tmp_path)
    name = operator.created(future)["metadata"]["name"]
    operator.set_state(name, "RUNNING")
    operator.set_state(name, state, error="driver container failed with ExitCode: 1, Reason: Error")
    with pytest.raises(EngineError) as failed:
        future.result(timeout=20)
    message = str(failed.value)
    assert f"Spark job {name} ended {state}" in message
    assert "driver container failed with ExitCode: 1" in message
    assert f"kubectl logs -n {release} {name}-driver" in message


def test_a_run_no_operator_picks_up_times_out_and_is_deleted(
    release: str, apiserver: ApiServer, tmp_path: Path
) -> None:
    operator = Operator(apiserver, release)
    future = submitting(apiserver, release, "train", tmp_path, timeout_s=2.0)
    name = operator.created(future)["metadata"]["name"]
    with pytest.raises(EngineError) as late:
        future.result(timeout=20)
    assert "did not finish within 2s" in str(late.value) and "NEW" in str(late.value)
    assert "no Spark Operator watches this namespace" in str(late.value)
    with pytest.raises(ApiException) as gone:
        operator.api.get_namespaced_custom_object(sa.GROUP, sa.VERSION, release, sa.PLURAL, name)
    assert gone.value.status == 404


def test_an_account_without_the_role_gets_a_clear_refusal(release: str, apiserver: ApiServer, tmp_path: Path) -> None:
    stranger = as_account(apiserver, release, "bidflow-ctr", tmp_path)
    with pytest.raises(EngineError) as refused:
        submit_and_wait(stranger, "train", "", settings_in(release), image=IMAGE, spark_version="4.3.0", run_id="x")
    assert "403" in str(refused.value) and "sparkOperator.pipelineRunner" in str(refused.value)


def test_an_application_whose_configmap_is_refused_is_deleted(
    release: str, apiserver: ApiServer, tmp_path: Path
) -> None:
    """An account that may create SparkApplications but not ConfigMaps: no application is left without its config."""
    rbac = client.RbacAuthorizationV1Api(apiserver.client)
    rule = client.V1PolicyRule(api_groups=[sa.GROUP], resources=[sa.PLURAL], verbs=["create", "get", "delete"])
    rbac.create_namespaced_role(release, client.V1Role(metadata=client.V1ObjectMeta(name="half"), rules=[rule]))
    client.CoreV1Api(apiserver.client).create_namespaced_service_account(
        release, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="half"))
    )
    binding = client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="half"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="half"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="half", namespace=release)],
    )
    rbac.create_namespaced_role_binding(release, binding)
    half = as_account(apiserver, release, "half", tmp_path)
    with pytest.raises(EngineError, match="refused ConfigMap"):
        submit_and_wait(half, "train", "", settings_in(release), image=IMAGE, spark_version="4.3.0", run_id="y")
    left = custom(apiserver.client).list_namespaced_custom_object(sa.GROUP, sa.VERSION, release, sa.PLURAL)["items"]
    assert left == []


def test_a_missing_namespace_or_crd_is_a_clear_refusal(spark_crd_installed: float, apiserver: ApiServer) -> None:
    settings = SparkKubernetesConfig(namespace="no-such-namespace")
    with pytest.raises(EngineError) as refused:
        submit_and_wait(apiserver.client, "train", "", settings, image=IMAGE, spark_version="4.3.0", run_id="x")
    assert "404" in str(refused.value) and "is the Spark Operator installed" in str(refused.value)


def test_a_deleted_application_stops_the_wait(release: str, apiserver: ApiServer, tmp_path: Path) -> None:
    operator = Operator(apiserver, release)
    future = submitting(apiserver, release, "features", tmp_path)
    name = operator.created(future)["metadata"]["name"]
    operator.set_state(name, "RUNNING")
    operator.api.delete_namespaced_custom_object(sa.GROUP, sa.VERSION, release, sa.PLURAL, name)
    with pytest.raises(EngineError, match="disappeared while running"):
        future.result(timeout=20)


def test_the_component_reads_spark_kubernetes_and_returns_the_applications_name(
    release: str, apiserver: ApiServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The KFP component's body as a task runs it, with the runner's token: config text in, the name out."""
    from bidflow.components.submit_spark_job import submit_spark_job

    monkeypatch.setenv("KUBECONFIG", str(account_kubeconfig(apiserver, release, RUNNER, tmp_path)))
    text = f"spark:\n  kubernetes:\n    namespace: {release}\n    executor:\n      instances: 3\n{S3_CONFIG}"
    operator = Operator(apiserver, release)
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(
        submit_spark_job.python_func, step="training-set", config=text, kind="bid_filter",
        out="s3://bidflow-data/training-sets/run-1", image=IMAGE, timeout_s=60.0,
    )  # fmt: skip
    pool.shutdown(wait=False)
    app = operator.created(future)
    assert app["spec"]["executor"]["instances"] == 3 and app["spec"]["image"] == IMAGE
    assert app["spec"]["arguments"] == [
        "training-set", "--config", "/etc/bidflow/bidflow.yaml",
        "--kind", "bid_filter", "--out", "s3://bidflow-data/training-sets/run-1",
    ]  # fmt: skip
    operator.set_state(app["metadata"]["name"], "COMPLETED")
    assert future.result(timeout=30) == app["metadata"]["name"]
