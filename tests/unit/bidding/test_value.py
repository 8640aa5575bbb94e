"""The value function against an exhaustive search on tiny problems."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from bidflow.bidding.value import optimal_bid, theta_bins, value_differences

PDF = np.array([0.1, 0.3, 0.2, 0.25, 0.15])  # prices 0..4
THETAS = np.array([0.2, 0.5, 0.9])
WEIGHTS = np.array([0.5, 0.3, 0.2])
MAX_BID = 4


@cache
def brute_value(n: int, b: int) -> float:
    """Expected clicks with n auctions left and budget b, choosing each bid by full enumeration."""
    if n == 0:
        return 0.0
    total = 0.0
    for theta, weight in zip(THETAS, WEIGHTS, strict=True):
        total += weight * max(brute_gain(n, b, theta, a) for a in range(min(b, MAX_BID) + 1))
    return total


def brute_gain(n: int, b: int, theta: float, a: int) -> float:
    return sum(
        PDF[d] * (theta + brute_value(n - 1, b - d)) if d <= a else PDF[d] * brute_value(n - 1, b)
        for d in range(len(PDF))
    )


def values_from(differences: np.ndarray, n: int, b: int) -> float:
    """V[n][b] - V[n][0] from the stored differences (V[n][0] is the value with no budget: price-0 wins)."""
    return float(differences[n, :b].sum())


@pytest.mark.parametrize("budget", [3, 6, 9])
def test_differences_equal_the_exhaustive_value_function(budget: int) -> None:
    episode = 6
    differences = value_differences(PDF, THETAS, WEIGHTS, episode, budget, MAX_BID)
    for n in range(episode):
        for b in range(budget + 1):
            expected = brute_value(n, b) - brute_value(n, 0)
            assert values_from(differences, n, b) == pytest.approx(expected, abs=1e-6)


def test_the_optimal_bid_is_the_exhaustive_argmax() -> None:
    episode, budget = 6, 9
    differences = value_differences(PDF, THETAS, WEIGHTS, episode, budget, MAX_BID)
    for left in range(1, episode + 1):
        for b in range(budget + 1):
            for theta in THETAS:
                gains = [brute_gain(left, b, theta, a) for a in range(min(b, MAX_BID) + 1)]
                chosen = optimal_bid(differences, left, b, float(theta), MAX_BID)
                assert gains[chosen] == pytest.approx(max(gains), abs=1e-6)
                assert chosen <= b


def test_a_larger_budget_never_lowers_the_bid_and_plenty_bids_the_top() -> None:
    differences = value_differences(PDF, THETAS, WEIGHTS, 20, 200, MAX_BID)
    bids = [optimal_bid(differences, 20, b, 0.5, MAX_BID) for b in range(0, 200)]
    assert bids == sorted(bids)
    assert bids[-1] == MAX_BID


def test_theta_bins_keep_the_mean_and_the_mass() -> None:
    sample = np.random.default_rng(0).beta(1, 200, size=10_001)
    thetas, weights = theta_bins(sample, 16)
    assert weights.sum() == pytest.approx(1.0)
    assert (np.diff(thetas) >= 0).all()
    assert float(thetas @ weights) == pytest.approx(sample.mean())
