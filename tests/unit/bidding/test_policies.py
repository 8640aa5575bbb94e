"""Policies: their bids, their fitting on a tuning log, and their artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bidflow.bidding.artifact import load_bidder, save_bidder
from bidflow.bidding.auctions import Auctions, Campaign
from bidflow.bidding.fit import BidderSettings, fit_bidder
from bidflow.bidding.policies import LinearPolicy, OrtbPolicy, running_mean
from bidflow.errors import BiddingError


def market(n: int, seed: int) -> Auctions:
    """Auctions whose click probability is the pCTR and whose price rises a little with it."""
    rng = np.random.default_rng(seed)
    pctr = rng.beta(2, 400, size=n)
    price = np.minimum(rng.gamma(2.0, 25.0, size=n) + 2000 * pctr, 300).astype(np.int64)
    click = (rng.random(n) < pctr).astype(np.int8)
    return Auctions(click, price, pctr)


def campaign() -> Campaign:
    log = market(50_000, 0)
    counts = np.bincount(log.price, minlength=301).astype(np.float64)
    return Campaign("test", len(log), int(log.click.sum()), float(log.price.sum()), counts)


def test_linear_bid_is_proportional_to_the_relative_pctr_and_capped() -> None:
    policy = LinearPolicy(episode=10, budget=1_000, max_bid=300, average_ctr=0.005, base=50.0)
    assert policy.bid(0.005, 10, 1_000) == 50
    assert policy.bid(0.010, 10, 1_000) == 100
    assert policy.bid(0.010, 10, 1_000, mean_pctr=0.010) == 50  # a CTR model running twice as high
    assert policy.bid(0.5, 10, 1_000) == 300
    assert policy.bid(0.010, 10, 30) == 30


def test_ortb_bid_is_concave_in_pctr() -> None:
    policy = OrtbPolicy(episode=10, budget=10_000, max_bid=300, average_ctr=0.005, c=30.0, lam=1e-4)
    bids = [policy.bid(p, 10, 10_000) for p in (0.001, 0.002, 0.004, 0.008)]
    assert bids == sorted(bids)
    assert bids[3] - bids[2] < 2 * (bids[1] - bids[0]) * 4


def test_running_mean_sees_only_the_past() -> None:
    assert running_mean(np.array([2.0, 4.0, 6.0])).tolist() == [2.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def fitted() -> tuple[Campaign, object]:
    c = campaign()
    tuning = [market(20_000, seed) for seed in (1, 2)]
    return c, fit_bidder(c, tuning, BidderSettings(episode=500, levels=(1 / 16, 1 / 4), served_level=1 / 16))


def test_every_policy_is_fitted_at_every_level_and_the_planned_one_wins_more_clicks(fitted) -> None:  # type: ignore[no-untyped-def]
    c, bidder = fitted
    heldout = market(40_000, 9)
    for level in (1 / 16, 1 / 4):
        outcomes = {name: policy.replay(heldout) for name, policy in bidder.policies[level].items()}
        assert set(outcomes) == {"constant", "linear", "ortb", "planned"}
        for out in outcomes.values():
            assert out.spent.max() <= bidder.budget(level)
        assert outcomes["planned"].clicks >= outcomes["constant"].clicks
    assert bidder.policy().budget == c.budget(1 / 16, 500)


def test_a_saved_bidder_replays_exactly_as_the_fitted_one(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, bidder = fitted
    loaded = load_bidder(save_bidder(bidder, tmp_path / "bidder").parent)
    heldout = market(10_000, 5)
    for level, policies in bidder.policies.items():
        for name, policy in policies.items():
            a, b = policy.replay(heldout), loaded.policies[level][name].replay(heldout)
            assert (a.clicks, a.cost, a.impressions) == (b.clicks, b.cost, b.impressions)
            assert np.array_equal(a.bids, b.bids)


def test_loading_a_folder_without_a_bidder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BiddingError, match="no fitted bidder"):
        load_bidder(tmp_path)
