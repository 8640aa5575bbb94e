"""Prometheus metrics of the bidder's model server (exposed on the server's ``/metrics`` beside the others).

=================================================  =========  ======================================
metric                                             type       labels
=================================================  =========  ======================================
``bidflow_bidder_bids_total``                      counter    model (bid requests answered, 0 included)
``bidflow_bidder_bid_amount_total``                counter    model (sum of the bids answered, fen CPM)
``bidflow_bidder_zero_bids_total``                 counter    model, reason
``bidflow_bidder_reservations_total``              counter    model, outcome (won | lost | expired)
``bidflow_bidder_rebids_total``                    counter    model (bids computed again: the budget moved)
``bidflow_bidder_notices_unknown_total``           counter    model (notices with nothing to settle)
``bidflow_bidder_budget_left``                     gauge      model (the episode's budget left, last seen)
=================================================  =========  ======================================

``reason`` of a bid of 0: ``policy`` (the auction is not worth a bid at the budget left),
``budget_exhausted`` (nothing left in the episode), ``contention`` (other replicas kept moving the
budget while this one recomputed), ``budget_unavailable`` (Redis down or slow: no spend without a
budget).
The mean bid is ``rate(bid_amount_total) / rate(bids_total)``. Expired reservations are counted by
the replica whose call swept them, so only the sum over replicas is meaningful.

Created once per process on first use (``bidder_metrics()``), like ``bidflow.serving.metrics``; with
several worker processes prometheus_client's multiprocess files carry them (the budget gauge then
shows the most recent value any worker saw).
"""

from __future__ import annotations

import threading
from typing import Any, Final

from prometheus_client import REGISTRY, Counter, Gauge

ZERO_REASONS: Final = ("policy", "budget_exhausted", "contention", "budget_unavailable")
OUTCOMES: Final = ("won", "lost", "expired")


class BidderMetrics:
    """The bidder's metrics of this process; ``model()`` gives one model's pre-labelled children."""

    def __init__(self, registry: Any = REGISTRY) -> None:
        self.bids = Counter("bidflow_bidder_bids", "Bid requests answered (a bid of 0 included).", ["model"],
                            registry=registry)  # fmt: skip
        self.amount = Counter("bidflow_bidder_bid_amount", "Sum of the bids answered (fen CPM).", ["model"],
                              registry=registry)  # fmt: skip
        self.zero = Counter("bidflow_bidder_zero_bids", "Bids of 0, by reason.", ["model", "reason"], registry=registry)
        self.rebids = Counter(
            "bidflow_bidder_rebids", "Bids computed again because another replica moved the budget in between.",
            ["model"], registry=registry,
        )  # fmt: skip
        self.reservations = Counter(
            "bidflow_bidder_reservations", "Reservations settled, by outcome (expired: counted as spent).",
            ["model", "outcome"], registry=registry,
        )  # fmt: skip
        self.unknown = Counter(
            "bidflow_bidder_notices_unknown", "Notices for an auction with no reservation (unknown, settled, expired).",
            ["model"], registry=registry,
        )  # fmt: skip
        self.budget_left = Gauge(
            "bidflow_bidder_budget_left", "The episode's budget left as this server last saw it (fen CPM).",
            ["model"], registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip

    def model(self, name: str) -> ModelMetrics:
        return ModelMetrics(self, name)


class ModelMetrics:
    """One model's metric children, labelled once (a request only increments them)."""

    def __init__(self, metrics: BidderMetrics, name: str) -> None:
        self.bids = metrics.bids.labels(name)
        self.amount = metrics.amount.labels(name)
        self.zero = {reason: metrics.zero.labels(name, reason) for reason in ZERO_REASONS}
        self.reservations = {outcome: metrics.reservations.labels(name, outcome) for outcome in OUTCOMES}
        self.unknown = metrics.unknown.labels(name)
        self.rebids = metrics.rebids.labels(name)
        self.budget_left = metrics.budget_left.labels(name)


_METRICS: BidderMetrics | None = None
_LOCK = threading.Lock()


def bidder_metrics() -> BidderMetrics:
    """The process's bidder metrics (created, and registered with Prometheus, on first use)."""
    global _METRICS
    with _LOCK:
        if _METRICS is None:
            _METRICS = BidderMetrics()
        return _METRICS
