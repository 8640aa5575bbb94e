"""The KServe backend against a real kube-apiserver 1.20.2 on 127.0.0.1, with the CRD generated from the kserve SDK.

Every call is real HTTP through the official ``kubernetes`` client: creates, JSON merge patches carrying a
resourceVersion, the apiserver's own 409/403/404 answers. No mocks.

What this cannot show (no KServe controller, webhook or Knative here): that the traffic really splits, that a
revision becomes ready, what KServe writes into ``status``. Readiness is exercised by writing ``status`` through the
status subresource the way KServe's controller would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from bidflow.deploy.backend import DeploymentState, ModelVersion
from bidflow.deploy.canary import Controller
from bidflow.deploy.crd import CRD_NAME, GROUP, PLURAL, VERSION
from bidflow.deploy.journal import Transition
from bidflow.deploy.kserve import (
    CANARY_ANNOTATION,
    CHAMPION_ANNOTATION,
    LOG_LIMIT,
    ROLLED_BACK_ANNOTATION,
    TRANSITIONS_ANNOTATION,
    InferenceServiceLog,
    KServeBackend,
)
from bidflow.deploy.kserve_spec import MODEL_VERSION_LABEL
from bidflow.deploy.validation import validate_inference_service
from bidflow.errors import ConflictError, DeploymentError
from tests.k8s.cluster import ApiServer, free_port

# As test_apiserver.py: the session fixture may build kube-apiserver first (minutes, once per machine).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

NAME = "bid-filter"
IMAGE = "bidflow/serving:0.1.0"
MONITOR = "http://bidflow-monitor.bidflow.svc.cluster.local:8090/"
CRD_SERVED_WITHIN_S = 15.0


def version(n: int) -> ModelVersion:
    return ModelVersion("bid_filter", str(n), f"s3://bidflow-models/bid_filter/{n}")


V7, V8, V9 = version(7), version(8), version(9)


@pytest.fixture(scope="module")
def crd_served(apiserver: ApiServer, crd_file: Path) -> None:
    """The generated CRD, created through the Python client (or already there from test_apiserver.py), served."""
    extensions = client.ApiextensionsV1Api(apiserver.client)
    try:
        extensions.create_custom_resource_definition(json.loads(crd_file.read_text(encoding="utf-8")))
    except ApiException as exc:
        if exc.status != 409:
            raise
    api = client.CustomObjectsApi(apiserver.client)
    started = time.monotonic()
    while True:
        try:
            api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            return
        except ApiException as exc:
            if time.monotonic() - started > CRD_SERVED_WITHIN_S:
                pytest.fail(f"{CRD_NAME} not served {CRD_SERVED_WITHIN_S}s after it was created: {exc.status}")
        time.sleep(0.25)


@pytest.fixture
def namespace(apiserver: ApiServer, crd_served: None, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"kb-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{time.monotonic_ns() % 100000}"
    core = client.CoreV1Api(apiserver.client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def backend(apiserver: ApiServer, namespace: str) -> KServeBackend:
    return KServeBackend(
        apiserver.client, namespace=namespace, name=NAME, image=IMAGE, service_account="bidflow-bid-filter",
        monitor_url=MONITOR,
    )  # fmt: skip


def stored(apiserver: ApiServer, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = client.CustomObjectsApi(apiserver.client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME
    )
    return found


def storage_uri(obj: dict[str, Any]) -> str:
    env = {e["name"]: e.get("value") for e in obj["spec"]["predictor"]["containers"][0]["env"]}
    return str(env["STORAGE_URI"])


def annotated(obj: dict[str, Any], key: str) -> Any:
    raw = obj["metadata"].get("annotations", {}).get(key)
    return None if raw is None else json.loads(raw)


# --- the life cycle -----------------------------------------------------------------------------------------------


def test_champion_canary_rollback_canary_promote(apiserver: ApiServer, namespace: str, backend: KServeBackend) -> None:
    before = backend.status()
    assert (before.champion, before.canary, before.ready, before.detail["exists"]) == (None, None, False, False)
    for transition in (backend.promote, backend.rollback):
        with pytest.raises(DeploymentError, match="nothing to"):
            transition()

    # First deploy: the champion, all traffic, no canary field.
    state = backend.deploy(V7, 20)
    assert (state.champion, state.canary, state.canary_percent) == (V7, None, 0)
    obj = stored(apiserver, namespace)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert storage_uri(obj) == V7.uri
    assert obj["spec"]["predictor"]["logger"] == {"mode": "all", "url": MONITOR}
    assert annotated(obj, CHAMPION_ANNOTATION) == V7.to_dict()
    assert validate_inference_service(obj) == [], "what the server stored still passes the offline checks"
    # No KServe controller has written a status: readiness is unknown, reported as not ready.
    assert state.ready is False and state.detail["readiness"].startswith("unknown")

    # A canary: new model in the predictor, 20 % to the new revision.
    state = backend.deploy(V8, 20)
    assert (state.champion, state.canary, state.canary_percent) == (V7, V8, 20)
    assert backend.status() == state, "status reads the same state the write returned"
    obj = stored(apiserver, namespace)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert storage_uri(obj) == V8.uri
    assert obj["metadata"]["labels"][MODEL_VERSION_LABEL] == "8"
    assert obj["spec"]["predictor"]["labels"][MODEL_VERSION_LABEL] == "8"
    assert (obj["spec"]["predictor"]["minReplicas"], obj["spec"]["predictor"]["maxReplicas"]) == (1, 3)

    # Rollback: 0 % to the canary, the champion keeps everything, the rejected version is recorded.
    state = backend.rollback()
    assert (state.champion, state.canary, state.canary_percent) == (V7, None, 0)
    assert state.detail["rolled_back"] == ["8"]
    obj = stored(apiserver, namespace)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert CANARY_ANNOTATION not in obj["metadata"]["annotations"]
    assert annotated(obj, ROLLED_BACK_ANNOTATION) == [V8.to_dict()]
    assert backend.rolled_back() == [V8]
    # The spec still names the rejected model at 0 %; it is not promotable.
    assert storage_uri(obj) == V8.uri and state.detail["spec_model"] == V8.to_dict()
    with pytest.raises(DeploymentError, match="nothing to promote"):
        backend.promote()

    # The next canary replaces the rolled-back model in the predictor.
    state = backend.deploy(V9, 30)
    assert (state.champion, state.canary, state.canary_percent) == (V7, V9, 30)
    assert storage_uri(stored(apiserver, namespace)) == V9.uri

    # Promote: the field goes, the canary becomes the champion.
    state = backend.promote()
    assert (state.champion, state.canary, state.canary_percent) == (V9, None, 0)
    obj = stored(apiserver, namespace)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert annotated(obj, CHAMPION_ANNOTATION) == V9.to_dict()
    assert CANARY_ANNOTATION not in obj["metadata"]["annotations"]
    assert annotated(obj, ROLLED_BACK_ANNOTATION) == [V8.to_dict()], "history survives the promotion"
    assert validate_inference_service(obj) == []

    with pytest.raises(DeploymentError, match="already the champion"):
        backend.deploy(V9, 20)


def test_deploy_while_a_canary_is_live_is_refused_and_changes_nothing(
    apiserver: ApiServer, namespace: str, backend: KServeBackend
) -> None:
    backend.deploy(V7, 20)
    backend.deploy(V8, 20)
    before = stored(apiserver, namespace)
    with pytest.raises(DeploymentError, match=r"canary \(v8\) is already live at 20 %") as refused:
        backend.deploy(V9, 50)
    assert "promote it or roll it back first" in (refused.value.hint or "")
    assert stored(apiserver, namespace)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    with pytest.raises(DeploymentError, match="between 0 and 100"):
        backend.deploy(V9, 101)


def test_an_inference_service_bidflow_did_not_create_is_not_taken_over(
    apiserver: ApiServer, namespace: str, backend: KServeBackend
) -> None:
    from bidflow.deploy.kserve_spec import inference_service

    foreign = inference_service(NAME, namespace, V7, image=IMAGE)  # as the chart would: no bookkeeping annotations
    client.CustomObjectsApi(apiserver.client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, foreign
    )
    assert backend.status().champion is None
    with pytest.raises(DeploymentError, match="not created by bidflow"):
        backend.deploy(V8, 20)


# --- optimistic concurrency ---------------------------------------------------------------------------------------


def test_a_write_based_on_a_stale_read_is_a_conflict(
    apiserver: ApiServer, namespace: str, backend: KServeBackend
) -> None:
    backend.deploy(V7, 20)
    backend.deploy(V8, 20)
    seen = backend.status()  # e.g. the monitor decides on this state...
    # ...while someone else changes the InferenceService behind the backend's back.
    client.CustomObjectsApi(apiserver.client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME, {"spec": {"predictor": {"canaryTrafficPercent": 50}}}
    )
    with pytest.raises(ConflictError) as conflict:
        backend.rollback(resource_version=seen.detail["resourceVersion"])
    assert "someone else changed the InferenceService" in conflict.value.what
    assert "re-run" in (conflict.value.hint or "")
    assert "HTTP 409" in (conflict.value.got or "")
    obj = stored(apiserver, namespace)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 50, "the other writer's change stands"
    assert annotated(obj, CANARY_ANNOTATION) == V8.to_dict(), "nothing of the refused rollback was applied"


def test_two_deciders_on_one_state_only_the_first_wins(
    apiserver: ApiServer, namespace: str, backend: KServeBackend
) -> None:
    """The CLI promotes while the monitor rolls back, both having read the same state."""
    backend.deploy(V7, 20)
    backend.deploy(V8, 20)
    cli = KServeBackend(apiserver.client, namespace=namespace, name=NAME, image=IMAGE)
    seen_by_cli = cli.status().detail["resourceVersion"]
    seen_by_monitor = backend.status().detail["resourceVersion"]
    assert seen_by_cli == seen_by_monitor
    backend.rollback(resource_version=seen_by_monitor)
    with pytest.raises(ConflictError) as conflict:
        cli.promote(resource_version=seen_by_cli)
    # The CLI's decision was based on a state that no longer holds: a conflict, not "nothing to promote".
    assert "nothing to promote" in (conflict.value.got or "")
    state = cli.status()
    assert (state.champion, state.canary) == (V7, None)


def test_the_controller_patches_against_the_state_it_checked(
    apiserver: ApiServer, namespace: str, backend: KServeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback decided on canary v8 cannot hit v9: the controller's read and its patch are one compare-and-set.

    Before, the controller checked a canary was live, then the backend re-read and patched against that later read,
    so a promotion and a new deploy in between were rolled back instead.
    """
    controller = Controller(backend, InferenceServiceLog(backend))
    controller.deploy(V7, 20, actor="ci")
    controller.deploy(V8, 20, actor="ci")
    seen = controller.status()
    other_backend = KServeBackend(apiserver.client, namespace=namespace, name=NAME, image=IMAGE)
    other = Controller(other_backend, InferenceServiceLog(other_backend))
    reads = 0
    get = backend._isvc.get

    def racing_get() -> dict[str, Any] | None:
        nonlocal reads
        reads += 1
        if reads == 2:  # between the controller's read and the backend's own
            other.promote(actor="ci")
            other.deploy(V9, 20, actor="ci")
        return get()

    monkeypatch.setattr(backend._isvc, "get", racing_get)
    with pytest.raises(ConflictError):
        controller.rollback(actor="monitor")
    monkeypatch.setattr(backend._isvc, "get", get)
    with pytest.raises(ConflictError, match="canary v8"):
        controller.rollback(actor="monitor", expect_canary="8")
    with pytest.raises(ConflictError, match="changed since"):
        controller.rollback(actor="analysis", expect=seen.detail["version"])
    state = controller.status()
    assert (state.champion, state.canary, state.canary_percent) == (V8, V9, 20)
    assert [t.action for t in controller.transitions()] == ["deploy", "deploy", "promote", "deploy"]


