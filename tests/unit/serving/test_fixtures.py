"""Every real Prebid fixture request gets a well-formed decision, every invalid one a 400 naming the field.

``bidder_exchanges``: the requests Prebid Server received (``incoming_request``) and sent to a bidder
(``outbound_request``); each that is valid OpenRTB is scored, with the record's bidder as the
partner when the request names none in ``imp[].ext.prebid.bidder``. ``auction_endpoint_requests``:
the requests Prebid's auction endpoint accepts are scored under the auction-entry rules; every
``invalid-*`` one (status 400) is refused with a 400 whose ``field`` points into the request, in
both protocols.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bidflow.errors import OpenRTBError
from bidflow.openrtb import ValidationContext, decode_request_obj
from bidflow.serving.bid_filter import bidders
from tests.unit.serving.support import endpoint_context, known_bidders, points_into
from tests.unit.serving.test_http import V1, V2

# Accepted by Prebid only thanks to a stored imp and server defaults it merges (see the OpenRTB tests).
VALID_BUT_REJECTED = {"endpoints/openrtb2/sample-requests/valid-whole/supplementary/imp-info-invalid.json"}


def _well_formed(prediction: dict[str, Any], partners: list[str]) -> None:
    assert isinstance(prediction["id"], str)
    assert isinstance(prediction["explored"], bool) and prediction["fail_open"] is False
    assert [d["partner"] for d in prediction["decisions"]] == partners
    for d in prediction["decisions"]:
        assert 0.0 <= d["score"] <= 1.0 and d["threshold"] >= 0.0
        assert d["decision"] in ("call", "skip")


def test_every_valid_bidder_exchange_request_gets_a_decision(
    client: Any, bid_filter: Any, bidder_exchanges: list[dict[str, Any]]
) -> None:
    bid_filter.validation = ValidationContext()
    scored = 0
    for record in bidder_exchanges:
        for which in ("incoming_request", "outbound_request"):
            request = record[which]
            if request is None:
                continue
            try:
                named = bidders(decode_request_obj(request))
            except OpenRTBError:
                continue  # not valid OpenRTB: the OpenRTB tests pin every such fixture and its reason
            # Requests naming bidders are scored for those; the others for the bidder they were sent to.
            partners = named or [record["bidder"]]
            instance = {"request": request} if named else {"request": request, "partners": partners}
            response = client.post(V1, json={"instances": [instance]})
            assert response.status_code == 200, (record["source_path"], which, response.text)
            _well_formed(response.json()["predictions"][0], partners)
            scored += 1
    assert scored > 4_000  # 5,195 requests, ~800 of them rejected by the OpenRTB rules


def test_every_accepted_auction_endpoint_request_gets_a_decision(
    client: Any, bid_filter: Any, bidder_exchanges: list[dict[str, Any]], auction_endpoint: list[dict[str, Any]]
) -> None:
    known = known_bidders(bidder_exchanges, auction_endpoint)
    accepted = [
        r for r in auction_endpoint if r["expected_http_status"] == 200 and not r["category"].startswith("invalid-")
    ]
    scored = 0
    try:
        for record in accepted:
            bid_filter.validation = endpoint_context(record, known)
            partners = ["appnexus"]  # stored imps and aliases may leave the request naming none itself
            response = client.post(V1, json={"instances": [{"request": record["request"], "partners": partners}]})
            if record["source_path"] in VALID_BUT_REJECTED:
                assert response.status_code == 400
                continue
            assert response.status_code == 200, (record["source_path"], response.text)
            _well_formed(response.json()["predictions"][0], partners)
            scored += 1
    finally:
        bid_filter.validation = ValidationContext()
    assert scored == 122  # 123 accepted by Prebid, less the one above


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_every_invalid_auction_endpoint_request_is_a_400_naming_the_field(
    client: Any,
    bid_filter: Any,
    bidder_exchanges: list[dict[str, Any]],
    auction_endpoint: list[dict[str, Any]],
    protocol: str,
) -> None:
    known = known_bidders(bidder_exchanges, auction_endpoint)
    invalid = [r for r in auction_endpoint if r["category"].startswith("invalid-") and r["expected_http_status"] == 400]
    assert len(invalid) == 108
    problems = []
    try:
        for record in invalid:
            bid_filter.validation = endpoint_context(record, known)
            request = record["request"]
            if protocol == "v1":
                prefix = "$.instances[0].request"
                response = client.post(V1, json={"instances": [{"request": request, "partners": ["appnexus"]}]})
            else:
                prefix = "$.inputs[0].data[0]"
                text = request if isinstance(request, str) else json.dumps(request)
                inputs = [{"name": "request", "shape": [1], "datatype": "BYTES", "data": [text]}]
                inputs.append({"name": "partners", "shape": [1], "datatype": "BYTES", "data": ["appnexus"]})
                response = client.post(V2, json={"inputs": inputs})
            if response.status_code != 400:
                problems.append(f"{record['source_path']}: {response.status_code}")
                continue
            field = response.json()["field"]
            if not field.startswith(prefix):
                problems.append(f"{record['source_path']}: field {field} is not inside the request")
                continue
            inner = "$" + field[len(prefix) :]
            if isinstance(request, dict) and not points_into(request, inner):
                problems.append(f"{record['source_path']}: {inner} does not point into the request")
    finally:
        bid_filter.validation = ValidationContext()
    assert not problems, "\n".join(problems)
