"""Replay and gate reports: what each policy won and spent per budget level, in a table and in plots.

Figures are ``matplotlib.figure.Figure`` objects built directly (no ``pyplot`` state), as in
``bidflow.modeling.plots``; pages are self-contained HTML with the plots inline, as the other gate
reports (``bidflow.modeling.report``), so one file can be attached or logged to MLflow.

Plots: clicks and spend against the budget for each policy; bid against pCTR (a fixed-seed sample of
auctions); the win rate over the log (rolling over auctions); the landscape the policies planned with
(the training histogram's CDF) against the win rate each bid actually had on the held-out auctions;
the tuning curves (tuning clicks per parameter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bidflow.bidding.gate import level_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bidflow.bidding.fit import Bidder
    from bidflow.bidding.gate import ReplayGate
    from bidflow.bidding.steps import CampaignData, Replayed

SAMPLE: Final = 4_000  # auctions in the bid-vs-pCTR plot
ROLLING: Final = 5_000  # auctions per point of the rolling win rate
# Published clicks on campaign 2997 at c0 = 1/32 (T = 1000), from the README of github.com/han-cai/rlb-dp.
PUBLISHED_CAMPAIGN: Final = "2997"
PUBLISHED_LEVEL: Final = 1 / 32
PUBLISHED: Final = (("Mcpc", 48), ("Lin (linear)", 71), ("RLB (planned, average CTR)", 78), ("SS-MDP", 80))


def tuning_figure(bidder: Bidder) -> Figure:
    """Mean tuning clicks per candidate parameter, one panel per policy, one line per budget level."""
    from matplotlib.figure import Figure

    names = sorted({name for curves in bidder.tuning.values() for name in curves})
    figure = Figure(figsize=(4.2 * max(len(names), 1), 3.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, max(len(names), 1)))
    for ax, name in zip(axes, names, strict=False):
        for level, curves in bidder.tuning.items():
            curve = curves.get(name, {})
            if not curve:
                continue
            labels = list(curve)
            try:
                x: Any = [float(v) for v in labels]
            except ValueError:
                x = list(range(len(labels)))
                ax.set_xticks(x, [v.replace("', ", "'\n") for v in labels], fontsize=6)
            ax.plot(x, list(curve.values()), marker="." if len(labels) < 10 else None, label=f"c0={level_label(level)}")
        if name == "ortb":
            ax.set_xscale("log")
        ax.set(title=name, xlabel="parameter", ylabel="mean tuning clicks")
        ax.legend(fontsize=7)
    return figure


def budget_figure(replays: Sequence[Replayed]) -> Figure:
    """Clicks and spend against the budget level, one line per replayed policy."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 4.0), layout="constrained")
    clicks_ax, spend_ax = figure.subplots(1, 2)
    for name, rows in _by_name(replays).items():
        levels = [r.level for r in rows]
        clicks_ax.plot(levels, [r.outcome.clicks for r in rows], marker="o", label=name)
        spend_ax.plot([r.outcome.total_budget for r in rows], [r.outcome.cost for r in rows], marker="o", label=name)
    budgets = sorted({r.outcome.total_budget for r in replays})
    spend_ax.plot(budgets, budgets, linestyle=":", color="grey", label="budget")
    clicks_ax.set(xscale="log", xlabel="budget level c0", ylabel="clicks", title="clicks against budget")
    ticks = sorted({r.level for r in replays})
    clicks_ax.set_xticks(ticks, [level_label(v) for v in ticks])
    clicks_ax.minorticks_off()
    spend_ax.set(xscale="log", yscale="log", xlabel="budget", ylabel="spend (cost)", title="spend against budget")
    clicks_ax.legend(fontsize=7)
    spend_ax.legend(fontsize=7)
    return figure


