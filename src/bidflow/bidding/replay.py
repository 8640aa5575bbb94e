"""Playing a policy through logged auctions under a budget: the standard RTB replay protocol.

Auctions come in the logged order and are cut into episodes of ``episode`` auctions; each episode
starts with the full budget. A bid (capped at the budget left and the highest bid) wins when it is at
least the market price and pays the market price. What the policy bids may depend on the state
(auctions left, budget left): those policies bid inside the loop; the others bid up front.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from bidflow.bidding.value import optimal_bid


@dataclass(frozen=True)
class Outcome:
    """What a replay won and spent.

    Attributes:
        auctions: auctions played.
        budget: the budget of one episode.
        episodes: episodes started.
        impressions: auctions won.
        clicks: clicks on them.
        cost: what they cost.
        bids: the bid placed in each auction (after the budget cap).
        won: whether each auction was won.
        spent: each auction's episode spend after it.
    """

    auctions: int
    budget: int
    episodes: int
    impressions: int
    clicks: int
    cost: int
    bids: npt.NDArray[np.int64]
    won: npt.NDArray[np.bool_]
    spent: npt.NDArray[np.int64]

    @property
    def total_budget(self) -> int:
        return self.budget * self.episodes

    @property
    def win_rate(self) -> float:
        return self.impressions / self.auctions if self.auctions else 0.0

    @property
    def cpm(self) -> float:
        """Average price paid per impression (the log's unit is already per mille)."""
        return self.cost / self.impressions if self.impressions else 0.0

    @property
    def ecpc(self) -> float:
        """Cost per click."""
        return self.cost / self.clicks if self.clicks else float("inf")

    def summary(self) -> dict[str, float]:
        return {
            "auctions": float(self.auctions),
            "impressions": float(self.impressions),
            "clicks": float(self.clicks),
            "cost": float(self.cost),
            "budget": float(self.total_budget),
            "spend_share": self.cost / self.total_budget if self.total_budget else 0.0,
            "win_rate": self.win_rate,
            "cpm": self.cpm,
            "ecpc": self.ecpc if self.clicks else float("nan"),
        }


@njit(cache=True, nogil=True)
def _replay(
    bids: npt.NDArray[np.int64],
    differences: npt.NDArray[np.float32],
    theta: npt.NDArray[np.float64],
    price: npt.NDArray[np.int64],
    episode: int,
    budget: int,
    max_bid: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """The protocol's loop. With a value function (``differences`` not empty) each bid is the optimal bid
    at the state reached; otherwise it is ``bids[i]``, capped by the budget left and the highest bid."""
    planned = differences.shape[0] > 0
    placed = np.zeros(len(price), dtype=np.int64)
    won = np.zeros(len(price), dtype=np.bool_)
    spent = np.zeros(len(price), dtype=np.int64)
    left = episode
    b = budget
    for i in range(len(price)):
        a = optimal_bid(differences, left, b, theta[i], max_bid) if planned else max(min(bids[i], b, max_bid), 0)
        placed[i] = a
        if a >= price[i]:
            won[i] = True
            b -= price[i]
        spent[i] = budget - b
        left -= 1
        if left == 0:
            left = episode
            b = budget
    return placed, won, spent


_NO_BIDS = np.zeros(0, dtype=np.int64)
_NO_PLAN = np.zeros((0, 1), dtype=np.float32)
_NO_VALUES = np.zeros(0, dtype=np.float64)


def replay_bids(
    bids: npt.ArrayLike, price: npt.NDArray[np.int64], click: npt.NDArray[np.int8],
    *, episode: int, budget: int, max_bid: int,
) -> Outcome:  # fmt: skip
    """Replay bids fixed up front (capped by the budget left as the episode goes)."""
    placed, won, spent = _replay(
        np.asarray(bids, dtype=np.int64), _NO_PLAN, _NO_VALUES, price, episode, budget, max_bid
    )
    return _outcome(placed, won, spent, price, click, episode, budget)


def replay_planned(
    differences: npt.NDArray[np.float32], theta: npt.NDArray[np.float64], price: npt.NDArray[np.int64],
    click: npt.NDArray[np.int8], *, episode: int, budget: int, max_bid: int,
) -> Outcome:  # fmt: skip
    """Replay the value-function policy: each bid from the auctions and budget left and the auction's value."""
    placed, won, spent = _replay(_NO_BIDS, differences, theta, price, episode, budget, max_bid)
    return _outcome(placed, won, spent, price, click, episode, budget)


def _outcome(
    placed: npt.NDArray[np.int64], won: npt.NDArray[np.bool_], spent: npt.NDArray[np.int64],
    price: npt.NDArray[np.int64], click: npt.NDArray[np.int8], episode: int, budget: int,
) -> Outcome:  # fmt: skip
    n = len(price)
    return Outcome(
        auctions=n,
        budget=budget,
        episodes=-(-n // episode),
        impressions=int(won.sum()),
        clicks=int(click[won].sum()),
        cost=int(price[won].sum()),
        bids=placed,
        won=won,
        spent=spent,
    )
