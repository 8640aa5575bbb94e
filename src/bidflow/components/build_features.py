"""``build_features``: the bid filter's aggregated features (``bidflow.features.build.build_bid_features``)."""

from kfp.dsl import Dataset, Input, Output

from bidflow.components._base import component


@component
def build_features(batch: Input[Dataset], config: str, features: Output[Dataset]) -> None:
    """Trailing 1 h / 24 h partner, slice and publisher statistics, written as the Feast offline sources.

    The tables go to the feature store's offline location (``features.offline_uri`` or
    ``features.offline``): Feast's sources point there, for training sets and for serving alike. This
    task's own artifact is the manifest of what it wrote (tables, rows, event-time span), which
    ``materialize_features`` reads.

    With ``features.engine: spark`` the views are built on Spark: in this task's process, or with
    ``spark.runner: operator`` as a SparkApplication this task submits and waits for. The cluster's
    job then reads the batch at its artifact URI and reports what it wrote beside this task's artifact.

    Args:
        batch: the ingested (and validated) parquet folder.
        config: the text of a bidflow.yaml; empty for the defaults.

    Returns:
        features: manifest of the written tables, its metadata holding ``first``/``last``/``views``.
    """
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.data.batch import read_batch
    from bidflow.features.build import build_bid_features, write_tables
    from bidflow.features.store import offline_base

    settings = _runtime.config(config)
    if _runtime.on_operator(settings, settings.features.engine):
        from bidflow.deploy.spark_application import job_arguments
        from bidflow.engines import job_files

        report = f"{features.uri}.spark/report.json"
        arguments = job_arguments("features", options={"batch": batch.uri, "report": report})
        _runtime.run_on_operator(settings, config, "features", arguments)
        summary = job_files.summary_from(job_files.read_json(report))
    elif settings.features.engine == "spark":
        from bidflow.engines import spark_jobs

        summary = spark_jobs.build_features(settings, Path(batch.path))
    else:
        summary = write_tables(build_bid_features(read_batch(Path(batch.path))), offline_base(settings.features))
    _runtime.write_manifest(summary, features)
