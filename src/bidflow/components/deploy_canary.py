"""``deploy_canary``: the registered model goes out (``bidflow.deploy.steps.deploy_step``)."""

from kfp.dsl import Dataset, Input, Output

from bidflow.components._base import component


@component
def deploy_canary(
    model_version: str,
    batch: Input[Dataset],
    config: str,
    percent: int,
    reference: Output[Dataset],
    kind: str = "",
) -> str:
    """Deploy a registered version through the configured backend (``canary.backend``).

    With no champion serving yet the version becomes the champion; otherwise it starts as a canary
    taking ``percent`` % of requests, to be promoted or rolled back by the canary analysis. The
    transition is recorded and mirrored in the MLflow registry (``canary`` alias). The drift
    reference of the version (held-out rows: monitored features and scores) is written first. The
    deployment serves one kind (``canary.kind``): a model of another kind is not deployed, and the
    step says so (role ``skipped``, an empty reference).

    Args:
        model_version: the registered version (``register_model``'s output).
        batch: the kind's data (its held-out hours are the drift reference).
        config: the text of a bidflow.yaml; empty for the defaults.
        percent: the canary's share of requests, 0-100.
        kind: the model's kind; empty: ``canary.kind``.

    Returns:
        reference: the drift reference (parquet) the monitor's detector is fitted on (empty: none).
        Output: ``champion``, ``canary``, or ``skipped`` (the deployment serves another kind).
    """
    import shutil
    from pathlib import Path

    from bidflow.components import _runtime
    from bidflow.deploy.steps import deploy_step

    settings = _runtime.config(config)
    if kind and kind != settings.canary.kind:  # not an error: the model is registered, the deployment is another's
        Path(reference.path).write_bytes(b"")
        print(f"version {model_version} not deployed: the deployment serves '{settings.canary.kind}', not '{kind}'")
        return "skipped"
    done = deploy_step(settings, model_version, source=Path(batch.path), percent=percent, actor="pipeline")
    if done.reference is None:  # the kind has no drift shape: nothing to watch it with
        Path(reference.path).write_bytes(b"")
    else:
        shutil.copyfile(done.reference, reference.path)
    reference.metadata.update({"model_version": model_version, "rows": done.reference_rows})
    print(f"deployed version {model_version} as {done.role}")
    return done.role
