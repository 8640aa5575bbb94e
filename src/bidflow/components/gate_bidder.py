"""``gate_bidder``: the replay gate, candidate vs champion on held-out auctions (``bidding.steps.gate_step``)."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from bidflow.components._base import component


@component
def gate_bidder(
    auction_data: Input[Dataset],
    model: Input[Model],
    config: str,
    champion: str,
    metrics: Output[Metrics],
    report: Output[HTML],
) -> bool:
    """Replay the candidate and the champion on the same held-out auctions at every budget level and judge.

    The candidate passes only with strictly more clicks at every level, both held to the same budget.
    A failed gate is a verdict, not an error: the task succeeds, returns False and the pipeline
    skips registration. Every replay is logged to MLflow, and the verdict is tagged on the
    candidate's run (``gate.replay``), where registration reads it.

    Args:
        auction_data: the same folder the bidder was fitted from; its held-out test log is replayed.
        model: the candidate (``fit_bidder``'s output; its ``run_id`` metadata names the MLflow run).
        config: the text of a bidflow.yaml; empty for the defaults.
        champion: alias or version to compare with (``champion``: with none yet, the candidate's
            own linear policy); ``none`` compares with that linear policy.

    Returns:
        metrics: the verdict (``gate_passed``) and the click gain at each level.
        report: the HTML report (the verdict per level, every replay, the plots).
        Output: whether the gate passed.
    """
    import tempfile
    from pathlib import Path

    from bidflow.bidding.registry import run_uri
    from bidflow.bidding.steps import gate_step
    from bidflow.components import _runtime

    with tempfile.TemporaryDirectory() as tmp:
        outcome = gate_step(
            _runtime.config(config),
            candidate=run_uri(model.metadata["run_id"]),
            champion=None if champion.lower() == "none" else champion,
            data=Path(auction_data.path),
            report_dir=Path(tmp),
            enforce=False,
        )
        _runtime.publish(outcome.html_path, report)
    gains = {f"click_gain_{v.level:g}": v.click_gain for v in outcome.gate.levels}
    _runtime.log_metrics(metrics, {"gate_passed": outcome.passed} | gains)
    print(_runtime.verdict("replay", outcome.passed, outcome.gate.failures))
    return outcome.passed
