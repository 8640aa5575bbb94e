"""The drift monitor's intake token and the NetworkPolicies around the monitor and the feature server.

The monitor refuses senders without its token (bidflow.monitoring.auth); the chart must give the monitor the token as
a file and the bid filter's payload logger the same token in its URL, keep a generated token across `helm upgrade`
(checked on the real kube-apiserver), and honour a Secret made outside the chart. NetworkPolicies are checked
offline (selectors, ports, strict schema at 1.31) and installed on the apiserver; enforcement needs a CNI and is
validated on paper only.
"""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from bidflow.deploy.crd import KIND
from tests.k8s.cluster import ApiServer, Tools
from tests.k8s.test_apiserver import crd_installed, get_isvc  # noqa: F401 (the CRD fixture)
from tests.k8s.test_chart import CHART, VALUES_FILES, one, schema_problems, template, values_args

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

TOKEN_DIR = "/var/run/secrets/bidflow/monitor-token"
SELECTOR = {"app.kubernetes.io/name": "bidflow", "app.kubernetes.io/instance": "bidflow"}


def monitor_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]
    return pod


def logger_token(isvc: dict[str, Any]) -> str:
    url = urlsplit(isvc["spec"]["predictor"]["logger"]["url"])
    assert url.path == "/"
    (token,) = parse_qs(url.query)["token"]
    return token


def secret_token(secret: dict[str, Any], key: str = "token") -> str:
    return base64.b64decode(secret["data"][key]).decode()


def pods(component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {**SELECTOR, "app.kubernetes.io/component": component}}}


# --- the token, offline ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_the_monitor_reads_the_token_file_and_the_logger_url_carries_the_same_token(
    tools: Tools, values: str | None
) -> None:
    docs, _ = template(tools, *values_args(values))
    secret = one(docs, "Secret", "bidflow-monitor-token")
    assert secret["type"] == "Opaque" and list(secret["data"]) == ["token"]
    token = secret_token(secret)
    assert len(token) == 48 and token.isalnum()
    assert logger_token(one(docs, KIND, "bid-filter")) == token
    assert "logger" not in one(docs, KIND, "ctr")["spec"]["predictor"]

    pod = monitor_pod(docs)
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"] == {
        "secretName": "bidflow-monitor-token",
        "defaultMode": 0o440,
        "items": [{"key": "token", "path": "token"}],
    }
    (monitor,) = pod["containers"]
    (mount,) = [m for m in monitor["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": TOKEN_DIR, "readOnly": True}
    env = {e["name"]: e.get("value") for e in monitor["env"]}
    assert env["BIDFLOW__MONITOR__TOKEN_FILE"] == f"{TOKEN_DIR}/token"


def test_two_renders_draw_different_tokens(tools: Tools) -> None:
    first, _ = template(tools)
    second, _ = template(tools)
    tokens = {secret_token(one(docs, "Secret", "bidflow-monitor-token")) for docs in (first, second)}
    assert len(tokens) == 2


def test_an_existing_secret_is_mounted_and_none_is_created(tools: Tools) -> None:
    docs, _ = template(
        tools,
        "--set", "monitor.token.existingSecret=intake", "--set", "monitor.token.secretKey=bearer",
        "--set", "monitor.token.value=abcdefghijklmnop+/=",
    )  # fmt: skip
    assert not [doc for doc in docs if doc["kind"] == "Secret"]
    (volume,) = [v for v in monitor_pod(docs)["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "intake"
    assert volume["secret"]["items"] == [{"key": "bearer", "path": "token"}]
    url = one(docs, KIND, "bid-filter")["spec"]["predictor"]["logger"]["url"]
    assert url.endswith("?token=abcdefghijklmnop%2B%2F%3D")  # quoted for a URL, decoded by the monitor
    assert logger_token(one(docs, KIND, "bid-filter")) == "abcdefghijklmnop+/="


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "monitor.token.existingSecret=intake"], "monitor.token.existingSecret=intake: the bid filter's"),
        (["--set", "monitor.token.value=abcdefghijklmnopq"], "monitor.token.value is only for"),
        (
            ["--set", "monitor.token.existingSecret=intake", "--set", "monitor.token.value=short"],
            "monitor.token.value",
        ),
    ],
    ids=["existing-without-value", "value-without-existing", "short-value"],
)
def test_token_values_that_cannot_work_are_refused(tools: Tools, args: list[str], message: str) -> None:
    docs, stderr = template(tools, *args, check=False)
    assert docs == []
    assert message in stderr, stderr


# --- the token on a real apiserver ---------------------------------------------------------------------------


