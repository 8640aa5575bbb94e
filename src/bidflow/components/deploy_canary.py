"""``deploy_canary``: the registered model goes out (``bidflow.deploy.steps.deploy_step``)."""

from kfp.dsl import Dataset, Input, Output

from bidflow.components._base import component


@component
def deploy_canary(
    model_version: str, batch: Input[Dataset], config: str, percent: int, reference: Output[Dataset]
) -> str:
    """Deploy a registered bid-filter version through the configured backend (``canary.backend``).

    With no champion serving yet the version becomes the champion; otherwise it starts as a canary
    taking ``percent`` % of requests, to be promoted or rolled back by the canary analysis. The
    transition is recorded and mirrored in the MLflow registry (``canary`` alias). The drift
    reference of the version (held-out auctions: monitored features and scores) is written first.

    Args:
        model_version: the registered version (``register_model``'s output).
        batch: the ingested parquet folder (its held-out hour is the drift reference).
        config: the text of a bidflow.yaml; empty for the defaults.
        percent: the canary's share of requests, 0-100.

    Returns:
        reference: the drift reference (parquet) the monitor's detector is fitted on.
        Output: ``champion`` or ``canary``: the role the version took.
    """
    import shutil
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.deploy.steps import deploy_step

    settings = _runtime.config(config)
    done = deploy_step(settings, model_version, source=Path(batch.path), percent=percent, actor="pipeline")
    if done.reference is None:  # the kind's traffic has no reference of the monitor's shape
        Path(reference.path).write_bytes(b"")
    else:
        shutil.copyfile(done.reference, reference.path)
    reference.metadata.update({"model_version": model_version, "auctions": done.reference_rows})
    print(f"deployed version {model_version} as {done.role}")
    return done.role
