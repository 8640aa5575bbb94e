"""``evaluate_model``: champion/challenger gate and bid-filter economics (``bidflow.modeling.steps.evaluate_step``)."""

from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from bidflow.components._base import component


@component
def evaluate_model(
    batch: Input[Dataset],
    model: Input[Model],
    config: str,
    kind: str,
    champion: str,
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
) -> bool:
    """Score the candidate and the champion on the held-out hours and apply the release gate.

    A failed gate is a verdict, not an error: the task succeeds, returns False and the pipeline
    skips registration; the report says which check failed. The verdict is also tagged on the
    candidate's MLflow run (``gate.evaluation``).

    Args:
        batch: the same data the model was trained on; its latest ``evaluate.holdout_hours`` are scored.
        model: the candidate (``train_model``'s output; its ``run_id`` metadata names the MLflow run).
        config: the text of a bidflow.yaml; empty for the defaults.
        kind: a registered model kind (`bidflow kinds`).
        champion: alias or version to compare with (``champion``: the first model passes with a
            note); ``none`` compares with nothing.

    Returns:
        metrics: the candidate's metrics (AUC, log loss, ECE, calls saved, bid recall), the
            champion's with a ``champion_`` prefix, and ``gate_passed``.
        roc: the candidate's ROC curve on the held-out rows.
        report: the HTML report (metrics, economics table, ROC / calibration / economics plots).
        Output: whether the gate passed.
    """
    import tempfile
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.modeling.registry import run_uri
    from bidflow.modeling.steps import evaluate_step

    settings, candidate = _runtime.config(config), run_uri(model.metadata["run_id"])
    with tempfile.TemporaryDirectory() as tmp:
        outcome, result = evaluate_step(
            settings,
            _runtime.model_kind(kind, settings),
            source=Path(batch.path),
            candidate=candidate,
            champion=None if champion.lower() == "none" else champion,
            report_dir=Path(tmp),
            enforce=False,
        )
        _runtime.publish(outcome.html_path, report)
    _runtime.log_metrics(metrics, result.candidate.metrics | {"gate_passed": outcome.passed})
    _runtime.log_metrics(metrics, result.champion.metrics if result.champion else {}, prefix="champion_")
    _runtime.log_roc(roc, result.y, result.candidate.scores)
    print(
        _runtime.verdict(
            "evaluation", outcome.passed, [f"{c.name} {c.value:.4f} vs {c.limit:.4f}" for c in result.gate.failed]
        )
    )
    return outcome.passed
