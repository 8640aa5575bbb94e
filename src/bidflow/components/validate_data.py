"""``validate_data``: the data gate (``bidflow.data.validate``)."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from bidflow.components._base import component


@component
def validate_data(batch: Input[Dataset], config: str, report: Output[HTML], metrics: Output[Metrics]) -> None:
    """Check an ingested batch's schema and distributions; fail the run if the gate fails.

    A bad batch is an incident, not a verdict to branch on: the task fails (after writing its
    report), so nothing downstream trains on it. Distribution checks compare with the reference
    profile at ``paths.reference/profile.json`` when it exists; without it only the schema and
    row-level rules are checked.

    Args:
        batch: the ingested parquet folder.
        config: the text of a bidflow.yaml; empty for the defaults.

    Returns:
        report: the validation report (every check, its value and limit).
        metrics: checks run and failed, rows.
    """
    import tempfile
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.data.batch import read_frame
    from bidflow.data.profile import load_profile
    from bidflow.data.validate import enforce, validate_batch, write_report

    settings = _runtime.config(config)
    reference = settings.paths.reference / "profile.json"
    profile = load_profile(reference) if reference.is_file() else None
    result = validate_batch(read_frame(Path(batch.path)), profile, settings.validate_, batch_name=batch.uri)
    with tempfile.TemporaryDirectory() as tmp:
        _runtime.publish(write_report(result, Path(tmp)), report)
    _runtime.log_metrics(metrics, {"rows": result.rows, "checks": len(result.checks), "failed": len(result.failures)})
    enforce(result, Path(report.path))
