"""Bid-filter economics on a hand-made example, thresholds, and the exploration hash."""

from __future__ import annotations

import numpy as np
import pytest

from bidflow.modeling.economics import (
    FilterPolicy,
    choose_policy,
    economics,
    economics_curve,
    exploration_bucket,
    exploration_mask,
    is_exploration,
    policy_economics,
    price_estimate,
    recall_threshold,
    value_threshold,
)

# auction, partner, score, bid, price. Only auction-6 explores at a 5 % share (its bucket is 0.038;
# the others' are >= 0.35), asserted below so the example cannot silently change meaning.
ROWS = [
    ("auction-1", "p", 0.90, 1, 2.0),
    ("auction-1", "q", 0.20, 0, np.nan),
    ("auction-2", "p", 0.60, 1, 1.0),  # score == threshold: called (ties are kept)
    ("auction-2", "q", 0.70, 1, 3.0),
    ("auction-3", "p", 0.10, 0, np.nan),
    ("auction-3", "q", 0.30, 1, 1.0),  # a bid the filter loses
    ("auction-4", "p", 0.40, 0, np.nan),
    ("auction-4", "q", 0.05, 0, np.nan),
    ("auction-6", "p", 0.05, 1, 4.0),  # below threshold, but its auction explores: called, kept
    ("auction-6", "q", 0.01, 0, np.nan),  # explores: called, not saved
]
IDS = np.array([r[0] for r in ROWS])
PARTNERS = np.array([r[1] for r in ROWS])
SCORES = np.array([r[2] for r in ROWS])
BIDS = np.array([r[3] for r in ROWS])
PRICES = np.array([r[4] for r in ROWS])
POLICY = FilterPolicy({"p": 0.6, "q": 0.5}, exploration_share=0.05, target_recall=0.95)


def test_the_example_explores_exactly_auction_6() -> None:
    assert exploration_bucket("auction-6") < 0.05
    assert all(exploration_bucket(a) >= 0.05 for a in set(IDS) - {"auction-6"})


def test_hand_made_economics_with_exploration() -> None:
    result = policy_economics(POLICY, IDS, PARTNERS, BIDS, SCORES, PRICES)
    assert result.calls == 10
    assert result.calls_made == 5  # rows 1, 3, 4 by threshold + both rows of auction-6
    assert result.calls_saved == 5
    assert result.calls_saved_share == 0.5
    assert result.exploration_calls == 2
    assert (result.bids, result.bids_kept) == (5, 4)
    assert result.bid_recall == 0.8
    assert result.value == 11.0
    assert result.value_kept == 10.0
    assert result.value_kept_share == pytest.approx(10 / 11, abs=0)


def test_hand_made_economics_without_exploration() -> None:
    policy = FilterPolicy(POLICY.thresholds, exploration_share=0.0, target_recall=0.95)
    result = policy_economics(policy, IDS, PARTNERS, BIDS, SCORES, PRICES)
    assert (result.calls_made, result.calls_saved_share, result.exploration_calls) == (3, 0.7, 0)
    assert (result.bids_kept, result.bid_recall) == (3, 0.6)
    assert result.value_kept == 6.0
    assert result.value_kept_share == pytest.approx(6 / 11, abs=0)


def test_economics_of_calling_everything_saves_nothing_and_keeps_everything() -> None:
    result = economics(np.ones(10, bool), BIDS, PRICES, np.zeros(10, bool))
    assert (result.calls_saved_share, result.bid_recall, result.value_kept_share) == (0.0, 1.0, 1.0)


def test_serving_decision_matches_the_vectorised_one() -> None:
    mask = POLICY.call_mask(IDS, PARTNERS, SCORES)
    one_by_one = [POLICY.should_call(a, p, s) for a, p, s in zip(IDS, PARTNERS, SCORES, strict=True)]
    assert mask.tolist() == one_by_one


def test_recall_threshold_is_the_highest_meeting_the_target() -> None:
    scores = [0.9, 0.6, 0.05]
    assert recall_threshold(scores, 1.0) == 0.05
    assert recall_threshold(scores, 0.5) == 0.6  # ceil(1.5) = 2 bids
    assert recall_threshold(scores, 0.3) == 0.9
    assert recall_threshold([], 0.95) == 0.0  # no bids seen: never filter
    # 0.95 x 20 is 19.000000000000004 in floating point: still 19 bids, not 20.
    twenty = np.linspace(1.0, 0.05, 20)
    assert recall_threshold(twenty, 0.95) == twenty[18]


def test_choose_policy_per_partner() -> None:
    policy = choose_policy(PARTNERS, BIDS, SCORES, target_recall=0.5, exploration_share=0.05)
    assert dict(policy.thresholds) == {"p": 0.6, "q": 0.7}
    assert FilterPolicy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 0.99])
def test_per_partner_thresholds_meet_the_target_on_the_data_they_were_chosen_on(target: float) -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    partners = rng.choice(["a", "b", "c", "d"], size=n, p=[0.5, 0.3, 0.15, 0.05])
    y = rng.random(n) < np.where(partners == "a", 0.2, 0.05)
    scores = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1).round(2)  # coarse scores: many ties
    policy = choose_policy(partners, y, scores, target_recall=target, exploration_share=0.0)
    called = policy.model_mask(partners, scores)
    for partner in "abcd":
        bids = (partners == partner) & y
        recall = called[bids].mean()
        assert recall >= target
        # ... and the threshold is the highest that does: the next score up falls short.
        higher = scores[bids][scores[bids] > policy.thresholds[partner]]
        assert (len(higher) / bids.sum()) < target


