"""Bidding policies behind one interface: how much to bid for one auction.

Every policy answers ``bid(pctr, left, budget)`` (the auction's click probability, the auctions left in
the episode with this one, the budget left) and replays a whole log (``replay``). Each is fitted for one
budget level: its parameters are what ``fit`` chose on a tuning log, so a policy is a versioned artifact
like a model.

* ``constant``: the same bid for every auction.
* ``linear``: bid = base x pCTR / average CTR (Perlich et al. 2012).
* ``ortb``: the concave ORTB bid sqrt(c / lambda x pCTR + c^2) - c (Zhang et al. 2014), with ``c`` from the
  landscape and ``lambda`` tuned to the budget.
* ``planned``: the optimal bid of the value function over auctions and budget left (``bidflow.bidding.value``):
  budget-aware, RLB when its value distribution is the average CTR alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bidflow.bidding.auctions import Auctions
from bidflow.bidding.names import PolicyName
from bidflow.bidding.replay import Outcome, replay_bids, replay_planned
from bidflow.bidding.value import optimal_bid, value_differences


class Policy(Protocol):
    """A policy fitted for one budget level."""

    @property
    def name(self) -> PolicyName: ...

    @property
    def episode(self) -> int: ...

    @property
    def budget(self) -> int: ...

    @property
    def max_bid(self) -> int: ...

    def bid(self, pctr: float, left: int, budget: int, mean_pctr: float | None = None) -> int:
        """The bid for one auction (whole price units, 0: no bid), never above ``budget``."""
        ...

    def replay(self, auctions: Auctions) -> Outcome:
        """Play the policy through ``auctions`` under its budget."""
        ...

    def params(self) -> dict[str, Any]:
        """The fitted parameters (JSON-serialisable)."""
        ...


@dataclass(frozen=True)
class _Fixed:
    """A policy whose bid depends on the auction alone; the budget only caps it.

    The pCTR it sees is relative: scaled by average CTR / mean pCTR seen so far (``relative``), so a
    base bid tuned on one log transfers to a CTR model whose scale differs (as the RLB authors'
    validation logs' pCTRs do from their test logs').
    """

    episode: int
    budget: int
    max_bid: int
    average_ctr: float

    def raw(self, pctr: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        raise NotImplementedError

    def bid(self, pctr: float, left: int, budget: int, mean_pctr: float | None = None) -> int:
        value = relative(pctr, mean_pctr, self.average_ctr)
        return max(0, min(int(self.raw(np.array([value]))[0]), budget, self.max_bid))

    def replay(self, auctions: Auctions) -> Outcome:
        values = auctions.pctr * self.average_ctr / running_mean(auctions.pctr)
        return replay_bids(
            self.raw(values), auctions.price, auctions.click,
            episode=self.episode, budget=self.budget, max_bid=self.max_bid,
        )  # fmt: skip


@dataclass(frozen=True)
class ConstantPolicy(_Fixed):
    value: int = 0
    name: PolicyName = "constant"

    def raw(self, pctr: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return np.full(len(pctr), self.value, dtype=np.int64)

    def params(self) -> dict[str, Any]:
        return {"bid": self.value}


@dataclass(frozen=True)
class LinearPolicy(_Fixed):
    base: float = 0.0
    name: PolicyName = "linear"

    def raw(self, pctr: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return (pctr * self.base / self.average_ctr).astype(np.int64)

    def params(self) -> dict[str, Any]:
        return {"base_bid": self.base, "average_ctr": self.average_ctr}


@dataclass(frozen=True)
class OrtbPolicy(_Fixed):
    c: float = 1.0
    lam: float = 1.0
    name: PolicyName = "ortb"

    def raw(self, pctr: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return (np.sqrt(self.c / self.lam * pctr + self.c**2) - self.c).astype(np.int64)

    def params(self) -> dict[str, Any]:
        return {"c": self.c, "lambda": self.lam}


@dataclass(frozen=True)
class PlannedPolicy:
    """The value-function policy.

    Attributes:
        pdf: the landscape it plans with.
        thetas, weights: the distribution of an auction's value it plans with (one value: RLB).
        normalize: scale each pCTR by average CTR / mean pCTR seen so far, so that a CTR model whose
            scale drifted from the training period's does not over- or under-bid (the mean is of the
            pCTRs the policy was asked about: inputs only, no labels).
        average_ctr: the training period's CTR (what a normalised pCTR averages to).
        trust: how far the auction's value follows its pCTR: value = average CTR x (pCTR / average CTR)
            ^ trust. 1 bids on the pCTR as it is (RLB); 0 ignores it and plans on the budget and the
            landscape alone (SS-MDP); in between shrinks a CTR model that ranks better than it
            measures. The tuning log chooses.
    """

    episode: int
    budget: int
    max_bid: int
    pdf: npt.NDArray[np.float64]
    thetas: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    normalize: bool
    average_ctr: float
    trust: float = 1.0
    name: PolicyName = "planned"
    _table: list[npt.NDArray[np.float32]] = field(default_factory=list, repr=False, compare=False)

    @property
    def differences(self) -> npt.NDArray[np.float32]:
        """The value function's differences, computed once on first use."""
        if not self._table:
            self._table.append(
                value_differences(self.pdf, self.thetas, self.weights, self.episode, self.budget, self.max_bid)
            )
        return self._table[0]

    def value(self, pctr: float, mean_pctr: float | None) -> float:
        theta = relative(pctr, mean_pctr, self.average_ctr) if self.normalize else pctr
        if self.trust == 1.0:  # the served bid's path: scalar arithmetic, no array per request
            return theta
        return float(self.average_ctr * (max(theta, 0.0) / self.average_ctr) ** self.trust)

    def _trusted(self, theta: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.trust == 1.0:
            return theta
        return self.average_ctr * np.power(np.maximum(theta, 0.0) / self.average_ctr, self.trust)

    def bid(self, pctr: float, left: int, budget: int, mean_pctr: float | None = None) -> int:
        return int(optimal_bid(self.differences, left, max(budget, 0), self.value(pctr, mean_pctr), self.max_bid))

    def replay(self, auctions: Auctions) -> Outcome:
        theta = auctions.pctr * self.average_ctr / running_mean(auctions.pctr) if self.normalize else auctions.pctr
        return replay_planned(
            self.differences, self._trusted(theta), auctions.price, auctions.click,
            episode=self.episode, budget=self.budget, max_bid=self.max_bid,
        )  # fmt: skip

    def params(self) -> dict[str, Any]:
        return {
            "values": [float(t) for t in self.thetas],
            "weights": [float(w) for w in self.weights],
            "normalize": self.normalize,
            "average_ctr": self.average_ctr,
            "trust": self.trust,
        }


def relative(pctr: float, mean_pctr: float | None, average_ctr: float) -> float:
    """A pCTR on the training period's scale: pCTR x average CTR / mean pCTR seen (as is without a mean)."""
    if mean_pctr is None or mean_pctr <= 0:
        return pctr
    return pctr * average_ctr / mean_pctr


def running_mean(pctr: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Mean of the pCTRs before each auction (the first auction sees its own): what a live bidder knows."""
    total = np.cumsum(pctr)
    out = np.empty_like(pctr)
    out[0] = pctr[0]
    out[1:] = total[:-1] / np.arange(1, len(pctr))
    return out


def best_of(
    candidates: list[Any], make: Callable[[Any], Policy], tuning: list[Auctions]
) -> tuple[Policy, dict[str, float]]:
    """The candidate parameter whose policy wins the most clicks over the tuning logs (ties: the
    cheaper); returns the policy and every candidate's mean clicks (for the tuning curve)."""
    curve: dict[str, float] = {}
    best: tuple[float, float, Any] | None = None
    for value in candidates:
        policy = make(value)
        outcomes = [policy.replay(log) for log in tuning]
        clicks = float(np.mean([o.clicks for o in outcomes]))
        cost = float(np.mean([o.cost for o in outcomes]))
        curve[_label(value)] = clicks
        if best is None or (clicks, -cost) > (best[0], -best[1]):
            best = (clicks, cost, value)
    assert best is not None
    return make(best[2]), curve


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def log_grid(low: float, high: float, points: int) -> list[float]:
    """``points`` values from ``low`` to ``high``, evenly spaced on a log scale."""
    return [float(v) for v in np.exp(np.linspace(math.log(low), math.log(high), points))]
