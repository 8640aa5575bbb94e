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
    outcome = train_step(
        settings,
        _runtime.model_kind(kind, settings),
        source=Path(batch.path),
        feature_source=source,
        register=False,
        out_dir=Path(model.path),
    )
    model.metadata.update({"run_id": outcome.run_id, "model_uri": run_uri(outcome.run_id), "rows": outcome.rows})
    model.metadata.update({"framework": "xgboost", "data_version": outcome.data_version})
    _runtime.log_metrics(metrics, outcome.model.metrics)