def bids_figure(replays: Sequence[Replayed], pctr: np.ndarray) -> Figure:
    """Bid against pCTR on a fixed-seed sample of the auctions, one panel per replayed policy."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    sample = rng.choice(len(pctr), size=min(SAMPLE, len(pctr)), replace=False)
    figure = Figure(figsize=(3.4 * max(len(replays), 1), 3.2), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, max(len(replays), 1), sharey=True))
    for ax, r in zip(axes, replays, strict=False):
        ax.scatter(pctr[sample], r.outcome.bids[sample], s=3, alpha=0.35)
        ax.set(xscale="log", xlabel="pCTR", title=f"{r.name} c0={level_label(r.level)}")
    axes[0].set_ylabel("bid")
    return figure


def win_rate_figure(replays: Sequence[Replayed]) -> Figure:
    """The win rate over the log: the share of auctions won in a rolling window, per replayed policy."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 3.4), layout="constrained")
    ax = figure.subplots()
    for r in replays:
        won = r.outcome.won.astype(np.float64)
        window = max(1, min(ROLLING, len(won) // 4))
        rolling = np.convolve(won, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(won)), rolling, label=f"{r.name} c0={level_label(r.level)}", linewidth=1)
    ax.set(xlabel="auction (logged order)", ylabel=f"win rate (rolling {ROLLING:,})", title="win rate over the log")
    ax.legend(fontsize=7)
    return figure


def landscape_figure(bidder: Bidder, heldout_prices: np.ndarray) -> Figure:
    """P(win | bid): the training histogram's CDF the policies planned with, against the held-out win rate."""
    from matplotlib.figure import Figure

    bids = np.arange(bidder.landscape.max_price + 1)
    prices = np.sort(np.asarray(heldout_prices))
    empirical = np.searchsorted(prices, bids, side="right") / max(len(prices), 1)
    figure = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = figure.subplots()
    ax.plot(bids, bidder.landscape.cdf, label="training histogram (landscape)")
    ax.plot(bids, empirical, linestyle="--", label="held-out auctions (empirical)")
    ax.set(xlabel="bid", ylabel="P(win | bid)", title=f"bid landscape, campaign {bidder.campaign.id}")
    ax.legend(fontsize=8)
    return figure


def replay_html(bidder: Bidder, data: CampaignData, replays: Sequence[Replayed], model: str) -> str:
    """The replay report: a table per policy and level, the published reference, the plots."""
    from bidflow.modeling.report import _images, _page

    figures = replay_figures(bidder, data, replays)
    parts = [
        f"<h1>Replay: {escape(model)}, campaign {escape(bidder.campaign.id)}</h1>",
        f"<p>{len(data.heldout):,} held-out auctions ({escape(data.heldout_source)}), replayed in logged order "
        f"in episodes of {bidder.settings.episode:,} auctions, each with the level's budget; second price.</p>",
        "<h2>Per policy and level</h2>",
        outcome_table(replays),
        published_table(bidder.campaign.id, replays),
        "<h2>Plots</h2>",
        _images(figures),
    ]
    return _page(f"Replay {model}", parts)


def gate_html(gate: ReplayGate, bidder: Bidder, data: CampaignData, replays: Sequence[Replayed], label: str) -> str:
    """The gate report: the verdict per level, the rule, the replays and the plots."""
    from bidflow.modeling.report import _images, _page, _table, _verdict

    rows = [
        [level_label(v.level), _verdict(v.passed), f"{v.candidate.clicks}", f"{v.baseline.clicks}",
         f"{v.candidate.cost:,}", f"{v.baseline.cost:,}", f"{v.candidate.budget:,}", "; ".join(v.failures) or "-"]
        for v in gate.levels
    ]  # fmt: skip
    parts = [
        f"<h1>Replay gate: {escape(label)} {_verdict(gate.passed)}</h1>",
        f"<p>Baseline: {escape(gate.baseline)}. {len(data.heldout):,} held-out auctions "
        f"({escape(data.heldout_source)}).</p>",
        f"<p>Rule: {escape(gate.to_json()['rule'])}.</p>",
        *[f"<p><em>{escape(note)}</em></p>" for note in gate.notes],
        _table(
            ["c0", "passed", "clicks", "baseline clicks", "cost", "baseline cost", "budget", "why"],
            rows,
            raw_columns={1},
            failing=[not v.passed for v in gate.levels],
        ),
        "<h2>Replays</h2>",
        outcome_table(replays),
        published_table(bidder.campaign.id, replays),
        "<h2>Plots</h2>",
        _images(replay_figures(bidder, data, replays)),
    ]
    return _page(f"Replay gate {label}", parts)


def replay_figures(bidder: Bidder, data: CampaignData, replays: Sequence[Replayed]) -> dict[str, Figure]:
    """Every plot of a replay report (the per-auction ones at the served level, else the first replayed)."""
    if not replays:
        return {"landscape": landscape_figure(bidder, data.heldout.price)}
    levels = [r.level for r in replays]
    shown = bidder.settings.served_level if bidder.settings.served_level in levels else levels[0]
    at_level = [r for r in replays if r.level == shown]
    return {
        "budget": budget_figure(replays),
        "bids": bids_figure(at_level, data.heldout.pctr),
        "win_rate": win_rate_figure(at_level),
        "landscape": landscape_figure(bidder, data.heldout.price),
    }


def outcome_table(replays: Sequence[Replayed]) -> str:
    """Clicks, impressions, cost, budget, spend share, win rate, CPM and eCPC per replay."""
    from bidflow.modeling.report import _table

    rows = []
    for r in replays:
        s = r.outcome.summary()
        rows.append([
            r.name, level_label(r.level), f"{r.outcome.clicks:,}", f"{r.outcome.impressions:,}", f"{r.outcome.cost:,}",
            f"{r.outcome.total_budget:,}", f"{s['spend_share']:.1%}", f"{s['win_rate']:.2%}", f"{s['cpm']:.2f}",
            "-" if not r.outcome.clicks else f"{s['ecpc']:,.0f}",
        ])  # fmt: skip
    header = ["policy", "c0", "clicks", "impressions", "cost", "budget", "spend share", "win rate", "CPM", "eCPC"]
    return _table(header, rows)


def published_table(campaign: str, replays: Sequence[Replayed]) -> str:
    """The published clicks on campaign 2997 at c0 = 1/32 beside ours (empty for other campaigns or levels)."""
    from bidflow.modeling.report import _table

    ours = [r for r in replays if abs(r.level - PUBLISHED_LEVEL) < 1e-12]
    if campaign != PUBLISHED_CAMPAIGN or not ours:
        return ""
    rows = [[name, str(clicks), "published"] for name, clicks in PUBLISHED]
    rows += [[r.name, str(r.outcome.clicks), "this replay"] for r in ours]
    return (
        "<h2>Reference: published results, campaign 2997, c0 = 1/32</h2>"
        "<p>Clicks reported in the README of github.com/han-cai/rlb-dp (the RLB experiments, same test log, "
        "T = 1000).</p>" + _table(["policy", "clicks", "source"], rows)
    )


def _by_name(replays: Sequence[Replayed]) -> Mapping[str, list[Replayed]]:
    out: dict[str, list[Replayed]] = {}
    for r in sorted(replays, key=lambda r: r.level):
        out.setdefault(r.name, []).append(r)
    return out
