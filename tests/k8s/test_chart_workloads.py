"""The chart's workloads started as local processes, exactly as the installed chart specifies them, and serving.

No kubelet runs here, so a pod that can never become ready (a feature store nobody configured, a Secret key nobody
mounted) would otherwise pass every other test: the manifests are valid and the apiserver accepts them. This test
installs the chart into the test kube-apiserver, reads back what Helm applied, and starts every workload's container
(the feature server and drift monitor Deployments, the bid-filter and CTR InferenceService predictors) as a process
with exactly its env, args and mounted ConfigMaps and Secrets (``tests/k8s/pods.py``: paths remapped, images mapped
to the local environments their locks describe), against Redis and PostgreSQL on 127.0.0.1. Each must pass its
readinessProbe and answer one real request:

* the bid filter: a logged OpenRTB auction, scored with online features read from Redis (no fail-open);
* CTR: iPinYou impressions, scored as the training path scores them;
* the feature server: the ``bid_filter`` FeatureService's online features for that auction's entities;
* the drift monitor: the bid filter's request and response as KServe's payload logger sends them (CloudEvents to the
  logger URL of the rendered InferenceService, with its token), attributed to the champion by the version the server
  reports and the InferenceService the monitor reads with its own ServiceAccount's token.

What an operator does before the install is done here too: the feature definitions are applied to a fresh
PostgreSQL registry and materialized into Redis (database 12, a project of its own, its keys removed afterwards), the
models are saved on the "claim" the chart's pvc:// URIs name, and the Secret `bidflow-feast` holds the connection
strings. Pods, KServe's controller and its storage initializer, Knative and the network stay unexercised.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from bidflow.config import Config, FeaturesConfig
from bidflow.openrtb import decode_request_obj
from bidflow.openrtb.features import request_features
from tests.conftest import SHARED_DATA
from tests.integration.serving.conftest import bid_filter_views, bid_logs, bid_parquet, feast_model
from tests.k8s.cluster import REPO, ApiServer, Tools, _write_kubeconfig, free_port
from tests.k8s.pods import Workload, decoded, workload
from tests.k8s.test_kserve_backend import crd_served

__all__ = ["bid_logs", "bid_parquet", "crd_served", "feast_model"]  # fixtures, shared with other modules

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

CHART = REPO / "helm" / "bidflow"
REDIS_DB = 12  # this module only
READY_WITHIN_S = 300.0  # four Python servers importing kserve, feast and mlflow at once on a shared machine
CTR_SAMPLE = SHARED_DATA / "ipinyou_2997_sample" / "train.csv.gz"


@pytest.fixture(scope="module")
def feature_store(
    feast_model: Any, redis_url: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The bid filter's features in a fresh PostgreSQL registry and in Redis: the Secret's keys, and the project."""
    import psycopg
    import redis

    from bidflow.features import store as feast_store

    name = f"bidflow_workloads_{uuid.uuid4().hex[:10]}"
    project = name
    dsn = urlparse(postgres_dsn)
    redis_target = urlparse(redis_url)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    secret = {
        "BIDFLOW_FEAST_REGISTRY_URL": f"postgresql+psycopg://{dsn.username}@{dsn.hostname}:{dsn.port or 5432}/{name}",
        "BIDFLOW_FEAST_REDIS": f"{redis_target.hostname}:{redis_target.port or 6379},db={REDIS_DB}",
    }
    local = feast_model.config("local").features
    cfg = FeaturesConfig(repo=REPO / "feature_repo", environment="production", offline=local.offline, project=project)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in secret.items():
            patch.setenv(key, value)
        store = feast_store.open_store(cfg)
        feast_store.apply(store, cfg)
        views = bid_filter_views(store)
        end = pd.Timestamp.now(tz="UTC").to_pydatetime()
        # The logs' hours, whatever day they are on: from well before the first to the end of the last.
        feast_store.materialize(store, end - timedelta(days=3650), end, views)
    try:
        yield secret | {"project": project}
    finally:
        keys = redis.Redis(host=redis_target.hostname or "127.0.0.1", port=redis_target.port or 6379, db=REDIS_DB)
        stale = [key for key in keys.scan_iter(count=1000) if key.endswith(project.encode())]
        if stale:
            keys.delete(*stale)
        keys.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def claim(feast_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PersistentVolumeClaim `bidflow-models` of values.yaml: the bid filter, the CTR model, the detector folder."""
    from bidflow.modeling import ctr, inputs, registry, train
    from bidflow.modeling.train import save_model
    from tests.unit.modeling.conftest import QUICK

    root = tmp_path_factory.mktemp("claim-bidflow-models")
    _, bid_filter = registry.load(feast_model.config("local").registry, "bid_filter", "candidate")
    save_model(bid_filter, root / "bid-filter")
    if not CTR_SAMPLE.is_file():
        pytest.fail(f"the iPinYou sample is not at {CTR_SAMPLE}: clone the project with ../shared beside it")
    rows = ctr.read_ipinyou_impressions(CTR_SAMPLE, Config().features.ctr_day)
    training, _ = inputs.split_holdout(rows, 1)
    save_model(train.fit(training, ctr.ipinyou_spec(), QUICK.model_copy(update={"min_category_count": 10})),
               root / "ctr")  # fmt: skip
    rows.tail(50).to_parquet(root / "ctr-requests.parquet")  # the held-out hour, for the request below
    # The monitor reads a version's detector when a window of payloads is full, which one request never fills.
    (root / "detector").mkdir()
    return root


@pytest.fixture(scope="module")
def installed(
    kube: Tools, apiserver: ApiServer, crd_served: None, feature_store: dict[str, str]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The chart installed with values.yaml and test ports into a fresh namespace: (namespace, what Helm applied)."""
    namespace = f"workloads-{time.monotonic_ns() % 100000}"
    core = client.CoreV1Api(apiserver.client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    # What the operator creates before the install (values.yaml: featureStore.secret).
    keys = {key: value for key, value in feature_store.items() if key != "project"}
    core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="bidflow-feast"),
                                                             string_data=keys))  # fmt: skip
    ports = {
        "featureStore.project": feature_store["project"],
        "featureServer.port": free_port(),
        "bidFilter.runtime.port": free_port(),
        "ctr.runtime.port": free_port(),
        "monitor.port": free_port(),
    }
    settings = [arg for key, value in ports.items() for arg in ("--set", f"{key}={value}")]
    kube.run("helm", "install", "bidflow", str(CHART), "--namespace", namespace, *settings)
    manifest = kube.run("helm", "get", "manifest", "bidflow", "--namespace", namespace).stdout
    yield namespace, [doc for doc in yaml.safe_load_all(manifest) if doc]
    kube.run("helm", "uninstall", "bidflow", "--namespace", namespace, check=False)
    core.delete_namespace(namespace)


