"""On the real campaign-2997 test period, the planned policy in RLB's own setting (average CTR, no
normalisation) reproduces the published RLB result of Cai et al. (WSDM 2017) to the auction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bidflow.bidding.auctions import campaign_files, read_auctions, read_campaign
from bidflow.bidding.landscape import from_counts
from bidflow.bidding.policies import PlannedPolicy


def test_rlb_on_campaign_2997_at_c0_one_32nd_wins_78_clicks(shared_data: Path) -> None:
    files = campaign_files(shared_data / "ipinyou_auction_outcomes", "2997")
    campaign = read_campaign(files.statistics, "2997")
    assert files.heldout is not None
    test = read_auctions(files.heldout)
    assert len(test) == 156_063
    budget = campaign.budget(1 / 32, 1000)
    policy = PlannedPolicy(
        episode=1000, budget=budget, max_bid=300, average_ctr=campaign.ctr,
        pdf=from_counts(campaign.price_counts).pdf, thetas=np.array([campaign.ctr]), weights=np.ones(1),
        normalize=False,
    )  # fmt: skip
    out = policy.replay(test)
    # github.com/han-cai/rlb-dp README: rlb, camp=2997, N=1000, c0=1/32: 78 clicks, 39680 impressions, cost 304375
    assert (out.clicks, out.impressions, out.cost) == (78, 39_680, 304_375)
    assert out.spent.max() <= budget


def test_planned_policy_without_trust_in_pctr_is_ss_mdp_and_wins_its_80_clicks(shared_data: Path) -> None:
    files = campaign_files(shared_data / "ipinyou_auction_outcomes", "2997")
    campaign = read_campaign(files.statistics, "2997")
    assert files.heldout is not None
    policy = PlannedPolicy(
        episode=1000, budget=campaign.budget(1 / 32, 1000), max_bid=300, average_ctr=campaign.ctr,
        pdf=from_counts(campaign.price_counts).pdf, thetas=np.array([campaign.ctr]), weights=np.ones(1),
        normalize=False, trust=0.0,
    )  # fmt: skip
    out = policy.replay(read_auctions(files.heldout))
    # github.com/han-cai/rlb-dp README: ss_mdp, camp=2997: 80 clicks, 40395 impressions, cost 306637
    # the value function is kept in float32: one bid at a tie of value and cost may fall the other way
    assert (out.clicks, out.impressions) == (80, 40_395)
    assert abs(out.cost - 306_637) <= 10
