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

    Args:
        reference: ``deploy_canary``'s drift reference (parquet).
        config: the text of a bidflow.yaml; empty for the defaults (``monitor.p_value``).

    Returns:
        detector: the saved detector folder.
        Output: the backend that fitted it.
    """
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.deploy.steps import fit_detector

    cfg = _runtime.config(config)
    backend = fit_detector(Path(reference.path), Path(detector.path), cfg.monitor.p_value)
    detector.metadata.update({"backend": backend, **reference.metadata})
    print(f"drift detector ({backend}) saved to {detector.path}")
    return backend
