"""``register_model``: the gated model becomes the ``candidate`` version (``bidflow.modeling.steps.register_step``)."""

from kfp.dsl import Input, Model

from bidflow.components._base import component


@component
def register_model(model: Input[Model], config: str, kind: str) -> str:
    """Create the registered MLflow version of the candidate and point the ``candidate`` alias at it.

    Runs only when both gates passed (the pipeline's condition), and checks that again: the
    ``gate.evaluation`` and ``gate.fairness`` tags of the model's run must read ``passed``. The tags
    and the data version are copied onto the version, so ``bidflow promote`` sees them. A retried
    task gets the same version back, not a second one.

    Args:
        model: the candidate (``train_model``'s output; its ``run_id`` metadata names the MLflow run).
        config: the text of a bidflow.yaml; empty for the defaults.
        kind: a registered model kind (`bidflow kinds`).

    Returns:
        Output: the registered version number.
    """
    from bidflow.components import _runtime
    from bidflow.modeling.steps import register_step

    settings = _runtime.config(config)
    ref = register_step(settings, _runtime.model_kind(kind, settings), model.metadata["run_id"])
    print(f"registered {ref.label} with aliases {', '.join(ref.aliases)}")
    return ref.version
