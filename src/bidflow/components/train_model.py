"""``train_model``: XGBoost on the batch, logged to MLflow, not registered (``bidflow.modeling.steps.train_step``)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from bidflow.components._base import component


@component
def train_model(
    batch: Input[Dataset], config: str, kind: str, feature_source: str, model: Output[Model], metrics: Output[Metrics]
) -> None:
    """Train the model on all but the latest ``evaluate.holdout_hours`` hours and log the run to MLflow.

    The model is logged but NOT registered: ``register_model`` creates the registered version only
    after the evaluation and bias gates pass. The run id travels in the model artifact's metadata.

    With ``train.engine: spark`` and ``spark.runner: operator`` the training runs as a SparkApplication
    this task submits and waits for: the job reads the batch at its artifact URI, writes the bundle
    and a report of its run beside this task's artifact, and this task copies them into it.

    Args:
        batch: the kind's data (ingested parquet for the bid filter, the iPinYou CSV for ctr).
        config: the text of a bidflow.yaml; empty for the defaults.
        kind: a registered model kind (`bidflow kinds`).
        feature_source: feast (the FeatureService training set), request (request features only), or
            empty for ``train.feature_source``.

    Returns:
        model: the model bundle (booster + bidflow_model.json); metadata ``run_id``, ``model_uri``.
        metrics: training and validation metrics (AUC, log loss, ECE, trees, seconds).
    """
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.modeling.registry import run_uri
    from bidflow.modeling.steps import train_step

    settings, source = _runtime.config(config), _runtime.feature_source(feature_source)
    name = _runtime.model_kind(kind, settings)
    if _runtime.on_operator(settings, settings.train.for_kind(name).engine):
        report = _runtime.train_on_operator(settings, config, name, batch.uri, source, model.uri, Path(model.path))
    else:
        outcome = train_step(
            settings, name, source=Path(batch.path), feature_source=source, register=False, out_dir=Path(model.path)
        )
        report = {"run_id": outcome.run_id, "rows": outcome.rows, "data_version": outcome.data_version}
        report["metrics"] = outcome.model.metrics
    model.metadata.update({"run_id": report["run_id"], "model_uri": run_uri(report["run_id"]), "rows": report["rows"]})
    model.metadata.update({"framework": "xgboost", "data_version": report["data_version"]})
    _runtime.log_metrics(metrics, report["metrics"])
