"""The SparkApplication (Kubeflow Spark Operator, ``sparkoperator.k8s.io/v1beta2``) that runs one bidflow Spark step.

Pure: settings, step and image in, manifest dicts out; nothing here talks to a cluster (``bidflow.deploy.spark_submit``
does). The application runs ``python -m bidflow.engines.spark_jobs <step> --config /etc/bidflow/bidflow.yaml
[options]`` in the component image (``components/Dockerfile``: Java, pyspark, hadoop-aws and the launcher named by
:data:`LAUNCHER`), with the configuration mounted from a ConfigMap (:func:`config_map`). The steps are the job
module's own (its ``STEPS``), so a step it lacks is refused here rather than by the driver on the cluster.

What only an operator on a cluster shows (no operator or Spark cluster runs in the tests): the operator's webhook
mounting the ConfigMap and applying the security contexts (both need ``webhook.enable``, the operator chart's
default), IRSA credentials reaching S3A, and the job itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import yaml

from bidflow.config import SparkKubernetesConfig, SparkPodResources
from bidflow.engines.spark_jobs import STEPS
from bidflow.errors import ConfigError

Manifest = dict[str, Any]

GROUP: Final = "sparkoperator.k8s.io"
VERSION: Final = "v1beta2"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "SparkApplication"
PLURAL: Final = "sparkapplications"

# components/Dockerfile copies components/spark_launch.py here; Spark reads it from the image (local://).
LAUNCHER: Final = "local:///app/spark/launch.py"
CONFIG_DIR: Final = "/etc/bidflow"
CONFIG_FILE: Final = "bidflow.yaml"
# Inside the driver pod spark-submit has set this master (and the executors' settings beside it); the job builds
# its session from the config's spark.master, which must therefore name the same cluster, not local[*].
IN_CLUSTER_MASTER: Final = "k8s://https://kubernetes.default.svc:443"
# The user of components/Dockerfile.
RUN_AS_USER: Final = 10001
# hadoop-aws 3.4+ is built on the AWS SDK v2: its class for IRSA's web-identity token (the pod identity webhook
# sets AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE in pods of an annotated service account).
S3A_CREDENTIALS_PROVIDER: Final = "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider"
# Hadoop maps only s3a:// to S3A; bidflow.yaml names buckets as s3://, as pandas and Feast do.
S3A_SETTINGS: Final = {
    "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    "fs.s3a.aws.credentials.provider": S3A_CREDENTIALS_PROVIDER,
}
PART_OF_LABEL: Final = {"app.kubernetes.io/part-of": "bidflow"}
STEP_LABEL: Final = "bidflow.io/spark-step"

_NAME_LIMIT: Final = 40  # the driver pod (<name>-driver) and Spark's service names (<name>-<16 hex>-driver-svc) <= 63


def spark_step(step: str) -> str:
    """``step``, checked against the steps ``bidflow.engines.spark_jobs`` has (its ``STEPS``).

    Raises:
        ConfigError: the job has no such step.
    """
    if step not in STEPS:
        raise ConfigError("unknown Spark step", where="step", expected=", ".join(STEPS), got=step)
    return step


def job_arguments(
    step: str,
    *,
    kind: str = "",
    out: str = "",
    since: str = "",
    until: str = "",
    options: Mapping[str, str | bool] | None = None,
) -> list[str]:
    """The job's options after ``<step> --config PATH`` (empty values are left out: the job's defaults).

    Args:
        step: the ``bidflow.engines.spark_jobs`` step.
        kind, out, since, until: the options most steps take.
        options: further options of the step by name (``{"report": "s3://...", "no-register": True}``);
            True adds a flag, False or empty leaves it out.

    Raises:
        ConfigError: ``kind`` for ``features`` (it builds every view), ``kind`` or a window for ``ingest``
            (it ingests every file), no ``out`` for ``training-set``, or an option the step does not take.
    """
    spark_step(step)
    if step == "ingest" and (kind or since or until):
        raise ConfigError("the ingest step takes no kind and no time window", where="kind, since, until",
                          hint="it ingests every log file under paths.raw")  # fmt: skip
    arguments: list[str] = []
    if kind:
        if step == "features":
            raise ConfigError("the features step takes no kind", where="kind", got=kind, hint="leave it empty")
        arguments += ["--kind", kind]
    if out:
        arguments += ["--out", out]
    elif step == "training-set":
        raise ConfigError("the training-set step needs an output location", where="out", expected="a folder or URI")
    for option, value in (("--since", since), ("--until", until)):
        if value:
            arguments += [option, value]
    for name, given in (options or {}).items():
        if given is True:
            arguments.append(f"--{name}")
        elif given:
            arguments += [f"--{name}", str(given)]
    _check_parses(step, arguments)
    return arguments


def _check_parses(step: str, arguments: list[str]) -> None:
    """Refuse here what the job's own parser would refuse on the cluster, minutes later."""
    import contextlib
    import io

    from bidflow.engines.spark_jobs import parser

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser().parse_args([step, "--config", f"{CONFIG_DIR}/{CONFIG_FILE}", *arguments])
    except SystemExit as exc:
        message = errors.getvalue().strip().splitlines()
        raise ConfigError(
            f"the {step} step does not take these options",
            where="SparkApplication arguments",
            got=message[-1] if message else " ".join(arguments),
        ) from exc


