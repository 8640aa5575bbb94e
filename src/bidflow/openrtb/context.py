"""What the rules may know beyond the request itself (server configuration, stores)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Checks one bidder's params (``imp.ext.prebid.bidder.<name>``): called with the core bidder name
#: (aliases resolved, lower case) and the params object; returns a message saying what is wrong, or
#: ``None`` when the params are fine. Prebid Server does this with one JSON schema per bidder.
BidderParamsCheck = Callable[[str, dict[str, Any]], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationContext:
    """Outside knowledge that turns on the rules which need it. The default knows nothing.

    Attributes:
        auction_entry: the request arrives at an auction entry point (Prebid Server's
            ``/openrtb2/auction``), not at a bidder: it must name its distribution channel
            (site with an id or a page, app, or dooh with an id or a venuetype), every
            impression must name at least one bidder in ``imp.ext``, and the banner fields that
            OpenRTB 2.5 deprecated (``wmin``, ``wmax``, ``hmin``, ``hmax``) are refused.
            Requests sent *to* a bidder need none of this.
        known_bidders: bidder names the server can call (compared case-insensitively). When
            given, bidder names in ``imp.ext``, ``ext.prebid.aliases`` targets,
            ``ext.prebid.bidadjustmentfactors`` and ``user.ext.prebid.buyeruids`` must be known
            bidders or aliases defined in the request.
        stored_requests: stored request id -> JSON document. When given, the id in
            ``ext.prebid.storedrequest.id`` must name a stored JSON object.
        stored_imps: stored impression id -> JSON document, likewise for
            ``imp[].ext.prebid.storedrequest.id``.
        bidder_params: checks the params of each known bidder an impression names.
    """

    auction_entry: bool = False
    known_bidders: frozenset[str] | None = None
    stored_requests: Mapping[str, bytes | str] | None = None
    stored_imps: Mapping[str, bytes | str] | None = None
    bidder_params: BidderParamsCheck | None = None

    def __post_init__(self) -> None:
        # Bidder names are case-insensitive in Prebid ("AppNexus" == "appnexus"); normalise once
        # here so the per-request rules compare plain lower-case strings.
        if self.known_bidders is not None:
            object.__setattr__(self, "known_bidders", frozenset(b.lower() for b in self.known_bidders))


DEFAULT_CONTEXT = ValidationContext()
