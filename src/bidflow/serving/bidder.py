"""The bidder's model server: a bid per auction from the fitted policy, paid from a budget shared in Redis.

Bid requests:

* v1, ``POST /v1/models/<name>:predict``::

      {"instances": [{"campaign": "2997", "pctr": 0.0041, "auction": "a-17"}]}
      -> {"predictions": [57], "model_version": "3"}

* v2 (Open Inference Protocol), ``POST /v2/models/<name>/infer``: inputs ``campaign`` (BYTES [n]),
  ``pctr`` (FP32 or FP64 [n]) and optionally ``auction`` (BYTES [n]); output ``bid`` (INT64 [n]).

Bids are whole price units (fen CPM); 0 means do not bid. ``auction`` is the id the notices name;
without it nothing can settle the bid, so it counts as spent at once.

Notices, ``POST /v1/models/<name>/notices`` (on the same server: ``bidflow.serving.server`` adds the
route for every model with a ``notices`` handler)::

      {"notices": [{"campaign": "2997", "auction": "a-17", "price": 40},     # won at 40
                   {"campaign": "2997", "auction": "a-18", "price": null}]}  # lost
      -> {"results": [{"auction": "a-17", "status": "won", "charged": 40, "refunded": 17, "episode": 3},
                      {"auction": "a-18", "status": "lost", "charged": 0, "refunded": 31, "episode": 3}]}

A notice whose auction has no reservation (unknown, already settled, expired) is ``"status":
"unknown"`` and changes nothing. When Redis does not answer, notices get 503 and may be sent again
as they are (settling twice is impossible).

Each auction: the budget state is read, the policy bids at it, and the bid is reserved atomically in
Redis (``bidflow.bidding.budget``: the semantics, and why the budget is never overspent). When Redis
is down or slow the bid is 0 and counted (``bidflow_bidder_zero_bids_total{reason="budget_unavailable"}``);
an exhausted budget bids 0 too. Bad input is a 400 naming the field, as on every bidflow server.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from bidflow.bidding.budget import BudgetStore, BudgetUnavailable, Plan, place_bid
from bidflow.errors import BidflowError
from bidflow.serving.base import ModelSource, ServeOptions
from bidflow.serving.bidder_bodies import Auction, notices, v1_auctions, v2_auctions
from bidflow.serving.bidder_metrics import ModelMetrics, bidder_metrics
from bidflow.serving.errors import Unavailable
from bidflow.serving.metrics import serving_metrics
from bidflow.serving.staged import StagedModel

if TYPE_CHECKING:
    from bidflow.bidding.fit import Bidder
    from bidflow.bidding.policies import Policy
    from bidflow.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """Everything a ready bidder bids with (swapped in whole on load, so a reload is atomic)."""

    bidder: Bidder
    policy: Policy
    campaign: str
    version: str
    source: str
    store: BudgetStore
    metrics: ModelMetrics


@dataclass(frozen=True)
class Bids:
    """A checked bid request (preprocess -> predict), then its bids (predict -> postprocess)."""

    v2: bool
    auctions: list[Auction]
    served: Served
    request_id: str | None = None
    bids: list[int] | None = None


class BidderModel(StagedModel):
    """Bids for one campaign's auctions from a fitted bidder (see the module docstring).

    Args:
        name: the endpoint name (``/v1/models/<name>:predict``).
        config: bidflow's configuration (``bidder``: the budget store, the reservation ttl).
        source: the fitted bidder: a folder with ``bidder.json``, or a registry alias, version or URI.
        options: request limits (``max_auctions``) and the budget store's breaker cooldown.
    """

    def __init__(self, name: str, config: Config, source: ModelSource, options: ServeOptions | None = None) -> None:
        super().__init__(name)
        self.config = config
        self.source = source
        self.options = options or ServeOptions()
        self.served: Served | None = None
        self.not_ready_reason: str | None = "not loaded yet"
        serving_metrics().model_ready.labels(name).set(0)

    def load(self) -> bool:
        """Load (or reload) the bidder and open its budget store; never raises.

        A failure leaves the previous bidder serving (or none, answering 503) and records why in
        ``not_ready_reason``. Redis is not needed to load: while it is down the server bids 0.
        """
        started = time.perf_counter()
        try:
            served = self._load()
        except Exception as exc:  # registry, download, a bad file: all make the model unready
            what = exc.what if isinstance(exc, BidflowError) else f"{type(exc).__name__}: {exc}"
            got = f" ({exc.got})" if isinstance(exc, BidflowError) and exc.got else ""
            reason = f"loading {self.source.describe()} failed: {what}{got}"[:500]
            log.error("%s", reason, exc_info=not isinstance(exc, BidflowError))
            if self.served is None:
                self.not_ready_reason = reason
            return self.served is not None
        previous, self.served = self.served, served
        self.not_ready_reason = None
        self.ready = True
        serving_metrics().model_ready.labels(self.name).set(1)
        if previous is not None:
            previous.store.close()
        log.info(
            "serving bidder %s version %s from %s (campaign %s, %s policy, budget %d per %d auctions) after %.1f s",
            self.name, served.version, served.source, served.campaign, served.policy.name, served.store.plan.budget,
            served.store.plan.episode, time.perf_counter() - started,
        )  # fmt: skip
        return True

    def _load(self) -> Served:
        from bidflow.bidding.artifact import load_bidder

        folder, version = self._fetch()
        bidder = load_bidder(folder)
        policy = bidder.policy()
        plan = Plan(bidder.budget(bidder.settings.served_level), bidder.settings.episode)
        # The planned policy computes its value function on first use: here, not in the first auction.
        policy.bid(bidder.campaign.ctr, plan.episode, plan.budget, None)
        settings = self.config.bidder
        store = BudgetStore.connect(
            settings.budget_url, self.source.name, bidder.campaign.id, plan, ttl_s=settings.reservation_ttl_s,
            timeout_s=settings.budget_timeout_s, cooldown_s=self.options.breaker_cooldown_s,
            state_age_s=settings.state_max_age_s,
        )  # fmt: skip
        metrics = bidder_metrics().model(self.name)
        metrics.budget_left.set(plan.budget)
        return Served(bidder, policy, bidder.campaign.id, version, self.source.describe(), store, metrics)

    def _fetch(self) -> tuple[Path, str]:
        """The folder holding ``bidder.json`` and the version label to report."""
        local = self.source.local
        if local is not None:
            return local, self.source.version or str(local)
        from bidflow.bidding.registry import fetch_bidder  # the registry adapter: only for registry sources

        folder, version = fetch_bidder(self.config, self.source)
        return folder, self.source.version or version

    def preprocess(self, payload: bytes | dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> Bids:
        """v1 body (bytes as they arrived, ``RawV1DataPlane``) or v2 ``InferRequest`` -> checked auctions."""
        served = self._served()
        limit = self.options.max_auctions
        if isinstance(payload, InferRequest):
            return Bids(True, v2_auctions(payload, served.campaign, limit), served, payload.id)
        return Bids(False, v1_auctions(payload, served.campaign, limit), served)

    def predict(self, request: Bids, headers: dict[str, str] | None = None) -> Bids:
        """A bid per auction, each reserved in the shared budget before it is answered."""
        served = request.served
        store, policy, metrics = served.store, served.policy, served.metrics
        bids = []
        for pctr, auction in request.auctions:
            placed = place_bid(store, policy, pctr, auction)
            bids.append(placed.bid)
            metrics.bids.inc()
            if placed.bid:
                metrics.amount.inc(placed.bid)
            elif placed.reason is not None:
                metrics.zero[placed.reason].inc()
            if placed.expired:
                metrics.reservations["expired"].inc(placed.expired)
            if placed.refused:
                metrics.rebids.inc(placed.refused)
            if placed.state is not None:
                metrics.budget_left.set(placed.state.budget)
        return Bids(request.v2, request.auctions, served, request.request_id, bids)

    def postprocess(
        self, result: Bids, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        """Bids -> the v1 body or a v2 ``InferResponse`` (output ``bid``, INT64)."""
        bids = result.bids or []
        version = result.served.version
        if result.v2:
            return InferResponse(
                response_id=result.request_id or "",
                model_name=self.name,
                model_version=version,
                infer_outputs=[InferOutput("bid", [len(bids)], "INT64", bids)],
            )
        return {"predictions": bids, "model_version": version}

    def notices(self, body: bytes) -> dict[str, Any]:
        """Settle win and loss notices (``POST /v1/models/<name>/notices``; see the module docstring).

        Raises:
            RequestError: a malformed body or notice (400).
            Unavailable: Redis did not answer (503); notices settled before it failed stay settled,
                and sending them again reports them as ``unknown``.
        """
        served = self._served()
        checked = notices(body, served.campaign)
        metrics = served.metrics
        results: list[dict[str, Any]] = []
        for auction, price in checked:
            try:
                settled = served.store.settle(auction, price)
            except BudgetUnavailable as exc:
                raise Unavailable("the budget store did not answer: send the notices again", got=exc.got) from exc
            if settled.expired:
                metrics.reservations["expired"].inc(settled.expired)
            if settled.status == "unknown":
                metrics.unknown.inc()
                results.append({"auction": auction, "status": "unknown"})
                continue
            metrics.reservations[settled.status].inc()
            results.append({"auction": auction, "status": settled.status, "charged": settled.charged,
                            "refunded": settled.refunded, "episode": settled.episode})  # fmt: skip
        return {"results": results}

    def stop(self) -> None:
        """Close the budget store's connections (KServe calls this on shutdown)."""
        if self.served is not None:
            self.served.store.close()
        super().stop()

    def _served(self) -> Served:
        served = self.served
        if served is None:  # the endpoints check readiness first; this is a guard (and the notices route's check)
            from kserve.errors import ModelNotReady

            raise ModelNotReady(self.name, self.not_ready_reason)
        return served
