"""The Kubernetes API as the KServe backend uses it: one InferenceService read and written, refusals explained.

:class:`InferenceServiceClient` wraps the official ``kubernetes`` client's ``CustomObjectsApi`` for get / create /
merge-patch of one InferenceService and turns every apiserver refusal into a :class:`~bidflow.errors.DeploymentError`
that says what to do (:func:`api_error`; ``ConflictError`` for 409); :func:`api_client_from_environment` finds
credentials the way a pod or a workstation has them. Kept apart from the backend so the canary semantics read
without HTTP details, and from the spec builder, which needs no cluster.

Nothing here imports ``kserve``: the drift monitor's environment (no kserve, but ``kubernetes``) rolls back too.
"""

from __future__ import annotations

import json
import os
from typing import Any

import urllib3
from kubernetes import client as k8s  # type: ignore[import-untyped]
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException  # type: ignore[import-untyped]
from kubernetes.config.config_exception import ConfigException  # type: ignore[import-untyped]

from bidflow.deploy.crd import API_VERSION, GROUP, PLURAL, VERSION
from bidflow.errors import ConflictError, DeploymentError


class InferenceServiceClient:
    """get / create / merge-patch of one InferenceService, every apiserver refusal turned into a DeploymentError."""

    def __init__(self, api_client: Any, namespace: str, name: str, timeout_s: float) -> None:
        self.api = k8s.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.name = name
        self.timeout_s = timeout_s

    @property
    def ref(self) -> str:
        return f"inferenceservice {self.namespace}/{self.name}"

    def get(self) -> dict[str, Any] | None:
        """The object, or None when it does not exist (a missing CRD or namespace is an error)."""
        try:
            found: dict[str, Any] = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=self.timeout_s
            )
        except ApiException as exc:
            if exc.status == 404 and _missing_object(exc):
                return None
            raise self.error(exc, "get") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.unreachable(exc) from exc
        return found

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            created: dict[str, Any] = self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, _request_timeout=self.timeout_s
            )
        except ApiException as exc:
            raise self.error(exc, "create") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.unreachable(exc) from exc
        return created

    def patch(self, resource_version: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch that the apiserver applies only if the object is still at ``resource_version``."""
        body = {**body, "metadata": {**body.get("metadata", {}), "resourceVersion": resource_version}}
        try:
            patched: dict[str, Any] = self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, body, _request_timeout=self.timeout_s
            )
        except ApiException as exc:
            raise self.error(exc, "patch") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.unreachable(exc) from exc
        return patched

    def error(self, exc: ApiException, verb: str) -> DeploymentError:
        return api_error(exc, verb=verb, namespace=self.namespace, name=self.name)

    def unreachable(self, exc: BaseException) -> DeploymentError:
        host = getattr(getattr(self.api.api_client, "configuration", None), "host", "?")
        return DeploymentError(
            "cannot reach the Kubernetes API",
            where=host,
            got=f"{type(exc).__name__}: {str(exc)[:300]}",
            hint="check the kubeconfig context (or the pod's network) and that the cluster is up",
        )


def api_error(exc: ApiException, *, verb: str, namespace: str, name: str) -> DeploymentError:
    """What an apiserver refusal means for the user, as a ``DeploymentError`` (``ConflictError`` for 409)."""
    status = int(exc.status or 0)
    message, details = _status_body(exc)
    where = f"inferenceservice {namespace}/{name}"
    got = f"HTTP {status} {exc.reason or ''}".strip() + (f": {message}" if message else "")
    resource = f"{PLURAL}.{GROUP}"
    if status == 409:
        if verb == "create":
            return ConflictError(
                "someone else created the InferenceService at the same time",
                where=where,
                got=got,
                hint="re-run the command: it will read the InferenceService and decide again",
            )
        return ConflictError(
            "someone else changed the InferenceService between our read and our write; nothing was changed",
            where=where,
            got=got,
            hint=f"re-run the command (it re-reads the state); see `kubectl get isvc -n {namespace} {name} -o yaml`",
        )
    if status == 403:
        return DeploymentError(
            f"not allowed to {verb} {resource} in namespace {namespace}",
            where=where,
            got=got,
            hint=f"grant this identity the RBAC verb '{verb}' on resource '{PLURAL}' in apiGroup '{GROUP}' "
            f"(a Role in {namespace}); check with `kubectl auth can-i {verb} {resource} -n {namespace}`",
        )
    if status == 401:
        return DeploymentError(
            "the Kubernetes API did not accept our credentials",
            where=where,
            got=got,
            hint="refresh the kubeconfig's token (or the pod's ServiceAccount token)",
        )
    if status == 404:
        if details.get("kind") == "namespaces":
            return DeploymentError(
                f"namespace {namespace} does not exist",
                where=where,
                got=got,
                hint=f"create it (`kubectl create namespace {namespace}`) or set canary.namespace",
            )
        if not details.get("name"):
            return DeploymentError(
                f"this cluster does not serve {API_VERSION} {PLURAL} (the InferenceService CRD is not installed)",
                where=where,
                got=got,
                hint="install KServe (or at least its InferenceService CRD) in the cluster",
            )
        return DeploymentError(
            "the InferenceService does not exist (deleted meanwhile?)",
            where=where,
            got=got,
            hint="re-run: the first deploy creates it",
        )
    if status == 422:
        return DeploymentError("the apiserver rejected the InferenceService as invalid", where=where, got=got)
    return DeploymentError(f"the Kubernetes API refused to {verb} the InferenceService", where=where, got=got)


def _status_body(exc: ApiException) -> tuple[str, dict[str, Any]]:
    """The message and details of a ``Status`` response body (empty when the body is not one)."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return str(exc.body)[:300], {}
    if not isinstance(body, dict):
        return "", {}
    details = body.get("details")
    return str(body.get("message", "")), details if isinstance(details, dict) else {}


def _missing_object(exc: ApiException) -> bool:
    """A 404 about the object itself (its Status names it), not about the resource type or the namespace."""
    _, details = _status_body(exc)
    return bool(details.get("name")) and details.get("kind") != "namespaces"


def api_client_from_environment() -> Any:
    """A ``kubernetes.client.ApiClient``: in-cluster ServiceAccount credentials, else the current kubeconfig context.

    The process-wide default configuration of the ``kubernetes`` package is left alone.
    """
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        try:
            # KUBECONFIG read now: the package reads it once, at import.
            k8s_config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
            )
        except (ConfigException, OSError) as exc:
            raise DeploymentError(
                "no Kubernetes credentials: not in a pod, and no usable kubeconfig",
                got=str(exc)[:300],
                hint="set KUBECONFIG (or ~/.kube/config) to a context for the cluster, e.g. "
                "`aws eks update-kubeconfig --name CLUSTER`",
            ) from exc
    return k8s.ApiClient(configuration)
