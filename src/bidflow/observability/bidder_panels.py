"""The bidder's own rows of its economics dashboard: what it bids, what it spends, and why it bids 0.

Read from the bidder server's metrics (``bidflow.serving.bidder_metrics``); the kind names this
module in ``Kind.panels``, so the generic dashboard code never asks which kind it draws.
"""

from __future__ import annotations

from bidflow.observability.dashboards import Panel, Query, rate, ratio

BIDS = "bidflow_bidder_bids_total"


def rows(sel: str) -> list[tuple[str, tuple[Panel, ...]]]:
    """Bidding and budget rows for the servers ``sel`` selects."""
    bidding = (
        Panel("Bids per second", "Bid requests answered, a bid of 0 included.",
              (Query(rate(BIDS, sel, "model"), "{{model}}"),), "reqps", width=8),
        Panel("Mean bid", "Sum of the bids over their number (fen CPM): how hard the policy bids as the budget goes.",
              (Query(ratio(rate("bidflow_bidder_bid_amount_total", sel, "model"), rate(BIDS, sel, "model")),
                     "{{model}}"),), width=8),
        Panel("Bids of 0, by reason", "policy: not worth a bid at the budget left; budget_exhausted: nothing left in "
              "the episode; contention: other replicas kept moving the budget; budget_unavailable: Redis down or "
              "slow (no spend without a budget).",
              (Query(ratio(rate("bidflow_bidder_zero_bids_total", sel, "reason"), f"scalar({rate(BIDS, sel)})"),
                     "{{reason}}"),), "percentunit", width=8),
    )  # fmt: skip
    budget = (
        Panel("Budget left in the episode", "As each server last saw it (fen CPM); it starts afresh every episode.",
              (Query("max by (model) (bidflow_bidder_budget_left" + sel + ")", "{{model}}"),), width=8),
        Panel("Reservations settled", "Won (charged the clearing price), lost (refunded) or expired without a "
              "notice (counted as spent: the bidder underspends, never overspends, when notices are lost).",
              (Query(rate("bidflow_bidder_reservations_total", sel, "outcome"), "{{outcome}}"),), "reqps", width=8),
        Panel("Recomputed bids and unknown notices", "Bids computed again because another replica moved the budget "
              "in between, and notices that found nothing to settle (a retry, or one after expiry).",
              (Query(rate("bidflow_bidder_rebids_total", sel), "recomputed"),
               Query(rate("bidflow_bidder_notices_unknown_total", sel), "unknown notices")), "reqps", width=8),
    )  # fmt: skip
    return [("Bidding", bidding), ("Budget", budget)]
