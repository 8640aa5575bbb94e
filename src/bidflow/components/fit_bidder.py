"""``fit_bidder``: landscape and policies at every budget level, logged to MLflow (``bidding.steps.fit_step``)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from bidflow.components._base import component


@component
def fit_bidder(auction_data: Input[Dataset], config: str, model: Output[Model], metrics: Output[Metrics]) -> None:
    """Fit the campaign's bid landscape and the four bidding policies at every ``bidder.levels`` level.

    The fit is logged to MLflow but NOT registered: ``register_model`` creates the registered version
    only after the replay gate passes. The run id travels in the model artifact's metadata.

    Args:
        auction_data: the folder of the campaigns' auction outcomes (statistics, tuning and test logs).
        config: the text of a bidflow.yaml; empty for the defaults (``bidder`` picks the campaign).

    Returns:
        model: the bidder folder (bidder.json); metadata ``run_id``, ``model_uri``, ``campaign``.
        metrics: tuning clicks per level and policy, the landscape's win log loss on the held-out auctions.
    """
    from pathlib import Path

    from bidflow.bidding.registry import run_uri
    from bidflow.bidding.steps import fit_step
    from bidflow.components import _runtime

    outcome = fit_step(_runtime.config(config), data=Path(auction_data.path), out_dir=Path(model.path), register=False)
    model.metadata.update({"run_id": outcome.run_id, "model_uri": run_uri(outcome.run_id)})
    model.metadata.update({"framework": "bidflow-bidder", "campaign": outcome.bidder.campaign.id})
    _runtime.log_metrics(metrics, outcome.metrics)
