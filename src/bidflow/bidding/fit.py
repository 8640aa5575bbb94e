"""Fitting a bidder: the landscape from the training prices, then every policy at every budget level,
its parameters chosen by replaying a tuning log (never the held-out auctions the gate replays)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bidflow.bidding.auctions import Auctions, Campaign
from bidflow.bidding.landscape import Landscape, from_counts
from bidflow.bidding.names import PolicyName
from bidflow.bidding.policies import (
    ConstantPolicy,
    LinearPolicy,
    OrtbPolicy,
    PlannedPolicy,
    Policy,
    best_of,
    log_grid,
)
from bidflow.bidding.value import theta_bins

TRUST: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # pCTR trust levels the planned policy is tuned over

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BidderSettings:
    """How a bidder is fitted (``bidder`` in ``bidflow.yaml``).

    Attributes:
        episode: auctions per episode (T): the budget starts afresh every ``episode`` auctions.
        levels: budget levels c0 (share of the training cost per auction) it is fitted and judged at.
        served_level: the level the model server bids at.
        policy: the policy the server uses and the gate judges.
        value_bins: quantile bins of the pCTR distribution the planned policy may plan over.
        max_bid: the highest bid (the landscape's highest price).
    """

    episode: int = 1000
    levels: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)
    served_level: float = 1 / 32
    policy: PolicyName = "planned"
    value_bins: int = 32
    max_bid: int = 300


@dataclass
class Bidder:
    """A fitted bidder: the campaign, its landscape, and each policy fitted at each budget level.

    Attributes:
        campaign: the training-period statistics.
        landscape: the market-price distribution the policies plan with.
        settings: how it was fitted.
        policies: level -> policy name -> fitted policy.
        tuning: level -> policy name -> {parameter: mean tuning clicks} (the tuning curves).
    """

    campaign: Campaign
    landscape: Landscape
    settings: BidderSettings
    policies: dict[float, dict[PolicyName, Policy]] = field(default_factory=dict)
    tuning: dict[float, dict[str, dict[str, float]]] = field(default_factory=dict)

    def policy(self, level: float | None = None, name: PolicyName | None = None) -> Policy:
        """The fitted policy at a budget level (default: the served one)."""
        return self.policies[self.settings.served_level if level is None else level][name or self.settings.policy]

    def budget(self, level: float) -> int:
        return self.campaign.budget(level, self.settings.episode)


def fit_bidder(
    campaign: Campaign,
    tuning: Sequence[Auctions],
    settings: BidderSettings,
    *,
    landscape: Landscape | None = None,
    progress: Progress | None = None,
) -> Bidder:
    """Fit every policy at every budget level of ``settings`` on the tuning logs.

    Args:
        campaign: training-period statistics (the price histogram gives the landscape when none is given).
        tuning: logs the parameters are chosen on (replayed under each level's budget).
        settings: episode, levels, served policy.
        landscape: the market-price distribution (default: the training histogram, Laplace-smoothed).
        progress: called with a line per step.
    """
    land = landscape or from_counts(campaign.price_counts[: settings.max_bid + 1])
    bidder = Bidder(campaign, land, settings)
    logs = list(tuning)
    sample = np.concatenate([log.pctr for log in logs])
    scaled = sample * campaign.ctr / sample.mean()
    thetas, weights = theta_bins(scaled, settings.value_bins)
    for level in settings.levels:
        budget = campaign.budget(level, settings.episode)
        fitted, curves = _fit_level(campaign, land, settings, budget, logs, (thetas, weights))
        bidder.policies[level] = fitted
        bidder.tuning[level] = curves
        if progress is not None:
            progress(f"c0={level:g}: " + ", ".join(f"{n} {_describe(p)}" for n, p in fitted.items()))
    return bidder


def _fit_level(
    campaign: Campaign,
    land: Landscape,
    settings: BidderSettings,
    budget: int,
    logs: list[Auctions],
    spread: tuple[np.ndarray, np.ndarray],
) -> tuple[dict[PolicyName, Policy], dict[str, dict[str, float]]]:
    """Every policy at one budget level, each with the parameter that wins most tuning clicks."""
    common: dict[str, Any] = {
        "episode": settings.episode, "budget": budget, "max_bid": settings.max_bid, "average_ctr": campaign.ctr,
    }  # fmt: skip
    c = land.ortb_scale()
    fitted: dict[PolicyName, Policy] = {}
    curves: dict[str, dict[str, float]] = {}
    fitted["constant"], curves["constant"] = best_of(
        list(range(1, settings.max_bid + 1, 2)), lambda v: ConstantPolicy(**common, value=v), logs
    )
    fitted["linear"], curves["linear"] = best_of(
        [float(b) for b in range(2, 3 * settings.max_bid, 2)], lambda v: LinearPolicy(**common, base=v), logs
    )
    fitted["ortb"], curves["ortb"] = best_of(log_grid(1e-7, 1e-2, 80), lambda v: OrtbPolicy(**common, c=c, lam=v), logs)

    average = PlannedPolicy(
        **common, pdf=land.pdf, thetas=np.array([campaign.ctr]), weights=np.ones(1), normalize=False
    )
    spread_out = PlannedPolicy(**common, pdf=land.pdf, thetas=spread[0], weights=spread[1], normalize=False)

    def planned(variant: tuple[str, bool, float]) -> Policy:
        kind, normalize, trust = variant
        # variants of one spread share its value function (replace keeps the computed table)
        return replace(average if kind == "average" else spread_out, normalize=normalize, trust=trust)

    # RLB plans with the average CTR alone; the distribution is the recursion without that shortcut;
    # normalising guards against a CTR model whose scale moved; trust below 1 shrinks a pCTR that
    # ranks auctions less well than it claims (0: SS-MDP). The tuning log picks.
    variants = [("average", norm, trust) for norm in (False, True) for trust in TRUST]
    variants += [("distribution", norm, 1.0) for norm in (False, True)]
    fitted["planned"], curves["planned"] = best_of(variants, planned, logs)
    return fitted, curves


def _describe(policy: Policy) -> str:
    params = policy.params()
    if policy.name == "planned":
        return f"({len(params['values'])} values, normalize={params['normalize']}, trust={params['trust']})"
    return "(" + ", ".join(f"{k}={v:.4g}" for k, v in params.items() if isinstance(v, int | float)) + ")"
