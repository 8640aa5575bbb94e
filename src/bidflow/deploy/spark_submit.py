"""Run one bidflow Spark step on a cluster: create its SparkApplication and wait for the Spark Operator to end it.

The manifests come from :mod:`bidflow.deploy.spark_application`; this module only talks to the Kubernetes API
(the ``submit_spark_job`` component's work). The operator reports progress in ``status.applicationState.state``;
the states that end a run are COMPLETED, FAILED and SUBMISSION_FAILED (the operator's ApplicationStateType).
Polling, not a watch: one GET every few seconds for a job of minutes costs nothing and has no expiring
resourceVersion to recover from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client as k8s  # type: ignore[import-untyped]
from kubernetes.client.rest import ApiException  # type: ignore[import-untyped]

from bidflow.config import SparkKubernetesConfig
from bidflow.deploy.spark_application import (
    GROUP,
    PLURAL,
    VERSION,
    application_name,
    config_map,
    spark_application,
    uses_s3,
)
from bidflow.errors import EngineError

COMPLETED: Final = "COMPLETED"
FAILED_STATES: Final = frozenset({"FAILED", "SUBMISSION_FAILED"})


@dataclass(frozen=True)
class SparkRun:
    """A finished SparkApplication."""

    name: str
    namespace: str
    state: str
    seconds: float


def submit_and_wait(
    api_client: Any,
    step: str,
    config_text: str,
    settings: SparkKubernetesConfig,
    *,
    image: str,
    spark_version: str,
    run_id: str,
    arguments: Sequence[str] = (),
    timeout_s: float | None = None,
    poll_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SparkRun:
    """Create the SparkApplication of ``step`` and its config ConfigMap; return once the operator says COMPLETED.

    The ConfigMap is owned by the application, so Kubernetes deletes it with the application (the operator
    deletes finished applications after ``settings.ttl_s``).

    Args:
        api_client: a ``kubernetes.client.ApiClient`` (``kserve_api.api_client_from_environment`` in a pod).
        step: the ``bidflow.engines.spark_jobs`` step.
        config_text: the text of the bidflow.yaml the job reads.
        settings: ``spark.kubernetes``.
        image: the driver's and executors' image.
        spark_version: the Spark version in that image.
        run_id: unique per attempt; names the application (:func:`application_name`).
        arguments: the job's options after the step and ``--config`` (``spark_application.job_arguments``).
        timeout_s: give up after this long (default ``settings.timeout_s``); the application is then deleted.
        poll_s: seconds between two reads of the status.
        clock, sleep: injectable for tests.

    Raises:
        EngineError: the API refused the application (no CRD, no permission), the run ended FAILED or
            SUBMISSION_FAILED (with the operator's error message and the driver pod), or it did not end in time.
    """
    name = application_name(step, run_id)
    namespace = settings.namespace
    manifest = spark_application(
        step,
        settings=settings,
        name=name,
        image=image,
        config_map_name=f"{name}-config",
        s3=uses_s3(config_text),
        spark_version=spark_version,
        arguments=arguments,
    )
    custom = k8s.CustomObjectsApi(api_client)
    owned = config_map(f"{name}-config", namespace, config_text)
    started = clock()
    try:
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as exc:
        raise _refused(exc, f"SparkApplication {name}", namespace) from exc
    # Created after the application so that it can be owned by it (deleted with it); the driver pod waits for
    # its volume until the ConfigMap exists.
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": created["apiVersion"], "kind": created["kind"], "name": name, "uid": created["metadata"]["uid"]}
    ]
    try:
        k8s.CoreV1Api(api_client).create_namespaced_config_map(namespace, owned)
    except ApiException as exc:
        _delete(custom, namespace, name)  # an application without its configuration must not run
        raise _refused(exc, f"ConfigMap {name}-config", namespace) from exc
    print(f"created SparkApplication {namespace}/{name} ({step})", flush=True)

    limit = settings.timeout_s if timeout_s is None else timeout_s
    state, last = "", ""
    while True:
        status = _read_status(custom, namespace, name)
        state = str((status.get("applicationState") or {}).get("state") or "")
        if state != last:
            print(f"SparkApplication {name}: {state or 'NEW'}", flush=True)
            last = state
        if state == COMPLETED:
            return SparkRun(name, namespace, state, clock() - started)
        if state in FAILED_STATES:
            raise _failed(status, state, name, namespace)
        if clock() - started > limit:
            _delete(custom, namespace, name)
            raise EngineError(
                f"SparkApplication {name} did not finish within {limit:.0f}s; it was deleted",
                where=f"namespace {namespace}",
                got=f"state {state or 'NEW (the operator never picked it up)'}",
                hint="a state of NEW means no Spark Operator watches this namespace (sparkOperator in the chart); "
                "otherwise raise spark.kubernetes.timeout_s or give the job more executors",
            )
        sleep(poll_s)


def _read_status(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    try:
        found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise EngineError(
                f"SparkApplication {name} disappeared while running",
                where=f"namespace {namespace}",
                hint="someone deleted it, or spark.kubernetes.ttl_s is shorter than the wait between two reads",
            ) from exc
        raise _refused(exc, f"SparkApplication {name}", namespace) from exc
    status = found.get("status") or {}
    return status if isinstance(status, dict) else {}


def _failed(status: dict[str, Any], state: str, name: str, namespace: str) -> EngineError:
    message = str((status.get("applicationState") or {}).get("errorMessage") or "").strip()
    driver = str((status.get("driverInfo") or {}).get("podName") or f"{name}-driver")
    return EngineError(
        f"Spark job {name} ended {state}",
        where=f"SparkApplication {namespace}/{name}",
        got=message[:2000] or "(the operator gave no error message)",
        hint=f"the driver's log: kubectl logs -n {namespace} {driver}",
    )


def _refused(exc: ApiException, what: str, namespace: str) -> EngineError:
    hints = {
        403: "the pipeline's service account needs the chart's SparkApplication Role (sparkOperator.pipelineRunner)",
        404: "is the Spark Operator installed (its SparkApplication CRD) and does the namespace exist?",
    }
    return EngineError(
        f"the Kubernetes API refused {what}",
        where=f"namespace {namespace}",
        got=f"{exc.status} {exc.reason}: {str(exc.body or '')[:500]}",
        hint=hints.get(exc.status),
    )


def _delete(custom: Any, namespace: str, name: str) -> None:
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise _refused(exc, f"SparkApplication {name}", namespace) from exc
