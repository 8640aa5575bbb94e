"""Cluster details the pipelines attach to their tasks: Secrets as environment, resources, caching, retries.

Components never read a secret or know a cluster; these helpers attach them in the pipeline
definition (``kfp-kubernetes``), and ``kfp.local`` ignores them, so a local run uses the
configuration it was given.

Secrets (create them in the pipeline's namespace; key names equal the variables they become, so
the same Secret also works with ``envFrom``, as the feature server's manifests use it):

* ``bidflow-mlflow``: ``BIDFLOW__REGISTRY__TRACKING_URI`` (e.g. ``postgresql+psycopg://user:PASSWORD@host/mlflow``
  or ``https://mlflow...``), read by the bidflow config loader as an override of ``registry.tracking_uri``;
* ``bidflow-feast``: ``BIDFLOW_FEAST_REGISTRY_URL`` and ``BIDFLOW_FEAST_REDIS``, expanded by
  ``feature_repo/feature_store.production.yaml``;
* ``bidflow-object-store`` (optional): ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` for the S3
  offline store and MLflow artifacts. Optional because on EKS an IAM role for the service account
  (IRSA) is the better way; without the Secret the pod keeps the role's credentials.
"""

from typing import Any, Final

from kfp import kubernetes

MLFLOW_SECRET: Final = "bidflow-mlflow"
FEAST_SECRET: Final = "bidflow-feast"
OBJECT_STORE_SECRET: Final = "bidflow-object-store"

_MLFLOW_ENV: Final = ("BIDFLOW__REGISTRY__TRACKING_URI",)
_FEAST_ENV: Final = ("BIDFLOW_FEAST_REGISTRY_URL", "BIDFLOW_FEAST_REDIS")
_OBJECT_STORE_ENV: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def attach_secrets(
    task: Any, *, registry: bool = False, feature_store: bool = False, object_store: bool = False
) -> Any:
    """Give ``task`` the Secrets it needs as environment variables.

    Args:
        task: a pipeline task.
        registry: the MLflow tracking URI (with its credentials).
        feature_store: Feast's registry database and Redis connections.
        object_store: S3 credentials only (implied by the other two: the offline store and MLflow's
            artifacts live in S3).

    Returns:
        The task.
    """
    if registry:
        kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env={k: k for k in _MLFLOW_ENV})
    if feature_store:
        kubernetes.use_secret_as_env(task, secret_name=FEAST_SECRET, secret_key_to_env={k: k for k in _FEAST_ENV})
    if registry or feature_store or object_store:
        kubernetes.use_secret_as_env(
            task, secret_name=OBJECT_STORE_SECRET, secret_key_to_env={k: k for k in _OBJECT_STORE_ENV}, optional=True
        )
    return task


def pure(task: Any) -> Any:
    """A function of its inputs alone: cached (a rerun after a later failure skips it), never retried
    (the same inputs fail the same way).
    """
    return task.set_caching_options(enable_caching=True)


def gate(task: Any) -> Any:
    """A data gate reading state outside its inputs (the reference profile): not cached, so a new
    reference is always applied, and not retried, since its verdict would not change.
    """
    return task.set_caching_options(enable_caching=False)


def stateful(task: Any, retries: int = 2) -> Any:
    """Talks to a service (MLflow, Feast's registry, Redis, S3) or changes state there: never cached
    (a cache hit would skip the side effect, or reuse a verdict made against another champion), and
    retried with backoff, since a dropped connection or an evicted pod is worth another try. Every
    such step is safe to repeat (writes replace files, apply and materialize are idempotent, gate
    tags are overwritten, registration returns the run's existing version).
    """
    task.set_caching_options(enable_caching=False)
    return task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="600s")


def compute(task: Any, cpu: str, memory: str) -> Any:
    """Request what a training-sized task needs, so the scheduler places it on a node that has it."""
    return task.set_cpu_request(cpu).set_memory_request(memory)
