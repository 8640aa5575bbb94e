"""The bidder pipeline: wiring only (every step is a ``bidflow.components`` component).

import the campaigns' auction outcomes -> fit the landscape and the policies (logged, not
registered) -> replay gate (candidate vs champion on the held-out auctions, every budget level) ->
(gate passed) register as ``candidate``.

Promotion to ``champion`` stays a decision (``bidflow promote --kind bidder``, which requires the
``gate.replay`` tag); the served bidder is deployed by its model server (``bidflow.serving.bidder``).
There is no ingest, data gate or feature step: the bidder learns from a fixed, read-only research
data set (the RLB experiments' iPinYou files), read in place, whose loader rejects a file without
the expected columns.
"""

from typing import NamedTuple

from kfp import dsl

from bidflow.components.fit_bidder import fit_bidder
from bidflow.components.gate_bidder import gate_bidder
from bidflow.components.register_model import register_model
from bidflow.kinds.bidder import NAME
from bidflow.pipelines import _dsl, platform

PIPELINE: str = "bidflow-bidder-training"


class BidderOutputs(NamedTuple):
    """What a bidder run hands back: the candidate, the replay gate's verdict and its report."""

    model: dsl.Model
    replay_passed: bool
    replay_report: dsl.HTML


@_dsl.pipeline(name=PIPELINE, description="Auction outcomes to a bidder gated on replayed auctions, registered.")
def bidder_pipeline(
    auction_data: str = "s3://bidflow-data/ipinyou/auction-outcomes",
    config: str = "",
    champion: str = "champion",
) -> BidderOutputs:
    """Fit the bidder of ``bidder.campaign`` and register it only if it beats the champion on replay.

    Args:
        auction_data: URI of the folder of auction outcomes (info_<id>.json, validation_by_campaign/,
            test_theta_<id>.csv.gz).
        config: the text of a bidflow.yaml; empty for the defaults. Secrets are not put here: the
            tasks get them from Kubernetes Secrets as BIDFLOW__* environment overrides.
        champion: the alias or version the candidate must beat; none to compare with its own linear policy.

    Returns:
        The candidate bidder, the replay gate's verdict and its HTML report.
    """
    data = dsl.importer(artifact_uri=auction_data, artifact_class=dsl.Dataset, reimport=False)
    data.set_display_name("auction-outcomes")

    fit = fit_bidder(auction_data=data.output, config=config)
    platform.stateful(fit, retries=1)
    platform.compute(fit, cpu="2", memory="4G")
    gate = gate_bidder(auction_data=data.output, model=fit.outputs["model"], config=config, champion=champion)
    platform.stateful(gate)
    for task in (fit, gate):
        platform.attach_secrets(task, registry=True)

    with dsl.If(gate.outputs["Output"] == True, name="replay-gate-passed"):  # noqa: E712
        register = register_model(model=fit.outputs["model"], config=config, kind=NAME)
        platform.stateful(register)
        platform.attach_secrets(register, registry=True)

    return BidderOutputs(
        model=fit.outputs["model"], replay_passed=gate.outputs["Output"], replay_report=gate.outputs["report"]
    )