@pytest.fixture(scope="module")
def running(
    installed: tuple[str, list[dict[str, Any]]],
    apiserver: ApiServer,
    claim: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Workload]]:
    """Every workload of the installed chart as a local process, each past its readinessProbe."""
    namespace, docs = installed
    core = client.CoreV1Api(apiserver.client)
    root = tmp_path_factory.mktemp("pods")

    def objects(kind: str, name: str) -> dict[str, str]:
        try:
            if kind == "Secret":
                secret = core.read_namespaced_secret(name, namespace)
                return decoded(secret.data, secret.string_data)
            return dict(core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as exc:
            if exc.status == 404:
                raise KeyError(name) from exc
            raise

    def kubeconfig(account: str) -> Path:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=["https://kubernetes.default.svc"], expiration_seconds=3600)
        )
        token = core.create_namespaced_service_account_token(account, namespace, request).status.token
        return _write_kubeconfig(root / f"kubeconfig-{account}", apiserver.url, apiserver.ca_file, token)

    workloads = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "InferenceService"):
            folder = root / doc["metadata"]["name"]
            folder.mkdir()
            workloads[doc["metadata"]["name"]] = workload(
                doc, folder, objects=objects, namespace=namespace, claims={"bidflow-models": claim},
                kubeconfig=kubeconfig,
            )  # fmt: skip
    assert sorted(workloads) == ["bid-filter", "bidflow-feature-server", "bidflow-monitor", "ctr"]
    try:
        for started in workloads.values():
            started.start()
        for ready in workloads.values():
            _wait_ready(ready)
        yield workloads
    finally:
        for stopped in workloads.values():
            stopped.stop()


def _wait_ready(process: Workload) -> None:
    """Poll the readinessProbe's URL until it answers 200; fail with the log if the process exits or time runs out."""
    assert process.readiness, f"{process.name} has no readinessProbe"
    deadline = time.monotonic() + READY_WITHIN_S
    last = "no answer"
    while time.monotonic() < deadline:
        assert process.process is not None
        if process.process.poll() is not None:
            pytest.fail(f"{process.name} exited ({process.process.returncode}):\n{process.output()}")
        try:
            answer = httpx.get(process.readiness, timeout=3)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:500]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    pytest.fail(f"{process.name} not ready after {READY_WITHIN_S:.0f} s ({process.readiness}: {last}):\n"
                f"{process.output()}")  # fmt: skip


