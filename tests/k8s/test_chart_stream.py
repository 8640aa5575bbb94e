"""The chart's stream processor (``streamProcessor``): rendered, schema-validated, installed on the real kube-apiserver.

Like test_chart.py: helm/kubectl from scripts/k8s/fetch-helm.sh; the install runs against the kube-apiserver 1.20.2
on 127.0.0.1 (tests/k8s/conftest.py). What stays on paper: the pod running on EKS, IRSA handing it credentials, and
Kinesis itself (the processor's Kinesis source is tested against moto's emulation in
tests/integration/features/test_kinesis_stream.py).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from bidflow.config import load_config
from tests.k8s.cluster import ApiServer, Tools
from tests.k8s.test_chart import CHART, VALUES_FILES, one, schema_problems, template, values_args

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

ROLE = "arn:aws:iam::111122223333:role/bidflow-stream-processor"
KINESIS = [
    "--set", "streamProcessor.enabled=true",
    "--set", "streamProcessor.source=kinesis",
    "--set", "streamProcessor.kinesis.streamName=bidflow-clicks-eu",
    "--set", "streamProcessor.kinesis.region=eu-west-1",
    "--set", f"streamProcessor.serviceAccount.irsaRoleArn={ROLE}",
]  # fmt: skip
NAME = "bidflow-stream-processor"


def processor_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["metadata"]["name"] == NAME]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = one(docs, "Deployment", NAME)["spec"]["template"]["spec"]["containers"]
    return found


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_off_by_default(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values))
    assert processor_objects(docs) == []


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_the_kinesis_processor_renders_valid_objects(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values), *KINESIS)
    objects = processor_objects(docs)
    assert sorted(doc["kind"] for doc in objects) == ["Deployment", "NetworkPolicy", "ServiceAccount"]
    assert [problem for doc in objects for problem in schema_problems(doc)] == []

    deployment = one(docs, "Deployment", NAME)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == NAME and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    server = container(docs)
    assert server["command"] == ["bidflow", "stream", "process"]
    assert server["image"].startswith("ghcr.io/bidflow/bidflow-components:")
    context = server["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(server["resources"]) == {"requests", "limits"}
    # Nothing to probe (see the template): no port either.
    assert not {"readinessProbe", "livenessProbe", "startupProbe", "ports"} & set(server)
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["BIDFLOW__STREAM__SOURCE"] == "kinesis"
    assert env["BIDFLOW__STREAM__KINESIS__STREAM_NAME"] == "bidflow-clicks-eu"
    assert env["BIDFLOW__STREAM__KINESIS__REGION"] == "eu-west-1"
    assert "BIDFLOW__STREAM__STREAM" not in env
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "valueFrom" in e}
    assert secrets == {
        "BIDFLOW__STREAM__REDIS_URL": {"name": "bidflow-feast", "key": "BIDFLOW_STREAM_REDIS_URL"},
        "BIDFLOW_FEAST_REGISTRY_URL": {"name": "bidflow-feast", "key": "BIDFLOW_FEAST_REGISTRY_URL"},
        "BIDFLOW_FEAST_REDIS": {"name": "bidflow-feast", "key": "BIDFLOW_FEAST_REDIS"},
    }
    assert {"name": "feature-store", "configMap": {"name": "bidflow-feature-store"}} in spec["volumes"]

    account = one(docs, "ServiceAccount", NAME)
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE}
    assert account["automountServiceAccountToken"] is False
    policy = one(docs, "NetworkPolicy", NAME)
    assert policy["spec"]["policyTypes"] == ["Ingress"] and policy["spec"]["ingress"] == []
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_the_rendered_environment_is_the_configuration_the_processor_reads(tools: Tools) -> None:
    """The chart's variable names are bidflow's: loading them gives the Kinesis settings (a typo would fail here)."""
    from bidflow.features.kinesis_source import KinesisSource
    from bidflow.features.stream_source import open_source

    docs, _ = template(tools, *KINESIS, "--set", "streamProcessor.group=velocity-eu")
    environ = {e["name"]: e.get("value", "from-a-secret") for e in container(docs)["env"]}
    environ["BIDFLOW__STREAM__REDIS_URL"] = "redis://127.0.0.1:6379/0"
    config = load_config(None, environ)
    stream = config.stream
    assert (stream.source, stream.group) == ("kinesis", "velocity-eu")
    assert (stream.kinesis.stream_name, stream.kinesis.region) == ("bidflow-clicks-eu", "eu-west-1")
    assert (config.features.environment, str(config.features.repo)) == ("production", "/etc/bidflow/feature-store")
    source = open_source(stream, client=None)  # type: ignore[arg-type]  # a Kinesis source uses no Redis stream
    assert isinstance(source, KinesisSource) and source.where == "kinesis:bidflow-clicks-eu"


def test_the_redis_source_renders_its_stream_key(tools: Tools) -> None:
    docs, _ = template(tools, "--set", "streamProcessor.enabled=true", "--set", "networkPolicies.enabled=false")
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["BIDFLOW__STREAM__SOURCE"] == "redis" and env["BIDFLOW__STREAM__STREAM"] == "bidflow:clicks"
    assert not [name for name in env if name.startswith("BIDFLOW__STREAM__KINESIS__")]
    assert sorted(doc["kind"] for doc in processor_objects(docs)) == ["Deployment", "ServiceAccount"]
    assert load_config(None, {k: v for k, v in env.items() if v is not None}).stream.source == "redis"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "streamProcessor.source=kafka"], "streamProcessor.source"),
        (["--set", "streamProcessor.kinesis.streamName=clicks stream"], "streamProcessor.kinesis.streamName"),
        (["--set", "streamProcessor.kinesis.region=Ireland"], "streamProcessor.kinesis.region"),
        (["--set", "streamProcessor.serviceAccount.irsaRoleArn=my-role"], "streamProcessor.serviceAccount"),
        (["--set", "streamProcessor.resources.limits=null"], "limits is required"),
        (["--set", "streamProcessor.replicas=2"], "Additional property replicas is not allowed"),
        (
            ["--set", "streamProcessor.env[0].name=BIDFLOW__STREAM__REDIS_URL",
             "--set", "streamProcessor.env[0].value=redis://:pw@redis:6379/0"],
            "streamProcessor.env[0] BIDFLOW__STREAM__REDIS_URL looks like a secret",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)  # fmt: skip
def test_bad_stream_processor_values_fail_with_a_clear_message(tools: Tools, args: list[str], message: str) -> None:
    docs, stderr = template(tools, "--set", "streamProcessor.enabled=true", *args, check=False)
    assert docs == [], "helm rendered bad values"
    assert message in stderr, stderr


def test_the_kinesis_processor_installs_on_the_apiserver(kube: Tools, apiserver: ApiServer) -> None:
    """`helm install` with the processor on (Kinesis, IRSA) into the real kube-apiserver, read back through its API.

    The model servers and the monitor are off: they need KServe's CRD, which test_apiserver.py installs and tests.
    """
    namespace = f"bidflow-stream-{time.monotonic_ns() % 100000}"
    helm = ["--namespace", namespace]
    off = ["--set", "bidFilter.enabled=false", "--set", "ctr.enabled=false", "--set", "monitor.enabled=false"]
    kube.run("helm", "install", "bidflow", str(CHART), *helm, "--create-namespace", *off, *KINESIS)
    try:
        apps, core = client.AppsV1Api(apiserver.client), client.CoreV1Api(apiserver.client)
        deployment = apps.read_namespaced_deployment(NAME, namespace)
        (server,) = deployment.spec.template.spec.containers
        assert server.command == ["bidflow", "stream", "process"]
        assert {e.name: e.value for e in server.env}["BIDFLOW__STREAM__SOURCE"] == "kinesis"
        assert deployment.spec.strategy.type == "Recreate"
        account = core.read_namespaced_service_account(NAME, namespace)
        assert account.metadata.annotations["eks.amazonaws.com/role-arn"] == ROLE
        policy = client.NetworkingV1Api(apiserver.client).read_namespaced_network_policy(NAME, namespace)
        assert policy.spec.policy_types == ["Ingress"] and not policy.spec.ingress
        # Turned off again by an upgrade: its objects go, the rest stays.
        kube.run("helm", "upgrade", "bidflow", str(CHART), *helm, "--reuse-values",
                 "--set", "streamProcessor.enabled=false")  # fmt: skip
        names = [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items]
        assert names == ["bidflow-feature-server"]
    finally:
        kube.run("helm", "uninstall", "bidflow", *helm, check=False)
        client.CoreV1Api(apiserver.client).delete_namespace(namespace)
