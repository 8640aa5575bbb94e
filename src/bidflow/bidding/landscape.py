"""The bid landscape: the distribution of the market price, hence P(win | bid) and the cost of winning.

A bid ``b`` wins when the market price is at most ``b`` (ties go to the bidder, as in the replay
protocol) and pays the market price. With prices in whole units 0..``max_price``, the landscape is
one probability per price.

Two ways to learn it:

* ``from_counts``: a histogram of observed market prices (iPinYou logs the price of every impression
  it bought, and the RLB experiments treat the training histogram as the whole market's). Laplace
  smoothing keeps every price possible.
* ``from_censored``: a bidder's own logs, where the price is seen only for the auctions it won; a
  lost auction only says the price was above the bid. A histogram of the won prices alone is biased
  low (the expensive auctions are exactly the ones lost); the Kaplan-Meier estimate
  (``scipy.stats.ecdf`` on right-censored data) is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bidflow.errors import BiddingError

EPS = 1e-12


@dataclass(frozen=True)
class Landscape:
    """P(market price = p) for p = 0..len(pdf)-1.

    Attributes:
        pdf: probability of each whole price; sums to 1.
    """

    pdf: npt.NDArray[np.float64]

    @property
    def max_price(self) -> int:
        return len(self.pdf) - 1

    @property
    def cdf(self) -> npt.NDArray[np.float64]:
        """P(price <= p): the win probability of a bid of ``p``."""
        return np.minimum(np.cumsum(self.pdf), 1.0)

    def win_probability(self, bids: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(win | bid) for each bid (a bid at or above the highest price always wins, a negative one never)."""
        b = np.floor(np.asarray(bids, dtype=np.float64))
        index = np.clip(b, 0, self.max_price).astype(np.int64)
        return np.where(b < 0, 0.0, self.cdf[index])

    def expected_cost(self, bids: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Expected payment of a bid: sum of p x P(price = p) over prices the bid wins."""
        paid = np.cumsum(self.pdf * np.arange(len(self.pdf)))
        b = np.floor(np.asarray(bids, dtype=np.float64))
        index = np.clip(b, 0, self.max_price).astype(np.int64)
        return np.where(b < 0, 0.0, paid[index])

    def log_loss(self, bids: npt.ArrayLike, prices: npt.ArrayLike) -> float:
        """Mean log loss of the predicted win probabilities against the wins the prices imply."""
        won = np.asarray(bids) >= np.asarray(prices)
        p = np.clip(self.win_probability(bids), EPS, 1 - EPS)
        return float(-np.mean(np.where(won, np.log(p), np.log1p(-p))))

    def ortb_scale(self) -> float:
        """The ``c`` of ORTB's win function w(b) = b / (c + b), fitted to this landscape by least squares
        over the bids 1..max_price (Zhang et al. 2014 fit it the same way to the training prices)."""
        from scipy.optimize import minimize_scalar

        bids = np.arange(1, self.max_price + 1, dtype=np.float64)
        target = self.win_probability(bids)

        def loss(c: float) -> float:
            return float(np.sum((bids / (c + bids) - target) ** 2))

        return float(minimize_scalar(loss, bounds=(1e-3, 10 * self.max_price), method="bounded").x)


def from_counts(counts: npt.ArrayLike, *, laplace: float = 1.0) -> Landscape:
    """The landscape of a price histogram (index = price), Laplace-smoothed.

    Raises:
        BiddingError: the histogram is empty or has a negative count.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or len(c) < 2 or (c < 0).any() or c.sum() <= 0:
        raise BiddingError("a price histogram needs at least two prices and a positive total count")
    return Landscape((c + laplace) / (c.sum() + laplace * len(c)))


def from_prices(prices: npt.ArrayLike, max_price: int, *, laplace: float = 1.0) -> Landscape:
    """The landscape of observed market prices (prices above ``max_price`` count at ``max_price``)."""
    p = np.clip(np.asarray(prices, dtype=np.int64), 0, max_price)
    return from_counts(np.bincount(p, minlength=max_price + 1), laplace=laplace)


def from_censored(bids: npt.ArrayLike, won: npt.ArrayLike, prices: npt.ArrayLike, max_price: int) -> Landscape:
    """The Kaplan-Meier landscape of a bidder's own log: ``prices[i]`` is seen where ``won[i]``; a lost
    auction only tells that the price exceeded its bid (right-censored at the bid; its price is ignored).

    Prices are whole units and a loss means price >= bid + 1, so a lost bid is censored at ``bid + 0.5``
    (between the last price it could have beaten and the first it could not). Probability mass the
    estimate leaves above the highest observation (every auction above some bid lost) goes to ``max_price``.

    Raises:
        BiddingError: no auction was won (nothing is observed).
    """
    from scipy.stats import CensoredData, ecdf

    b = np.asarray(bids, dtype=np.float64)
    p = np.asarray(prices, dtype=np.float64)
    seen = np.asarray(won, dtype=bool)
    if not seen.any():
        raise BiddingError("no won auction in the log: the landscape cannot be estimated")
    data = CensoredData(uncensored=p[seen], right=b[~seen] + 0.5)
    cdf = ecdf(data).cdf
    grid = np.arange(max_price + 1, dtype=np.float64)
    at = np.clip(cdf.evaluate(grid), 0.0, 1.0)
    at[-1] = 1.0
    pdf = np.diff(np.concatenate([[0.0], np.maximum.accumulate(at)]))
    return Landscape(pdf)
