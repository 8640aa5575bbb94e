"""The Helm chart and the kustomize tree rendered from it: lint, render, strict schema validation, parity.

Offline (no apiserver), but needs helm/kubectl from scripts/k8s/fetch-helm.sh (cached after the first run).
Every rendered object is validated strictly at the EKS target version; a kind without a schema fails (the
kubernetes-validate CLI would let it pass), and InferenceServices are validated with the schema generated from
the installed kserve SDK plus our own webhook rules.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bidflow.deploy.crd import API_VERSION, KIND
from bidflow.deploy.validation import validate_inference_service
from tests.k8s.cluster import REPO, Tools, run_script

# The tools come from the npm registry on first use: not a unit test by the project's definition.
pytestmark = pytest.mark.integration

CHART = REPO / "helm" / "bidflow"
EKS_VERSION = "1.31"
VALUES_FILES = [None, "values-local.yaml", "values-eks.yaml"]
OVERLAYS = ["local", "eks"]
# Objects per overlay: 15 (4 ServiceAccounts, Role, RoleBinding, 2 InferenceServices, 2 Deployments, 2 Services,
# 2 NetworkPolicies, the feature store's ConfigMap) plus a PodDisruptionBudget per workload with two or more pods
# (local: none; eks: feature server, bid filter, CTR). No Secret: k8s/ takes the monitor's token from an existing
# Secret (TEMPLATE_ARGS of the script).
OVERLAY_OBJECTS = {"local": 15, "eks": 18}


def load_render_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_kustomize", REPO / "scripts" / "k8s" / "render_kustomize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render_kustomize", module)
    spec.loader.exec_module(module)
    return module


def template(tools: Tools, *args: str, check: bool = True) -> tuple[list[dict[str, Any]], str]:
    done = tools.run("helm", "template", "bidflow", str(CHART), "--namespace", "bidflow", *args, check=check)
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc] if done.returncode == 0 else []
    return docs, done.stderr


def values_args(values: str | None) -> list[str]:
    return ["--values", str(CHART / values)] if values else []


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """Strict validation at the EKS version; unknown kinds are a failure, InferenceServices use our schema."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if doc.get("apiVersion") == API_VERSION and doc.get("kind") == KIND:
        return [f"{name}: {problem}" for problem in validate_inference_service(doc)]
    try:
        kubernetes_validate.validate(doc, EKS_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{name}: no schema at Kubernetes {EKS_VERSION} ({exc.message}); unknown kinds are not allowed"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'.'.join(map(str, exc.absolute_path))}: {exc.message}"]
    return []


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if doc["kind"] == "Deployment":
        yield doc["spec"]["template"]["spec"]
    if doc["kind"] == KIND:
        for component in ("predictor", "transformer", "explainer"):
            if component in doc["spec"]:
                yield doc["spec"][component]


def test_the_fetch_script_is_idempotent_and_caches_outside_the_work_tree(tools: Tools) -> None:
    bin_dir, log = run_script("fetch-helm.sh")
    assert "cached:" in log
    assert tools.helm.parent == bin_dir == run_script("fetch-helm.sh", "--print-dir")[0]
    assert REPO not in bin_dir.parents
    assert tools.run("helm", "version", "--template", "{{.Version}}").stdout == "v3.18.0"


# --- helm lint and render ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_helm_lint_strict(tools: Tools, values: str | None) -> None:
    done = tools.run("helm", "lint", "--strict", str(CHART), *values_args(values))
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_every_rendered_object_is_valid_at_the_eks_version(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values))
    kinds = sorted({doc["kind"] for doc in docs})
    expected = ["ConfigMap", "Deployment", "InferenceService", "NetworkPolicy", "Role", "RoleBinding", "Secret"]
    expected += ["Service", "ServiceAccount"]
    if values != "values-local.yaml":  # one replica of everything there: no disruption budget
        expected = sorted([*expected, "PodDisruptionBudget"])
    assert kinds == expected
    assert [problem for doc in docs for problem in schema_problems(doc)] == []