def application_name(step: str, run_id: str) -> str:
    """A DNS-1123 name for one run of ``step``, unique per ``run_id`` and short enough for Spark's derived names.

    Raises:
        ConfigError: ``step`` is not a Spark step, or ``run_id`` is empty.
    """
    spark_step(step)
    if not run_id:
        raise ConfigError("a SparkApplication needs a run id", where="application_name", expected="non-empty")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"bidflow-{step}-{digest}"[:_NAME_LIMIT]


def uses_s3(config_text: str) -> bool:
    """Whether the configuration names any ``s3://`` or ``s3a://`` location (then S3A settings are added)."""
    return re.search(r"\bs3a?://", config_text) is not None


def cluster_config_text(config_text: str) -> str:
    """The configuration the driver reads: the given one with ``spark.master`` set to :data:`IN_CLUSTER_MASTER`.

    Raises:
        ConfigError: the text is not a YAML mapping, or its ``spark`` entry is not a mapping.
    """
    try:
        data = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("the configuration is not valid YAML", where="SparkApplication config", got=str(exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            "the configuration must be a mapping", where="SparkApplication config", got=type(data).__name__
        )
    spark = data.setdefault("spark", {})
    if not isinstance(spark, dict):
        raise ConfigError("'spark' must be a mapping", where="SparkApplication config", got=type(spark).__name__)
    spark["master"] = IN_CLUSTER_MASTER
    return yaml.safe_dump(data, sort_keys=False)


def config_map(name: str, namespace: str, config_text: str) -> Manifest:
    """The ConfigMap holding the driver's ``bidflow.yaml`` (:func:`cluster_config_text` of ``config_text``)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(PART_OF_LABEL)},
        "data": {CONFIG_FILE: cluster_config_text(config_text)},
    }


def spark_application(
    step: str,
    *,
    settings: SparkKubernetesConfig,
    name: str,
    image: str,
    config_map_name: str,
    s3: bool,
    spark_version: str,
    arguments: Sequence[str] = (),
) -> Manifest:
    """The SparkApplication running ``step`` in cluster mode.

    Args:
        step: the ``bidflow.engines.spark_jobs`` step.
        settings: namespace, service account, driver/executor resources, retries, ttl (``spark.kubernetes``).
        name: the application's name (:func:`application_name`).
        image: the driver's and executors' image (the component image unless ``settings.image`` says otherwise).
        config_map_name: the ConfigMap holding ``bidflow.yaml`` (:func:`config_map`), mounted at ``/etc/bidflow``.
        s3: add the S3A settings (IRSA credentials, ``s3://`` through S3A): see :func:`uses_s3`.
        spark_version: the Spark version in the image (pyspark's).
        arguments: the job's options after the step and ``--config`` (:func:`job_arguments`).

    Raises:
        ConfigError: ``step`` is not a Spark step, or ``image`` is empty.
    """
    spark_step(step)
    if not image:
        raise ConfigError("a SparkApplication needs an image", where="spark.kubernetes.image", expected="an image")
    volume_mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    spec: Manifest = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "mainApplicationFile": LAUNCHER,
        "arguments": [step, "--config", f"{CONFIG_DIR}/{CONFIG_FILE}", *arguments],
        "sparkVersion": spark_version,
        "sparkConf": {
            # the image's virtual environment: the driver and the executors' Python workers import bidflow from it
            "spark.pyspark.python": "/app/.venv/bin/python",
            "spark.pyspark.driver.python": "/app/.venv/bin/python",
        },
        "restartPolicy": _restart_policy(settings.retries),
        "timeToLiveSeconds": settings.ttl_s,
        "volumes": [{"name": "config", "configMap": {"name": config_map_name}}],
        "driver": {
            **_pod(settings.driver, settings.service_account, step),
            "volumeMounts": volume_mounts,
        },
        "executor": {
            **_pod(settings.executor, settings.service_account, step),
            "instances": settings.executor.instances,
            "volumeMounts": volume_mounts,
        },
    }
    if s3:
        spec["hadoopConf"] = dict(S3A_SETTINGS)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {**PART_OF_LABEL, STEP_LABEL: step},
        },
        "spec": spec,
    }


def _pod(resources: SparkPodResources, service_account: str, step: str) -> Manifest:
    return {
        "cores": resources.cores,
        "memory": resources.memory,
        "serviceAccount": service_account,
        "labels": {**PART_OF_LABEL, STEP_LABEL: step},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _restart_policy(retries: int) -> Manifest:
    """Never with no retries; otherwise OnFailure, which the operator requires to carry both retry counts."""
    if retries == 0:
        return {"type": "Never"}
    return {
        "type": "OnFailure",
        "onFailureRetries": retries,
        "onFailureRetryInterval": 30,
        "onSubmissionFailureRetries": retries,
        "onSubmissionFailureRetryInterval": 30,
    }