def test_the_record_rides_in_the_transitions_own_patch(
    apiserver: ApiServer, namespace: str, backend: KServeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No moment exists where the traffic moved and the log does not say so (or the reverse)."""
    log = InferenceServiceLog(backend)

    def separate_append(_: Transition) -> None:
        raise AssertionError("a transition's record must not be a write of its own")

    monkeypatch.setattr(log, "append", separate_append)
    controller = Controller(backend, log)
    controller.deploy(V7, 20, actor="ci")
    controller.deploy(V8, 20, actor="ci")
    done = controller.rollback(actor="monitor", reasons=["drift"])
    obj = stored(apiserver, namespace)
    assert obj["metadata"]["resourceVersion"] == done.state.detail["resourceVersion"]  # type: ignore[union-attr]
    recorded = annotated(obj, TRANSITIONS_ANNOTATION)
    assert [(r["action"], r["model"]["version"], r["actor"]) for r in recorded] == [
        ("deploy", "7", "ci"), ("deploy", "8", "ci"), ("rollback", "8", "monitor"),
    ]  # fmt: skip
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 0 and annotated(obj, CANARY_ANNOTATION) is None


# --- the transition log on the InferenceService -------------------------------------------------------------------


def transition(n: int, state: DeploymentState | None = None) -> Transition:
    return Transition(
        "deploy", version(n), "cli:tester", (f"reason {n}",), {"p_value": 0.5, "requests": n}, state, at=1000.0 + n
    )


def test_transitions_round_trip_through_the_annotation(
    apiserver: ApiServer, namespace: str, backend: KServeBackend
) -> None:
    log = InferenceServiceLog(backend)
    assert log.read() == []
    with pytest.raises(DeploymentError, match="does not exist"):
        log.append(transition(1))

    state = backend.deploy(V7, 20)
    generation = stored(apiserver, namespace)["metadata"]["generation"]
    first = transition(7, state)
    log.append(first)
    second = Transition("rollback", V8, "monitor", ("drift: p < 0.01",), {"p": 0.001}, backend.status(), at=2000.0)
    log.append(second)
    read = log.read()
    assert [t.to_dict() for t in read] == [first.to_dict(), second.to_dict()]
    assert read[0].state is not None and read[0].state.champion == V7

    obj = stored(apiserver, namespace)
    assert obj["metadata"]["generation"] == generation, "the log changes metadata only, never the spec"
    assert annotated(obj, CHAMPION_ANNOTATION) == V7.to_dict(), "other annotations are kept"
    assert backend.status().champion == V7

    # Bounded: the newest LOG_LIMIT, newest last.
    for n in range(LOG_LIMIT + 5):
        log.append(transition(100 + n))
    kept = log.read()
    assert len(kept) == LOG_LIMIT
    assert [t.model.version for t in kept if t.model] == [str(100 + n) for n in range(5, LOG_LIMIT + 5)]
    assert len(annotated(stored(apiserver, namespace), TRANSITIONS_ANNOTATION)) == LOG_LIMIT


def test_the_log_survives_a_concurrent_writer(apiserver: ApiServer, namespace: str, backend: KServeBackend) -> None:
    """An append re-reads: a change made since the backend's last write is neither lost nor overwritten."""
    backend.deploy(V7, 20)
    log = InferenceServiceLog(backend)
    log.append(transition(1))
    client.CustomObjectsApi(apiserver.client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME, {"metadata": {"labels": {"touched-by": "someone-else"}}}
    )
    log.append(transition(2))
    obj = stored(apiserver, namespace)
    assert obj["metadata"]["labels"]["touched-by"] == "someone-else"
    assert [t.model.version for t in log.read() if t.model] == ["1", "2"]


# --- readiness, as KServe's controller would report it ----------------------------------------------------------


def write_status(apiserver: ApiServer, namespace: str, status: dict[str, Any]) -> None:
    client.CustomObjectsApi(apiserver.client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, NAME, {"status": status}
    )


def test_ready_follows_kserves_ready_condition_for_the_current_generation(
    apiserver: ApiServer, namespace: str, backend: KServeBackend
) -> None:
    backend.deploy(V7, 20)
    generation = stored(apiserver, namespace)["metadata"]["generation"]
    ready = {"type": "Ready", "status": "True"}
    write_status(apiserver, namespace, {"observedGeneration": generation, "conditions": [ready]})
    state = backend.status()
    assert state.ready is True and state.detail["readiness"] == "ready"

    # A canary changes the spec: until KServe has seen the new generation, the old Ready says nothing.
    backend.deploy(V8, 20)
    state = backend.status()
    assert state.ready is False and state.detail["readiness"].startswith("rolling out")

    new_generation = stored(apiserver, namespace)["metadata"]["generation"]
    not_ready = {"type": "Ready", "status": "False", "reason": "RevisionMissing"}
    write_status(apiserver, namespace, {"observedGeneration": new_generation, "conditions": [not_ready]})
    state = backend.status()
    assert state.ready is False and state.detail["readiness"] == "not ready: RevisionMissing"


# --- refusals that must read as errors, not tracebacks --------------------------------------------------------------


def impersonating(apiserver: ApiServer, user: str) -> Any:
    api_client = config.new_client_from_config(config_file=str(apiserver.kubeconfig))
    api_client.set_default_header("Impersonate-User", user)
    return api_client


def test_the_rollback_controllers_rbac_is_enough_to_roll_back_and_record(
    apiserver: ApiServer, namespace: str, backend: KServeBackend
) -> None:
    """get/list/watch/patch on inferenceservices (the chart's Role) lets the monitor roll back and log; no more."""
    rbac = client.RbacAuthorizationV1Api(apiserver.client)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "rollback"},
        "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]}],
    })  # fmt: skip
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "rollback"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rollback"},
        "subjects": [{"kind": "ServiceAccount", "name": "monitor", "namespace": namespace}],
    })  # fmt: skip
    monitor_client = impersonating(apiserver, f"system:serviceaccount:{namespace}:monitor")
    stranger_client = impersonating(apiserver, f"system:serviceaccount:{namespace}:stranger")
    try:
        monitor = KServeBackend(monitor_client, namespace=namespace, name=NAME, image=IMAGE)
        with pytest.raises(DeploymentError) as no_create:
            monitor.deploy(V7, 20)
        assert "not allowed to create inferenceservices.serving.kserve.io" in no_create.value.what
        assert f"kubectl auth can-i create inferenceservices.serving.kserve.io -n {namespace}" in (
            no_create.value.hint or ""
        )

        backend.deploy(V7, 20)
        backend.deploy(V8, 20)
        state = monitor.rollback()
        assert (state.champion, state.canary, state.canary_percent) == (V7, None, 0)
        InferenceServiceLog(monitor).append(Transition("rollback", V8, "monitor", ("drift",), {}, state))
        assert [t.actor for t in InferenceServiceLog(backend).read()] == ["monitor"]

        stranger = KServeBackend(stranger_client, namespace=namespace, name=NAME, image=IMAGE)
        with pytest.raises(DeploymentError) as no_get:
            stranger.status()
        assert "not allowed to get" in no_get.value.what and "HTTP 403" in (no_get.value.got or "")
    finally:
        monitor_client.close()
        stranger_client.close()


