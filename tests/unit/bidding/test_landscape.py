"""The bid landscape: probabilities from a histogram, and Kaplan-Meier on censored logs."""

from __future__ import annotations

import numpy as np
import pytest

from bidflow.bidding.landscape import from_censored, from_counts, from_prices
from bidflow.errors import BiddingError


def test_histogram_landscape_wins_ties_and_prices_what_it_wins() -> None:
    land = from_counts([0, 2, 2, 0], laplace=0.0)  # prices 1 and 2, half each
    assert land.pdf.sum() == pytest.approx(1.0)
    assert land.win_probability([0, 1, 2, 3, 99, -1]).tolist() == [0.0, 0.5, 1.0, 1.0, 1.0, 0.0]
    assert land.expected_cost([1, 2]).tolist() == pytest.approx([0.5, 1.5])


def test_laplace_smoothing_keeps_every_price_possible() -> None:
    land = from_counts([10, 0, 0, 10])
    assert (land.pdf > 0).all()
    assert land.pdf[1] == pytest.approx(1 / 24)


def test_an_empty_histogram_is_refused() -> None:
    with pytest.raises(BiddingError):
        from_counts([0, 0, 0])


def test_log_loss_prefers_the_true_landscape() -> None:
    rng = np.random.default_rng(1)
    prices = rng.integers(0, 50, size=20_000)
    bids = rng.integers(0, 60, size=20_000)
    true = from_prices(prices, 100)
    wrong = from_prices(prices // 2, 100)
    assert true.log_loss(bids, prices) < wrong.log_loss(bids, prices)


def test_kaplan_meier_recovers_the_market_from_censored_logs_where_won_prices_alone_do_not() -> None:
    rng = np.random.default_rng(7)
    prices = np.minimum(rng.gamma(3.0, 20.0, size=40_000).astype(np.int64), 300)
    bids = rng.integers(20, 140, size=len(prices))
    won = bids >= prices
    truth = from_prices(prices, 300, laplace=0.0)
    km = from_censored(bids, won, np.where(won, prices, -1), 300)
    naive = from_prices(prices[won], 300, laplace=0.0)
    grid = np.arange(20, 140)
    km_error = np.abs(km.win_probability(grid) - truth.win_probability(grid)).max()
    naive_error = np.abs(naive.win_probability(grid) - truth.win_probability(grid)).max()
    assert km_error < 0.02
    assert naive_error > 0.1  # the expensive auctions are the ones lost: won prices alone are too cheap
    assert km.log_loss(bids, prices) < naive.log_loss(bids, prices)


def test_censored_estimate_needs_a_won_auction() -> None:
    with pytest.raises(BiddingError):
        from_censored([1, 2], [False, False], [0, 0], 10)


def test_ortb_scale_fits_the_win_curve() -> None:
    land = from_prices(np.random.default_rng(0).integers(0, 60, size=10_000), 300)
    c = land.ortb_scale()
    bids = np.arange(1, 301)
    assert np.abs(bids / (c + bids) - land.win_probability(bids)).mean() < 0.15