def _auction(bid_logs: list[dict[str, Any]]) -> dict[str, Any]:
    """One auction of the held-out hour that several partners were called for."""
    last = max(r["ts_ms"] for r in bid_logs) // 3_600_000
    return next(r for r in bid_logs if r["ts_ms"] // 3_600_000 == last and len(r["outcomes"]) >= 3)


def _base(process: Workload, port: str) -> str:
    return f"http://127.0.0.1:{process.ports[port]}"


def _isvc(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == "InferenceService" and d["metadata"]["name"] == name]
    return found


def test_the_bid_filter_predictor_scores_an_auction_with_online_features(
    running: dict[str, Workload], installed: tuple[str, list[dict[str, Any]]], bid_logs: list[dict[str, Any]]
) -> None:
    server = running["bid-filter"]
    port = str(_isvc(installed[1], "bid-filter")["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"])
    record = _auction(bid_logs)
    partners = [o["partner"] for o in record["outcomes"]]
    body = {"instances": [{"request": record["request"], "partners": partners, "ts_ms": record["ts_ms"]}]}
    answer = httpx.post(f"{_base(server, port)}/v1/models/bid-filter:predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    # The online store answered (Redis, no fail-open), and the server reports the version the chart installed.
    assert "online features: redis" in server.output(chars=100_000)
    assert prediction["fail_open"] is False, server.output()
    assert prediction["model_version"] == "1"
    assert [d["partner"] for d in prediction["decisions"]] == partners
    assert all(0.0 <= d["score"] <= 1.0 for d in prediction["decisions"])


def test_the_ctr_predictor_scores_impressions(
    running: dict[str, Workload], installed: tuple[str, list[dict[str, Any]]], claim: Path
) -> None:
    from bidflow.modeling.train import load_model

    server = running["ctr"]
    port = str(_isvc(installed[1], "ctr")["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"])
    model = load_model(claim / "ctr")
    frame = pd.read_parquet(claim / "ctr-requests.parquet")
    records = frame[list(model.spec.names)].to_dict("records")
    instances = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]
    answer = httpx.post(f"{_base(server, port)}/v1/models/ctr:predict", json={"instances": instances}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["fail_open"] is False
    np.testing.assert_allclose(body["predictions"], model.predict(frame), atol=1e-5, rtol=0)


def test_the_feature_server_answers_the_bid_filter_feature_service(
    running: dict[str, Workload], bid_logs: list[dict[str, Any]]
) -> None:
    record = _auction(bid_logs)
    features = request_features(decode_request_obj(record["request"]), record["ts_ms"])
    partners = [o["partner"] for o in record["outcomes"]]
    entities = {
        "partner": partners,
        "publisher_id": [features.publisher_id] * len(partners),
        "country": [features.country] * len(partners),
        "format": [features.format] * len(partners),
        "device_type": [int(features.device_type)] * len(partners),
    }
    body = {"feature_service": "bid_filter", "entities": entities, "full_feature_names": True}
    answer = httpx.post(f"{_base(running['bidflow-feature-server'], 'http')}/get-online-features", json=body,
                        timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    statuses = [status for result in answer.json()["results"] for status in result["statuses"]]
    assert "PRESENT" in statuses, "every feature was missing: the feature server reads another store"


def test_the_monitor_takes_the_bid_filter_payloads_from_its_logger_url(
    running: dict[str, Workload], installed: tuple[str, list[dict[str, Any]]], bid_logs: list[dict[str, Any]]
) -> None:
    """What KServe's payload logger would send: the request and the response, as CloudEvents, to the logger URL."""
    namespace, docs = installed
    predictor = _isvc(docs, "bid-filter")["spec"]["predictor"]
    port = str(predictor["containers"][0]["ports"][0]["containerPort"])
    record = _auction(bid_logs)
    partners = [o["partner"] for o in record["outcomes"]]
    request = {"instances": [{"request": record["request"], "partners": partners, "ts_ms": record["ts_ms"]}]}
    response = httpx.post(f"{_base(running['bid-filter'], port)}/v1/models/bid-filter:predict", json=request,
                          timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text

    # The logger URL names the monitor's Service: send to the monitor process on the port the Service targets.
    logger = urlparse(predictor["logger"]["url"])
    service_name, service_namespace = logger.hostname.split(".")[:2]  # type: ignore[union-attr]
    assert service_namespace == namespace
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == service_name]
    (target,) = [p["targetPort"] for p in service["spec"]["ports"] if p["port"] == logger.port]
    monitor = running["bidflow-monitor"]
    url = urlunparse(logger._replace(netloc=f"127.0.0.1:{monitor.ports[str(target)]}"))
    event_id = uuid.uuid4().hex
    for kind, body in (("request", request), ("response", response.json())):
        headers = {
            "ce-id": event_id,
            "ce-specversion": "1.0",
            "ce-source": "http://localhost:9081/",
            "ce-type": f"org.kubeflow.serving.inference.{kind}",
            "content-type": "application/json",
        }
        sent = httpx.post(url, content=json.dumps(body), headers=headers, timeout=30)
        assert sent.status_code == 202, sent.text
    status = httpx.get(f"http://127.0.0.1:{monitor.ports[str(target)]}/status", timeout=30).json()
    counts = status["counts"]
    # bad: a payload whose version the InferenceService's champion does not name, or the InferenceService unreadable.
    assert (counts["payloads"], counts["bad"]) == (1, 0), f"{counts}\n{monitor.output()}"
    assert counts["auctions"] == 1
