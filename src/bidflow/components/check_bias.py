"""``check_bias``: the bias gate per slice (``bidflow.modeling.steps.fairness_step``)."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from bidflow.components._base import component


@component
def check_bias(
    batch: Input[Dataset],
    model: Input[Model],
    config: str,
    kind: str,
    slices: list[str],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> bool:
    """Per-slice bid recall and calibration of the candidate against the overall values.

    A slice fails when its gap exceeds ``fairness.max_recall_gap`` / ``max_calibration_gap`` by more
    than ``fairness.confidence_z`` standard errors. A failed gate is a verdict: the task succeeds,
    returns False, and the pipeline skips registration; the report and the task log name the
    failing slices. The verdict is tagged on the candidate's MLflow run (``gate.fairness``).

    Args:
        batch: the same data the model was trained on; its latest ``evaluate.holdout_hours`` are checked.
        model: the candidate (``train_model``'s output).
        config: the text of a bidflow.yaml; empty for the defaults.
        kind: a registered model kind (`bidflow kinds`).
        slices: columns to slice by; empty for ``fairness.slices``.

    Returns:
        metrics: overall recall / calibration, the number of failing slices, ``gate_passed``.
        report: the HTML report (every slice, failing ones first, their calibration curves).
        Output: whether the gate passed.
    """
    import tempfile
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.modeling.registry import run_uri
    from bidflow.modeling.steps import fairness_step

    settings, candidate = _runtime.config(config), run_uri(model.metadata["run_id"])
    with tempfile.TemporaryDirectory() as tmp:
        outcome, result = fairness_step(
            settings,
            _runtime.model_kind(kind, settings),
            source=Path(batch.path),
            candidate=candidate,
            slices=tuple(slices) or None,
            report_dir=Path(tmp),
            enforce=False,
        )
        _runtime.publish(outcome.html_path, report)
    _runtime.log_metrics(
        metrics, result.overall | {"failing_slices": len(result.failing), "gate_passed": outcome.passed}
    )
    print(_runtime.verdict("bias", outcome.passed, [f"{s.name}: {s.failures[0]}" for s in result.failing]))
    return outcome.passed
