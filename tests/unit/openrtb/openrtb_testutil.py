"""Helpers for the OpenRTB and serving tests: JSON paths as the decoder reports them, and the
server configuration the Prebid auction-endpoint fixtures assume."""

from __future__ import annotations

import json
import re
from typing import Any

from bidflow.openrtb import ValidationContext
from bidflow.openrtb.prebid import RESERVED_IMP_EXT_KEYS

_SEGMENT = re.compile(r"\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+)\]|\['(?P<quoted>(?:[^'\\]|\\.)*)'\]")


def parse_path(path: str) -> list[str | int]:
    """``$.imp[0].ext['a-b']`` -> ``['imp', 0, 'ext', 'a-b']``; raises ValueError if not a JSON path."""
    if not path.startswith("$"):
        raise ValueError(f"not a JSON path: {path!r}")
    out: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise ValueError(f"bad JSON path {path!r} at {pos}")
        if m.group("name") is not None:
            out.append(m.group("name"))
        elif m.group("index") is not None:
            out.append(int(m.group("index")))
        else:
            out.append(re.sub(r"\\(.)", r"\1", m.group("quoted")))
        pos = m.end()
    return out


def path_points_into(doc: Any, path: str) -> bool:
    """True when ``path`` names a value of ``doc``, or a missing key of an object in ``doc``.

    The second case is a missing required field (``$.imp[0].id`` of an impression without id).
    """
    node = doc
    segments = parse_path(path)
    for k, seg in enumerate(segments):
        last = k == len(segments) - 1
        if isinstance(seg, int):
            if not isinstance(node, list) or seg >= len(node):
                return False
            node = node[seg]
        else:
            if not isinstance(node, dict):
                return False
            if seg not in node:
                return last
            node = node[seg]
    return True


# --- the server configuration the auction-endpoint fixtures assume (shared with the serving tests) ---


def known_bidders(bidder_exchanges: list[dict[str, Any]], auction_endpoint: list[dict[str, Any]]) -> frozenset[str]:
    """Bidders the server can call, from what the fixtures say.

    The adapters of the bidder fixtures, the bidders the endpoint fixtures mock (``config.mockBidders``)
    and every bidder a valid endpoint fixture names (minus the aliases it defines). That includes
    ``bidderABC``, which a valid fixture names together with a stored bid response for it.
    """
    known = {record["bidder"] for record in bidder_exchanges}
    for record in auction_endpoint:
        for mock in (record["config"] or {}).get("mockBidders") or []:
            known.add(mock["bidderName"])
        request = record["request"]
        if not record["category"].startswith("valid-") or not isinstance(request, dict):
            continue
        aliases = {a.lower() for a in ((request.get("ext") or {}).get("prebid") or {}).get("aliases") or {}}
        for imp in request.get("imp") or []:
            ext = imp.get("ext") or {}
            prebid = ext.get("prebid") or {}
            names = {k for k in ext if k not in RESERVED_IMP_EXT_KEYS} | set(prebid.get("bidder") or {})
            names |= {s["bidder"] for s in prebid.get("storedbidresponse") or []}
            known |= {n for n in names if n.lower() not in aliases}
    return frozenset(known)


def _appnexus_params(bidder: str, params: dict[str, Any]) -> str | None:
    # The one param rule the fixtures spell out (invalid-bidder-params.json, with realParamsValidator):
    # "placementId: Invalid type. Expected: [integer,string]".
    value = params.get("placementId")
    if bidder == "appnexus" and value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
        return "placementId must be an integer or a string"
    return None


# The store the fixtures assume, written from their descriptions ("stored imp request which has a
# missing comma", "stored request with an extra curly brace"); the fixtures do not carry it.
STORED_IMPS = {
    "1": '{"id": "adUnit1", "video": {"mimes": ["video/mp4"]}, "ext": {"appnexus": {"placementId": 1}}}',
    "7": '{"id": "adUnit1" "ext": {}}',
}
STORED_REQUESTS = {"1": '{"id": "x"}', "2": '{"tmax": 500}', "3": '{"tmax": 500}}'}


def endpoint_context(record: dict[str, Any], known: frozenset[str]) -> ValidationContext:
    """The auction-entry context for one endpoint fixture, built from what the fixture says."""
    config = record["config"] or {}
    bidders = set(known)
    if config.get("aliases"):  # server-side default aliases ("mockAliases")
        bidders |= set(json.loads(config["aliases"])["ext"]["prebid"]["aliases"])
    return ValidationContext(
        auction_entry=True,
        known_bidders=frozenset(bidders),
        stored_requests=STORED_REQUESTS,
        stored_imps=STORED_IMPS,
        bidder_params=_appnexus_params if config.get("realParamsValidator") else None,
    )
