"""The KServe InferenceService that serves a bidflow model: a pure builder, no cluster access.

:func:`inference_service` builds the v1beta1 InferenceService for bidflow's custom predictor (the same container
shape as ``helm/bidflow/templates/bid-filter-inferenceservice.yaml``); the backend (``bidflow.deploy.kserve``) sends
it, and tests validate it against the KServe schema without a cluster. The labels and the ``bidflow.io/model``
annotation it writes are what the backend reads back to tell which model a spec serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from bidflow.deploy.backend import ModelVersion
from bidflow.deploy.crd import API_VERSION, KIND
from bidflow.errors import DeploymentError

MODEL_NAME_LABEL: Final = "bidflow.io/model-name"
MODEL_VERSION_LABEL: Final = "bidflow.io/model-version"
MODEL_ANNOTATION: Final = "bidflow.io/model"
"""On ``spec.predictor``: the exact ``ModelVersion`` the spec serves (labels only hold label-safe values)."""

CONTAINER_NAME: Final = "kserve-container"  # KServe's name for a custom predictor's model-server container
MODEL_MOUNT: Final = "/mnt/models"  # where KServe's storage initializer puts what STORAGE_URI names
HTTP_PORT: Final = 8080
# Schemes KServe's storage initializer downloads (oci:// is a modelcar, mounted at the same path). Anything else
# (models:/, runs:/, a path) is given to the model server as is, which loads it through MLflow.
STORAGE_SCHEMES: Final = ("s3://", "gs://", "pvc://", "https://", "http://", "hf://", "hdfs://", "webhdfs://", "oci://")
DEFAULT_RESOURCES: Final[Mapping[str, Mapping[str, str]]] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}
_LABEL_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


def inference_service(
    name: str,
    namespace: str,
    model: ModelVersion,
    *,
    image: str,
    canary_percent: int | None = None,
    service_account: str | None = None,
    monitor_url: str | None = None,
    endpoint: str | None = None,
    kind: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 3,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    env: Mapping[str, str] | None = None,
    run_as_user: int = 10001,
    run_as_group: int = 10001,
    image_pull_policy: str = "IfNotPresent",
) -> dict[str, Any]:
    """The v1beta1 InferenceService serving ``model`` with bidflow's custom predictor (a fresh dict per call).

    Args:
        name, namespace: the InferenceService.
        model: what the predictor serves. A storage URI (``s3://``, ``gs://``, ``pvc://``, ``https://``, ``hf://``,
            ...) goes to ``STORAGE_URI`` and KServe's storage initializer, the server loading ``/mnt/models``; an
            MLflow URI (``models:/``, ``runs:/``) is passed to the server's ``--model`` (it downloads it itself and
            then needs the registry settings, e.g. ``env={"BIDFLOW__REGISTRY__TRACKING_URI": ...}``).
        image: the model-server image (``python -m bidflow.serving`` as its entry point).
        canary_percent: ``spec.predictor.canaryTrafficPercent`` (0-100); None leaves the field out.
        service_account: the predictor pods' ServiceAccount (the storage initializer downloads with it: IRSA on EKS).
        monitor_url: when given, KServe's payload logger sends every request and response there (``mode: all``).
        endpoint: the model name clients use in ``/v1/models/<endpoint>:predict``; default ``name``.
        kind: the model kind the server serves (``--kind``); None: the server's default kind.
        min_replicas, max_replicas, resources: scaling and the container's requests/limits (the chart's defaults).
        env: extra environment variables for the model server.
        run_as_user, run_as_group: the non-root identity (the chart's ``podSecurity``).
        image_pull_policy: the container's pull policy.

    Raises:
        DeploymentError: ``canary_percent`` outside 0-100, or replicas out of order (KServe's webhook rules).
    """
    if canary_percent is not None and not 0 <= canary_percent <= 100:
        raise DeploymentError(
            "canary traffic percent must be between 0 and 100", got=str(canary_percent), expected="0-100"
        )
    if not 0 <= min_replicas <= max_replicas:
        raise DeploymentError(
            "replicas out of order", expected="0 <= min_replicas <= max_replicas", got=f"{min_replicas}, {max_replicas}"
        )
    storage = model.uri.startswith(STORAGE_SCHEMES)
    args = [
        "--model", MODEL_MOUNT if storage else model.uri,
        "--name", endpoint or name,
        "--host", "0.0.0.0",
        "--http-port", str(HTTP_PORT),
    ]  # fmt: skip
    args += ["--kind", kind] if kind is not None else []
    args += ["--model-version", model.version]  # /mnt/models says nothing of it; the monitor finds roles by it
    container_env = [{"name": "STORAGE_URI", "value": model.uri}] if storage else []
    container_env.append({"name": "HOME", "value": "/tmp"})
    container_env.extend({"name": key, "value": value} for key, value in sorted((env or {}).items()))
    model_labels = {MODEL_NAME_LABEL: label_value(model.name), MODEL_VERSION_LABEL: label_value(model.version)}
    predictor: dict[str, Any] = {}
    if service_account is not None:
        predictor["serviceAccountName"] = service_account
    predictor["minReplicas"] = min_replicas
    predictor["maxReplicas"] = max_replicas
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    if monitor_url is not None:
        predictor["logger"] = {"mode": "all", "url": monitor_url}
    predictor["labels"] = dict(model_labels)
    predictor["annotations"] = {MODEL_ANNOTATION: annotation_json(model.to_dict())}
    predictor["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_group,
        "fsGroup": run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    predictor["containers"] = [
        {
            "name": CONTAINER_NAME,
            "image": image,
            "imagePullPolicy": image_pull_policy,
            "args": args,
            "env": container_env,
            "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
            # The chart's probes: ready once the model has loaded; alive while it loads (the server listens first).
            "readinessProbe": {
                "httpGet": {"path": f"/v2/models/{endpoint or name}/ready", "port": HTTP_PORT},
                "periodSeconds": 5,
                "timeoutSeconds": 3,
                "failureThreshold": 3,
            },
            "livenessProbe": {
                "httpGet": {"path": "/v2/health/live", "port": HTTP_PORT},
                "initialDelaySeconds": 30,
                "periodSeconds": 10,
                "timeoutSeconds": 5,
                "failureThreshold": 6,
            },
            "resources": {kind: dict(values) for kind, values in (resources or DEFAULT_RESOURCES).items()},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
    ]
    predictor["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": name,
                "app.kubernetes.io/component": "bid-filter",
                "app.kubernetes.io/part-of": "bidflow",
                "app.kubernetes.io/managed-by": "bidflow",
                **model_labels,
            },
        },
        "spec": {"predictor": predictor},
    }


def label_value(text: str) -> str:
    """``text`` as a valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    cleaned = _LABEL_UNSAFE.sub("-", text)[:63].strip("._-")
    return cleaned or "unknown"


def annotation_json(value: Any) -> str:
    """``value`` as an annotation's JSON: compact and key-sorted, so equal values are equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