def test_helm_upgrade_keeps_the_generated_token(
    crd_installed: float,  # noqa: F811
    kube: Tools,
    apiserver: ApiServer,
) -> None:
    namespace = f"bidflow-token-{time.monotonic_ns() % 100000}"
    helm = ["--namespace", namespace]
    core = client.CoreV1Api(apiserver.client)

    def installed() -> tuple[str, str]:
        secret = core.read_namespaced_secret("bidflow-monitor-token", namespace)
        token = base64.b64decode(secret.data["token"]).decode()
        return token, logger_token(get_isvc(apiserver, namespace, "bid-filter"))

    kube.run("helm", "install", "bidflow", str(CHART), *helm, "--create-namespace")
    token, in_url = installed()
    assert len(token) == 48 and in_url == token
    kube.run("helm", "upgrade", "bidflow", str(CHART), *helm, "--set", "bidFilter.canaryTrafficPercent=10")
    assert get_isvc(apiserver, namespace, "bid-filter")["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert installed() == (token, token)
    kube.run("helm", "upgrade", "bidflow", str(CHART), *helm, "--reuse-values", "--set", "ctr.enabled=false")
    assert installed() == (token, token)
    kube.run("helm", "uninstall", "bidflow", *helm)


def test_an_existing_secret_is_read_at_install_for_the_logger_url(
    crd_installed: float,  # noqa: F811
    kube: Tools,
    apiserver: ApiServer,
) -> None:
    namespace = f"bidflow-existing-{time.monotonic_ns() % 100000}"
    helm = ["--namespace", namespace]
    core = client.CoreV1Api(apiserver.client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    token = "made-outside-the-chart-0123456789"
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="intake"), string_data={"token": token}),
    )
    kube.run("helm", "install", "bidflow", str(CHART), *helm, "--set", "monitor.token.existingSecret=intake")
    assert logger_token(get_isvc(apiserver, namespace, "bid-filter")) == token
    with pytest.raises(client.ApiException) as none:
        core.read_namespaced_secret("bidflow-monitor-token", namespace)
    assert none.value.status == 404
    pod = client.AppsV1Api(apiserver.client).read_namespaced_deployment("bidflow-monitor", namespace).spec.template
    assert [v.secret.secret_name for v in pod.spec.volumes if v.secret] == ["intake"]
    # Installed NetworkPolicies: networking.k8s.io/v1 is served by 1.20 too.
    policies = client.NetworkingV1Api(apiserver.client).list_namespaced_network_policy(namespace).items
    assert sorted(p.metadata.name for p in policies) == ["bidflow-feature-server", "bidflow-monitor"]
    kube.run("helm", "uninstall", "bidflow", *helm)
    core.delete_namespace(namespace)


# --- NetworkPolicies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_network_policies_let_only_the_predictors_and_prometheus_in(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values))
    policies = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "NetworkPolicy"}
    assert sorted(policies) == ["bidflow-feature-server", "bidflow-monitor"]
    assert [problem for doc in policies.values() for problem in schema_problems(doc)] == []

    monitor = policies["bidflow-monitor"]["spec"]
    deployment = one(docs, "Deployment", "bidflow-monitor")
    assert monitor["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert monitor["policyTypes"] == ["Ingress"]
    port = [{"port": deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
             "protocol": "TCP"}]  # fmt: skip
    bid_filter_pods = one(docs, KIND, "bid-filter")["spec"]["predictor"]["labels"]
    assert monitor["ingress"] == [
        {"from": [pods("bid-filter")], "ports": port},
        {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}], "ports": port},
    ]
    # The payload logger runs in the predictor's pods, which carry spec.predictor.labels.
    assert pods("bid-filter")["podSelector"]["matchLabels"].items() <= bid_filter_pods.items()

    features = policies["bidflow-feature-server"]["spec"]
    server = one(docs, "Deployment", "bidflow-feature-server")
    assert features["podSelector"]["matchLabels"] == server["spec"]["selector"]["matchLabels"]
    assert features["ingress"] == [
        {
            "from": [pods("bid-filter"), pods("ctr")],
            "ports": [{"port": server["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
                       "protocol": "TCP"}],
        }
    ]  # fmt: skip
    assert (
        pods("ctr")["podSelector"]["matchLabels"].items()
        <= one(docs, KIND, "ctr")["spec"]["predictor"]["labels"].items()
    )


def test_prometheus_may_come_from_another_namespace(tools: Tools) -> None:
    docs, _ = template(
        tools,
        "--set", "networkPolicies.prometheus.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
        "--set", "monitor.port=9000", "--set", "ctr.enabled=false",
    )  # fmt: skip
    policies = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "NetworkPolicy"}
    assert [problem for doc in policies.values() for problem in schema_problems(doc)] == []
    ingress = policies["bidflow-monitor"]["spec"]["ingress"]
    assert ingress[1]["from"] == [
        {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        }
    ]
    assert {rule["ports"][0]["port"] for rule in ingress} == {9000}
    assert policies["bidflow-feature-server"]["spec"]["ingress"][0]["from"] == [pods("bid-filter")]


def test_network_policies_can_be_turned_off(tools: Tools) -> None:
    docs, _ = template(tools, "--set", "networkPolicies.enabled=false")
    assert not [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
    assert one(docs, "Deployment", "bidflow-monitor")


def test_without_the_monitor_only_the_feature_server_policy_remains(tools: Tools) -> None:
    docs, _ = template(tools, "--set", "monitor.enabled=false")
    assert [doc["metadata"]["name"] for doc in docs if doc["kind"] == "NetworkPolicy"] == ["bidflow-feature-server"]
    assert not [doc for doc in docs if doc["kind"] == "Secret"]
