"""``validate_clicks``: the fraud kind's data gate (``bidflow.data.validate_clicks``)."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from bidflow.components._base import component


@component
def validate_clicks(clicks: Input[Dataset], config: str, report: Output[HTML], metrics: Output[Metrics]) -> None:
    """Check a TalkingData click file's values and its converting share; fail the run if the gate fails.

    Like ``validate_data``, a bad file fails the task after its report is written, so nothing
    downstream builds features or trains on it.

    Args:
        clicks: the click file (CSV, gzip).
        config: the text of a bidflow.yaml; empty for the defaults.

    Returns:
        report: the validation report (every check, its value and limit).
        metrics: checks run and failed, rows.
    """
    import tempfile
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.data.validate import enforce, write_report
    from bidflow.data.validate_clicks import validate_clicks as validate

    settings = _runtime.config(config)
    result = validate(Path(clicks.path), settings.fraud, settings.validate_)
    with tempfile.TemporaryDirectory() as tmp:
        _runtime.publish(write_report(result, Path(tmp)), report)
    _runtime.log_metrics(metrics, {"rows": result.rows, "checks": len(result.checks), "failed": len(result.failures)})
    enforce(result, Path(report.path))