def test_an_unknown_kind_fails_validation() -> None:
    """The guard above really guards: kubernetes-validate's CLI would exit 0 here."""
    problems = schema_problems({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert problems and "unknown kinds are not allowed" in problems[0]


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_pods_are_locked_down(tools: Tools, values: str | None) -> None:
    docs, _ = template(tools, *values_args(values))
    specs = [spec for doc in docs for spec in pod_specs(doc)]
    assert len(specs) == 4  # feature server, drift monitor, bid filter, CTR
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert set(container["resources"]) == {"requests", "limits"}
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert not [doc for doc in docs if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    # The one Secret: the monitor's generated intake token.
    assert [doc["metadata"]["name"] for doc in docs if doc["kind"] == "Secret"] == ["bidflow-monitor-token"]


def test_the_rollback_controller_role_is_least_privilege(tools: Tools) -> None:
    docs, _ = template(tools)
    (role,) = [doc for doc in docs if doc["kind"] == "Role"]
    # Only what the rollback path sends (a GET and a merge PATCH), only on the bid filter's InferenceService.
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": ["bid-filter"],
            "verbs": ["get", "patch"],
        }
    ]
    (binding,) = [doc for doc in docs if doc["kind"] == "RoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "bidflow-rollback-controller", "namespace": "bidflow"}
    ]


def test_eks_values_set_irsa_and_take_secrets_from_a_secret(tools: Tools) -> None:
    docs, _ = template(tools, *values_args("values-eks.yaml"))
    accounts = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "ServiceAccount"}
    for account in accounts.values():
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert set(accounts) == {
        "bidflow-rollback-controller",
        "bidflow-feature-server",
        "bidflow-bid-filter",
        "bidflow-ctr",
    }
    # Every reader of the feature store gets its connection strings from the Secret bidflow-feast, by key.
    from_secret = {
        "BIDFLOW_FEAST_REGISTRY_URL": {"secretKeyRef": {"name": "bidflow-feast", "key": "BIDFLOW_FEAST_REGISTRY_URL"}},
        "BIDFLOW_FEAST_REDIS": {"secretKeyRef": {"name": "bidflow-feast", "key": "BIDFLOW_FEAST_REDIS"}},
    }
    (container,) = one(docs, "Deployment", "bidflow-feature-server")["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e} == from_secret
    (monitor,) = one(docs, "Deployment", "bidflow-monitor")["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in monitor, "the monitor never uses MLflow: no registry Secret beside its API token"
    assert not [e for e in monitor["env"] if "valueFrom" in e], "the monitor gets no Secret but its intake token"
    for name, uri in (
        ("bid-filter", "s3://bidflow-models-111122223333/bid-filter/champion"),
        ("ctr", "s3://bidflow-models-111122223333/ctr/champion"),
    ):
        isvc = one(docs, KIND, name)
        container = isvc["spec"]["predictor"]["containers"][0]
        assert container["env"][0] == {"name": "STORAGE_URI", "value": uri}
        assert {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e} == from_secret
        assert "envFrom" not in container


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda v: v or "values.yaml")
def test_every_feature_store_reader_mounts_the_chart_feature_store(
    tools: Tools, values: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model servers and the feature server read the ConfigMap's file, a production store bidflow itself opens."""
    from bidflow.config import FeaturesConfig
    from bidflow.features.store import repo_config

    docs, _ = template(tools, *values_args(values), "--set", "featureStore.project=bidflow_eu")
    configmap = one(docs, "ConfigMap", "bidflow-feature-store")
    for name, text in configmap["data"].items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.setenv("BIDFLOW_FEAST_REGISTRY_URL", "postgresql+psycopg://feast:secret@postgres:5432/feast")
    monkeypatch.setenv("BIDFLOW_FEAST_REDIS", "redis:6379,db=0,ssl=true,password=secret")
    config = repo_config(FeaturesConfig(repo=tmp_path, environment="production"))
    assert (config.project, config.online_store.type, config.registry.registry_type) == ("bidflow_eu", "redis", "sql")
    assert config.online_store.connection_string == "redis:6379,db=0,ssl=true,password=secret"

    readers = [*(one(docs, KIND, name) for name in ("bid-filter", "ctr"))]
    readers.append(one(docs, "Deployment", "bidflow-feature-server"))
    for doc in readers:
        spec = next(pod_specs(doc))
        (container,) = spec["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "feature-store"]
        assert mount == {"name": "feature-store", "mountPath": "/etc/bidflow/feature-store", "readOnly": True}
        assert {"name": "feature-store", "configMap": {"name": "bidflow-feature-store"}} in spec["volumes"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {"BIDFLOW_FEAST_REGISTRY_URL", "BIDFLOW_FEAST_REDIS"} <= set(env)
        if doc["kind"] == KIND:
            assert env["BIDFLOW__FEATURES__ENVIRONMENT"] == "production"
            assert env["BIDFLOW__FEATURES__REPO"] == "/etc/bidflow/feature-store"
        else:
            assert env["FEAST_FS_YAML_FILE_PATH"] == "/etc/bidflow/feature-store/feature_store.production.yaml"


def test_the_bid_filter_reports_the_installed_version(tools: Tools) -> None:
    """The drift monitor finds the answering role by the version in a response: /mnt/models does not tell it."""
    docs, _ = template(tools)
    args = one(docs, KIND, "bid-filter")["spec"]["predictor"]["containers"][0]["args"]
    assert "--model-version=1" in args
    docs, _ = template(tools, "--set", "bidFilter.modelVersion=")
    assert not [a for a in one(docs, KIND, "bid-filter")["spec"]["predictor"]["containers"][0]["args"]
                if a.startswith("--model-version")]  # fmt: skip


def test_model_servers_take_extra_env_and_a_secret(tools: Tools) -> None:
    docs, _ = template(
        tools, "--set", "ctr.env[0].name=BIDFLOW__EXPLAIN__TOP", "--set-string", "ctr.env[0].value=4",
        "--set", "ctr.envFromSecret=bidflow-mlflow",
    )  # fmt: skip
    container = one(docs, KIND, "ctr")["spec"]["predictor"]["containers"][0]
    assert container["env"][-1] == {"name": "BIDFLOW__EXPLAIN__TOP", "value": "4"}
    assert container["envFrom"] == [{"secretRef": {"name": "bidflow-mlflow"}}]
    assert "envFrom" not in one(docs, KIND, "bid-filter")["spec"]["predictor"]["containers"][0]


@pytest.mark.parametrize("percent", [0, 35, 100])
def test_canary_traffic_percent_is_rendered_when_set(tools: Tools, percent: int) -> None:
    docs, _ = template(tools, "--set", f"bidFilter.canaryTrafficPercent={percent}")
    isvc = one(docs, KIND, "bid-filter")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == percent
    assert validate_inference_service(isvc) == []
    assert "canaryTrafficPercent" not in one(docs, KIND, "ctr")["spec"]["predictor"], "each model has its own canary"


def test_no_canary_by_default(tools: Tools) -> None:
    docs, _ = template(tools)
    for isvc in [doc for doc in docs if doc["kind"] == KIND]:
        assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "bidFilter.canaryTrafficPercent=150"],
            "bidFilter.canaryTrafficPercent: Must be less than or equal to 100",
        ),
        (
            ["--set", "bidFilter.canaryTrafficPercent=-5"],
            "bidFilter.canaryTrafficPercent: Must be greater than or equal to 0",
        ),
        (["--set-string", "bidFilter.canaryTrafficPercent=50"], "bidFilter.canaryTrafficPercent: Invalid type"),
        (["--set", "bidFilter.canaryTraficPercent=10"], "Additional property canaryTraficPercent is not allowed"),
        (["--set", "bidFilter.storageUri=ftp://models/x"], "bidFilter.storageUri: Does not match pattern"),
        (["--set", "bidFilter.minReplicas=5"], "bidFilter.minReplicas (5) must not exceed bidFilter.maxReplicas (3)"),
        (["--set", "podSecurity.runAsUser=0"], "podSecurity.runAsUser: Must be greater than or equal to 1"),
        (["--set", "serviceAccounts.bidFilter.irsaRoleArn=my-role"], "serviceAccounts.bidFilter.irsaRoleArn"),
        (["--set", "featureServer.resources.limits.memory=1 GB"], "featureServer.resources.limits.memory"),
        (["--set", "featureServer.image.pullPolicy=Sometimes"], "featureServer.image.pullPolicy"),
        (["--set", "featureServer.resources.limits=null"], "limits is required"),
        (
            [
                "--set",
                "featureServer.env[0].name=BIDFLOW_FEAST_REDIS",
                "--set",
                "featureServer.env[0].value=redis:6379",
            ],
            "featureServer.env[0] BIDFLOW_FEAST_REDIS looks like a secret",
        ),
        # The CTR InferenceService and the drift monitor.
        (["--set", "ctr.canaryTrafficPercent=101"], "ctr.canaryTrafficPercent: Must be less than or equal to 100"),
        (["--set", "ctr.minReplicas=4"], "ctr.minReplicas (4) must not exceed ctr.maxReplicas (3)"),
        (["--set", "ctr.storageUri=/models/ctr"], "ctr.storageUri: Does not match pattern"),
        (["--set", "serviceAccounts.ctr.irsaRoleArn=arn:aws:iam::1:role/x"], "serviceAccounts.ctr.irsaRoleArn"),
        (["--set", "monitor.replicas=2"], "Additional property replicas is not allowed"),
        (["--set", "monitor.port=0"], "monitor.port: Must be greater than or equal to 1"),
        (["--set", "monitor.detectorUri=ftp://models/detector"], "monitor.detectorUri: Does not match pattern"),
        (["--set", "monitor.detectorUri=pvc://Models_Claim/detector"], "monitor.detectorUri: Does not match pattern"),
        (["--set", "monitor.detectorUri=oci://registry/detector"], "monitor.detectorUri: Does not match pattern"),
        (["--set", "monitor.storageInitializer.image.tag="], "monitor.storageInitializer.image.tag"),
        (["--set", "monitor.resources.limits=null"], "limits is required"),
        (["--set", "monitor.envFromSecret=bidflow-mlflow"], "Additional property envFromSecret is not allowed"),
        (
            [
                "--set",
                "monitor.env[0].name=BIDFLOW__REGISTRY__TRACKING_URI",
                "--set",
                "monitor.env[0].value=pg://u:p@h",
            ],
            "monitor.env[0] BIDFLOW__REGISTRY__TRACKING_URI looks like a secret",
        ),
        (["--set", "bidFilter.enabled=false"], "monitor.enabled needs bidFilter.enabled"),
        # The feature store and the model servers' own variables.
        (["--set", "featureStore.project=bid-flow"], "featureStore.project: Does not match pattern"),
        (["--set", "featureStore.secret.name="], "featureStore.secret.name: Does not match pattern"),
        (
            [
                "--set",
                "bidFilter.env[0].name=BIDFLOW__REGISTRY__TRACKING_URI",
                "--set",
                "bidFilter.env[0].value=postgresql://mlflow:p@db/mlflow",
            ],
            "bidFilter.env[0] BIDFLOW__REGISTRY__TRACKING_URI looks like a secret",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_bad_values_fail_with_a_clear_message(tools: Tools, args: list[str], message: str) -> None:
    docs, stderr = template(tools, *args, check=False)
    assert docs == [], "helm rendered bad values"
    assert message in stderr, stderr


# --- kustomize: rendered from the chart, never edited by hand --------------------------------------------------


def test_k8s_tree_is_up_to_date_with_the_chart(tools: Tools) -> None:
    render = load_render_script()
    problems = render.differences(render.render(str(tools.helm)), REPO / "k8s")
    assert not problems, "k8s/ is stale: run scripts/k8s/render_kustomize.py\n" + "\n".join(problems)


def kustomize(tools: Tools, overlay: str) -> list[dict[str, Any]]:
    done = tools.run("kubectl", "kustomize", str(REPO / "k8s" / "overlays" / overlay))
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_object_is_valid_at_the_eks_version(tools: Tools, overlay: str) -> None:
    docs = kustomize(tools, overlay)
    assert len(docs) == OVERLAY_OBJECTS[overlay]
    assert [problem for doc in docs for problem in schema_problems(doc)] == []
    assert {doc["metadata"]["namespace"] for doc in docs} == {"bidflow"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_exactly_what_helm_renders_for_its_values_file(tools: Tools, overlay: str) -> None:
    """The single-source guarantee: kustomize and Helm users deploy the same objects."""

    def normalise(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        labels = doc["metadata"].get("labels", {})
        labels.pop("helm.sh/chart", None)
        labels["app.kubernetes.io/managed-by"] = "-"
        doc["metadata"].setdefault("namespace", "bidflow")
        return f"{doc['kind']}/{doc['metadata']['name']}", doc

    # k8s/ is rendered with the script's extra arguments (the monitor's token from an existing Secret).
    extra = list(load_render_script().TEMPLATE_ARGS)
    helm_docs, _ = template(tools, *extra, *values_args(f"values-{overlay}.yaml"))
    assert dict(map(normalise, kustomize(tools, overlay))) == dict(map(normalise, helm_docs))


def test_render_script_json_patch_operations() -> None:
    """The overlay patch generator on its own: per-key ops, per-item ops for equal-length lists, RFC 6901 escapes."""
    render = load_render_script()
    old = {"metadata": {"annotations": {"a/b": "1", "gone": "x"}}, "spec": {"list": [1, 2], "other": [1]}}
    new = {"metadata": {"annotations": {"a/b": "2", "c~d": "3"}}, "spec": {"list": [1, 3], "other": [1, 2]}}
    assert render.json_patch(old, new) == [
        {"op": "remove", "path": "/metadata/annotations/gone"},
        {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
        {"op": "add", "path": "/metadata/annotations/c~0d", "value": "3"},
        {"op": "replace", "path": "/spec/list/1", "value": 3},
        {"op": "replace", "path": "/spec/other", "value": [1, 2]},
    ]
    assert render.json_patch(old, old) == []