def test_exploration_is_deterministic_and_close_to_its_share() -> None:
    ids = np.array([f"20261102T00-{i}" for i in range(40_000)])
    mask = exploration_mask(ids, 0.05)
    assert mask.tolist() == exploration_mask(ids, 0.05).tolist()
    assert 0.045 < mask.mean() < 0.055
    assert [is_exploration(a, 0.05) for a in ids[:200]] == mask[:200].tolist()
    assert not exploration_mask(ids, 0.0).any()
    # All partners of an exploring auction are called together.
    repeated = np.repeat(ids[:1000], 3)
    assert (exploration_mask(repeated, 0.05).reshape(-1, 3).std(axis=1) == 0).all()


def test_economics_curve_is_monotone_in_the_target() -> None:
    rng = np.random.default_rng(5)
    n = 5_000
    ids = np.array([f"a{i // 10}" for i in range(n)])
    partners = np.array([f"p{i % 10}" for i in range(n)])
    y = rng.random(n) < 0.1
    scores = np.clip(0.4 * y + rng.random(n) * 0.6, 0, 1)
    curve = economics_curve(ids, partners, y, scores, np.where(y, 1.0, np.nan), exploration_share=0.05)
    saved = [e.calls_saved_share for _, e in curve]
    recall = [e.bid_recall for _, e in curve]
    assert saved == sorted(saved, reverse=True)
    assert recall == sorted(recall)
    assert all(e.bid_recall >= t for t, e in curve)


def test_a_confidence_margin_makes_sparse_partners_cautious_and_leaves_rich_ones_near_the_target() -> None:
    rng = np.random.default_rng(3)
    sparse_scores, rich_scores = rng.random(20), rng.random(5_000)
    partners = np.array(["sparse"] * 20 + ["rich"] * 5_000)
    scores = np.concatenate([sparse_scores, rich_scores])
    y = np.ones(len(scores))
    plain = choose_policy(partners, y, scores, target_recall=0.9, exploration_share=0.0)
    cautious = choose_policy(partners, y, scores, target_recall=0.9, exploration_share=0.0, confidence_z=1.645)
    assert cautious.threshold("sparse") < plain.threshold("sparse")
    kept = np.mean(sparse_scores >= cautious.threshold("sparse"))
    assert kept >= 0.9 + 1.645 * np.sqrt(0.9 * 0.1 / 20) - 1e-9 or kept == 1.0
    rich_kept = np.mean(rich_scores >= cautious.threshold("rich"))
    assert 0.9 <= rich_kept <= 0.9 + 2 * 1.645 * np.sqrt(0.9 * 0.1 / 5_000)


def test_value_threshold_is_the_highest_keeping_the_target_share_of_value() -> None:
    scores, values = [0.9, 0.6, 0.3, 0.05], [1.0, 1.0, 6.0, 2.0]  # total 10
    assert value_threshold(scores, values, 0.2) == 0.6  # 1 + 1 = 2 of 10
    assert value_threshold(scores, values, 0.21) == 0.3
    assert value_threshold(scores, values, 0.8) == 0.3  # 8 of 10
    assert value_threshold(scores, values, 0.81) == 0.05
    assert value_threshold([], [], 0.95) == 0.0
    assert value_threshold([0.5], [np.nan], 0.95) == 0.0  # no value known: never filter


@pytest.mark.parametrize("target", [0.8, 0.95])
def test_value_objective_keeps_the_target_share_of_each_partners_bid_value(target: float) -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    partners = rng.choice(["a", "b"], size=n)
    y = rng.random(n) < 0.15
    price = np.where(y, rng.lognormal(0.0, 1.0, size=n), np.nan)
    scores = np.clip(0.2 * y + rng.random(n) * 0.8, 0, 1)
    policy = choose_policy(
        partners, y, scores, target_recall=target, exploration_share=0.0, objective="value", price=price
    )
    assert policy.objective == "value"
    assert FilterPolicy.from_json(policy.to_json()) == policy
    called = policy.model_mask(partners, scores)
    for partner in "ab":
        bids = (partners == partner) & y
        assert price[bids & called].sum() >= target * price[bids].sum()
    with pytest.raises(ValueError, match="prices"):
        choose_policy(partners, y, scores, target_recall=target, exploration_share=0.0, objective="value")


def test_price_estimate_scales_the_partner_mean_by_each_slice() -> None:
    base = np.array([2.0, 2.0, np.nan, 0.0])
    country, fmt = np.array([3.0, np.nan, 5.0, 1.0]), np.array([1.0, 4.0, 5.0, 1.0])
    estimate = price_estimate(base, [country, fmt])
    # 2 x (3/2) x (1/2); an unknown slice leaves its ratio at 1; no partner mean: 1 CPM.
    assert estimate.tolist() == pytest.approx([1.5, 4.0, 1.0, 1.0])


def test_a_value_ranked_policy_compares_score_times_estimate() -> None:
    policy = FilterPolicy(
        {"p": 1.0}, exploration_share=0.0, target_recall=0.95, objective="value", ranking="expected_value"
    )
    scores, estimate = np.array([0.5, 0.5, 0.2]), np.array([2.0, 1.0, 10.0])
    assert policy.model_mask(["p", "p", "p"], scores, estimate).tolist() == [True, False, True]
    assert [policy.should_call("auction-1", "p", s, e) for s, e in zip(scores, estimate, strict=True)] == [
        True,
        False,
        True,
    ]
    with pytest.raises(ValueError, match="price estimate"):
        policy.model_mask(["p"], scores[:1])
