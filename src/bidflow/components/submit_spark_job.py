"""``submit_spark_job``: one Spark step on the cluster (``bidflow.deploy.spark_submit.submit_and_wait``)."""

from bidflow.components._base import component


@component
def submit_spark_job(
    step: str,
    config: str,
    kind: str = "",
    out: str = "",
    since: str = "",
    until: str = "",
    image: str = "",
    timeout_s: float = 0.0,
) -> str:
    """Run one ``bidflow.engines.spark_jobs`` step as a SparkApplication of the Kubeflow Spark Operator.

    Creates the SparkApplication (``bidflow.deploy.spark_application``) and a ConfigMap holding the
    configuration in ``spark.kubernetes.namespace``, then waits until the operator reports COMPLETED;
    FAILED, SUBMISSION_FAILED or the timeout fail the task with the operator's error message and the
    driver pod to read logs from. The task's service account needs the chart's SparkApplication Role
    (``sparkOperator.pipelineRunner``).

    Args:
        step: a step of ``bidflow.engines.spark_jobs`` (features, training-set, train).
        config: the text of a bidflow.yaml; empty for the defaults. Its paths may be s3:// (read with
            the Spark service account's IRSA role).
        kind: the model kind (training-set, train); empty: the default kind.
        out: where the step writes (required by training-set); empty: the step's default.
        since: only rows at or after this UTC time (ISO 8601); empty: all.
        until: only rows before this UTC time (ISO 8601); empty: all.
        image: the driver's and executors' image; empty: ``spark.kubernetes.image``, else this
            release's component image.
        timeout_s: give up (and delete the application) after this many seconds; 0: ``spark.kubernetes.timeout_s``.

    Returns:
        Output: the SparkApplication's name.
    """
    from bidflow.components import _runtime
    from bidflow.deploy.spark_application import job_arguments

    settings = _runtime.config(config)
    if timeout_s:
        spark = settings.spark.model_copy(
            update={"kubernetes": settings.spark.kubernetes.model_copy(update={"timeout_s": timeout_s})}
        )
        settings = settings.model_copy(update={"spark": spark})
    arguments = job_arguments(step, kind=kind, out=out, since=since, until=until)
    return _runtime.run_on_operator(settings, config, step, arguments, image=image)
