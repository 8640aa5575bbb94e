"""``fit_drift_detector``: alibi-detect detectors for a model version (``bidflow.deploy.steps.fit_detector``)."""

from kfp.dsl import Dataset, Input, Model, Output

from bidflow.components._base import monitor_component


@monitor_component
def fit_drift_detector(reference: Input[Dataset], config: str, detector: Output[Model]) -> str:
    """Fit the drift monitor's detectors on a version's reference and save them with ``save_detector``.

    K-S tests for the numeric features and the score, Chi-square for the categorical features
    (alibi-detect's TabularDrift), at the configured level with a Bonferroni correction. The monitor
    loads the saved folder for the version it sees serving. alibi-detect lives in the monitor's own
    environment: in a cluster this task runs on the monitor image; locally it runs in
    ``.venv-monitor``.

    The columns are the ones the reference declares (the deployed kind's drift shape). An empty
    reference (the version was not deployed, or its kind is not watched) fits nothing.

    Args:
        reference: ``deploy_canary``'s drift reference (parquet; empty: none).
        config: the text of a bidflow.yaml; empty for the defaults (``monitor.p_value``).

    Returns:
        detector: the saved detector folder (empty when there was no reference).
        Output: the backend that fitted it, or ``none``.
    """
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.deploy.steps import fit_detector

    if Path(reference.path).stat().st_size == 0:
        Path(detector.path).mkdir(parents=True, exist_ok=True)  # an output artifact must exist, even empty
        print("no drift reference: no detector fitted")
        return "none"
    cfg = _runtime.config(config)
    backend = fit_detector(Path(reference.path), Path(detector.path), cfg.monitor.p_value)
    detector.metadata.update({"backend": backend, **reference.metadata})
    print(f"drift detector ({backend}) saved to {detector.path}")
    return backend
