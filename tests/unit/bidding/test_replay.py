"""The replay protocol: ties win, the winner pays the market price, the budget caps and resets."""

from __future__ import annotations

import numpy as np

from bidflow.bidding.replay import replay_bids


def test_ties_win_and_pay_the_market_price() -> None:
    price = np.array([5, 7, 3], dtype=np.int64)
    click = np.array([1, 0, 1], dtype=np.int8)
    out = replay_bids([5, 6, 9], price, click, episode=10, budget=100, max_bid=300)
    assert out.won.tolist() == [True, False, True]
    assert (out.impressions, out.clicks, out.cost) == (2, 2, 8)
    assert out.spent.tolist() == [5, 5, 8]


def test_bids_are_capped_by_the_budget_left_and_the_episode_starts_afresh() -> None:
    price = np.array([6, 6, 6, 6], dtype=np.int64)
    click = np.zeros(4, dtype=np.int8)
    out = replay_bids([10, 10, 10, 10], price, click, episode=2, budget=10, max_bid=300)
    # episode 1: wins at 6, then only 4 left (capped bid 4 < 6 loses); episode 2: the same
    assert out.bids.tolist() == [10, 4, 10, 4]
    assert out.won.tolist() == [True, False, True, False]
    assert out.episodes == 2 and out.total_budget == 20


def test_a_replay_never_spends_more_than_an_episode_budget() -> None:
    rng = np.random.default_rng(3)
    price = rng.integers(0, 300, size=5_000)
    bids = rng.integers(0, 400, size=5_000)
    out = replay_bids(bids, price, np.zeros(5_000, dtype=np.int8), episode=100, budget=700, max_bid=300)
    assert out.spent.max() <= 700
    assert out.bids.max() <= 300
    per_episode = np.add.reduceat(np.where(out.won, price, 0), np.arange(0, 5_000, 100))
    assert per_episode.max() <= 700
    assert out.cost == int(per_episode.sum())
