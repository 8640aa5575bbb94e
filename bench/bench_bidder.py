"""Bid optimisation on real iPinYou auctions: every policy replayed under the RLB protocol.

Data: ``../shared/data/ipinyou_auction_outcomes`` (read in place; research use only), the files of the
public RLB experiments (Cai et al., WSDM 2017; github.com/han-cai/rlb-dp).

* **Campaign 2997**: the whole test period (156,063 auctions, 530 clicks). Policies are fitted on the
  training period's price histogram and totals, their parameters tuned on the campaign's validation log
  (100 episodes of 1,000 auctions the RLB authors drew for validation; 678 clicks); the test period is
  replayed once, T = 1000, at every c0. The published figures at c0 = 1/32 are the bar
  (rlb-dp README: Mcpc 48, linear 71, RLB 78, SS-MDP 80). Intervals are percentile bootstraps over the
  157 episodes (each starts with a full budget, so episodes are the independent units); the paired
  interval is of planned minus linear on the same resamples.
* **The other eight campaigns**: no test log is public, only the validation logs (100 episodes of 1,000
  auctions each). The first 50 episodes tune, the last 50 are replayed: not a time hold-out (the
  episodes' order in the file is all there is), and with 70-400 clicks per half the counts are small;
  they compare policy against policy, not against any published figure. (The data's PROVENANCE.md calls
  these logs click-enriched at about 5 %: that count includes the 100 episode-marker lines, whose
  ``click`` field holds the episode number; the auctions themselves click at 0.1-0.7 %.)
* **Landscape**: log loss of the win predictions on the 2997 test period, at the bids the planned policy
  placed there (every level pooled): the training histogram (what the policies plan with), the
  Kaplan-Meier estimate from a censored log (a linear bidder's own wins and losses on the validation log,
  prices seen only when won), the histogram of those won prices alone (what ignoring censoring gives),
  and the test period's own histogram (a floor no model can beat).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Final

import numpy as np

from bench.harness import Result
from bidflow.bidding.auctions import Auctions, campaign_files, read_auctions, read_campaign
from bidflow.bidding.fit import Bidder, BidderSettings, fit_bidder
from bidflow.bidding.landscape import from_censored, from_prices
from bidflow.bidding.replay import Outcome

DATA: Final = Path(__file__).resolve().parents[2] / "shared" / "data" / "ipinyou_auction_outcomes"
CAMPAIGNS: Final = ("1458", "2259", "2261", "2821", "3358", "3386", "3427", "3476")
PUBLISHED_2997: Final = {"mcpc": 48, "linear": 71, "rlb": 78, "ss_mdp": 80}
BOOTSTRAP: Final = 2_000


def run() -> list[Result]:
    settings = BidderSettings()
    rows = _campaign_2997(settings)
    with ProcessPoolExecutor(max_workers=2) as pool:
        for row in pool.map(_other_campaign, CAMPAIGNS):
            rows.append(row)
    return rows


def _campaign_2997(settings: BidderSettings) -> list[Result]:
    files = campaign_files(DATA, "2997")
    campaign = read_campaign(files.statistics, "2997")
    assert files.heldout is not None
    test = read_auctions(files.heldout)
    tuning = read_auctions(files.tuning)
    started = time.perf_counter()
    bidder = fit_bidder(campaign, [tuning], settings)
    fit_s = time.perf_counter() - started
    rows = []
    for level in settings.levels:
        outcomes = {name: policy.replay(test) for name, policy in bidder.policies[level].items()}
        planned, linear = outcomes["planned"], outcomes["linear"]
        low, high, diff_low, diff_high = _intervals(planned, linear, test.click, settings.episode)
        published = (
            " Published (rlb-dp README): " + ", ".join(f"{k} {v}" for k, v in PUBLISHED_2997.items()) + "."
            if level == 1 / 32
            else ""
        )
        target = "≥ 80 (RLB 78, SS-MDP 80) and > linear" if level == 1 / 32 else "> linear (same run)"
        rows.append(
            Result(
                f"bidder: 2997 test period, c0={Fraction(level).limit_denominator()}, planned policy",
                planned.clicks,
                "clicks",
                f"95% CI {low}-{high} (episode bootstrap); linear {linear.clicks}, ORTB {outcomes['ortb'].clicks}, "
                f"constant {outcomes['constant'].clicks}; planned - linear {planned.clicks - linear.clicks} "
                f"(95% CI {diff_low} to {diff_high}); planned spent {planned.cost:,} of {planned.total_budget:,} "
                f"({planned.impressions:,} impressions), never over an episode budget: "
                f"{all(o.spent.max() <= o.budget for o in outcomes.values())}; "
                f"policy {_planned_variant(bidder, level)}.{published}",
                target,
            )
        )
    rows.append(_landscape_row(bidder, test, tuning, settings))
    rows.append(Result("bidder: fit 2997 (4 policies x 5 budget levels, one process)", fit_s, "s",
                       f"tuned on the validation log ({len(tuning):,} auctions)"))  # fmt: skip
    return rows


def _planned_variant(bidder: Bidder, level: float) -> str:
    params = bidder.policies[level]["planned"].params()
    spread = "pCTR distribution" if len(params["values"]) > 1 else "average CTR (RLB)"
    return f"plans over the {spread}, normalised pCTR {params['normalize']}"


def _intervals(planned: Outcome, linear: Outcome, click: np.ndarray, episode: int) -> tuple[int, int, int, int]:
    """Percentile intervals of the planned clicks and of planned - linear, resampling episodes."""
    a, b = _episode_clicks(planned, click, episode), _episode_clicks(linear, click, episode)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))
    totals, diffs = a[draws].sum(axis=1), (a - b)[draws].sum(axis=1)
    return (
        int(np.percentile(totals, 2.5)), int(np.percentile(totals, 97.5)),
        int(np.percentile(diffs, 2.5)), int(np.percentile(diffs, 97.5)),
    )  # fmt: skip


def _episode_clicks(outcome: Outcome, click: np.ndarray, episode: int) -> np.ndarray:
    clicks = np.zeros(outcome.episodes)
    won = np.flatnonzero(outcome.won)
    np.add.at(clicks, won // episode, click[won].astype(np.float64))
    return clicks


def _landscape_row(bidder: Bidder, test: Auctions, tuning: Auctions, settings: BidderSettings) -> Result:
    bids = np.concatenate([bidder.policies[level]["planned"].replay(test).bids for level in settings.levels])
    prices = np.tile(test.price, len(settings.levels))
    censored = bidder.policies[1 / 8]["linear"].replay(tuning)
    km = from_censored(censored.bids, censored.won, tuning.price, settings.max_bid)
    naive = from_prices(tuning.price[censored.won], settings.max_bid)
    floor = from_prices(test.price, settings.max_bid)
    losses = {
        "training histogram": bidder.landscape.log_loss(bids, prices),
        "Kaplan-Meier (censored own log)": km.log_loss(bids, prices),
        "won prices only": naive.log_loss(bids, prices),
        "test histogram (floor)": floor.log_loss(bids, prices),
    }
    return Result(
        "bidder: landscape, 2997 test period, win log loss (training histogram)",
        losses["training histogram"],
        "log loss",
        "; ".join(f"{k} {v:.4f}" for k, v in losses.items())
        + f"; censored log: {censored.impressions:,} won of {len(tuning):,} auctions",
    )


def _other_campaign(campaign_id: str) -> Result:
    settings = BidderSettings()
    files = campaign_files(DATA, campaign_id)
    campaign = read_campaign(files.statistics, campaign_id)
    log = read_auctions(files.tuning)
    half = len(log) // 2
    replayed = log.tail(half)
    bidder = fit_bidder(campaign, [log.head(half)], settings)
    cells, wins = [], 0
    for level in settings.levels:
        planned = bidder.policies[level]["planned"].replay(replayed).clicks
        linear = bidder.policies[level]["linear"].replay(replayed).clicks
        wins += planned > linear
        cells.append(f"c0={Fraction(level).limit_denominator()}: {planned} vs {linear}")
    return Result(
        f"bidder: campaign {campaign_id}, last 50 validation episodes, planned > linear",
        wins,
        f"of {len(settings.levels)} levels",
        "planned vs linear clicks, " + "; ".join(cells) + f" ({half:,} auctions, {int(replayed.click.sum()):,} clicks)",
        "> linear at every c0",
    )