def test_a_missing_namespace_is_named(apiserver: ApiServer, crd_served: None) -> None:
    backend = KServeBackend(apiserver.client, namespace="no-such-namespace", name=NAME, image=IMAGE)
    assert backend.status().champion is None
    with pytest.raises(DeploymentError, match="namespace no-such-namespace does not exist"):
        backend.deploy(V7, 20)


def test_an_unreachable_apiserver_is_an_error_not_a_traceback() -> None:
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{free_port()}"
    configuration.retries = 0
    api_client = client.ApiClient(configuration)
    try:
        backend = KServeBackend(api_client, namespace="bidflow", name=NAME, image=IMAGE, timeout_s=5)
        with pytest.raises(DeploymentError, match="cannot reach the Kubernetes API") as unreachable:
            backend.status()
        assert configuration.host in (unreachable.value.where or "")
    finally:
        api_client.close()


def test_from_config_uses_the_kubeconfig_outside_a_cluster(
    apiserver: ApiServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bidflow.config import CanaryConfig

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: in-cluster config must not apply
    monkeypatch.setenv("KUBECONFIG", str(apiserver.kubeconfig))
    backend = KServeBackend.from_config(CanaryConfig(backend="kserve", namespace=namespace), IMAGE)
    try:
        assert (backend.kind, backend.namespace, backend.name) == ("kserve", namespace, "bid-filter")
        assert backend.deploy(V7, 20).champion == V7
        assert stored(apiserver, namespace)["spec"]["predictor"]["containers"][0]["image"] == IMAGE
    finally:
        backend.api_client.close()


# --- taking over from the chart -------------------------------------------------------------------------------


def test_the_backend_takes_over_the_inference_service_the_chart_installed(
    apiserver: ApiServer, namespace: str, kube: Any, backend: KServeBackend
) -> None:
    """helm installs the bid filter with bidFilter.modelVersion; `bidflow canary --backend kserve` carries on."""
    import yaml

    from tests.conftest import REPO

    rendered = kube.run(
        "helm", "template", "bidflow", str(REPO / "helm" / "bidflow"), "--namespace", namespace,
        "--set", "bidFilter.storageUri=s3://bidflow-models/bid_filter/1", "--set-string", "bidFilter.modelVersion=1",
    ).stdout  # fmt: skip
    (isvc,) = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "InferenceService" and d["metadata"]["name"] == NAME
    ]
    client.CustomObjectsApi(apiserver.client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, isvc)

    installed = ModelVersion("bid_filter", "1", "s3://bidflow-models/bid_filter/1")
    assert backend.status().champion == installed
    state = backend.deploy(V8, 20)
    assert (state.champion, state.canary, state.canary_percent) == (installed, V8, 20)
    state = backend.rollback()
    assert (state.champion, state.canary, state.canary_percent) == (installed, None, 0)
