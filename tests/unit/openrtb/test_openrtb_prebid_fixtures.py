"""The real-world Prebid Server fixtures (``openrtb_prebid_fixtures``) through the decoder.

Two files, two questions:

* ``bidder_exchanges``: requests hand-written by ~216 adapter maintainers. Does every request that
  is valid OpenRTB decode, and is every rejection a genuine defect of the fixture? About 13% are
  rejected: many supplemental fixtures are broken on purpose (to test an adapter's error path),
  several bidders speak a proprietary JSON protocol, and placeholders such as
  ``"native": {"request": "{json string 1}"}`` are common. There are far too many to list one by
  one, so ``EXPECTED_REJECTIONS`` pins them exactly by (request, JSON path, rule) with a count and
  the reason; any new rejection, or any rejection that goes away, fails the test.
* ``auction_endpoint``: Prebid Server's own accept/reject fixtures. Every ``invalid-*`` request
  with status 400 must be rejected at a real JSON path, every ``valid-*`` request accepted.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Any

import pytest
from openrtb_testutil import endpoint_context, known_bidders, path_points_into

from bidflow.errors import OpenRTBError
from bidflow.openrtb import decode_request, decode_request_obj, encode_request

# --- bidder_exchanges.jsonl.gz ------------------------------------------------------------------

# (which request, JSON path with indices removed, rule with numbers removed) -> (count, reason).
# "incoming" is the request Prebid Server received (mockBidRequest), "outbound" the body it sent
# to the bidder. Reasons were checked by reading the fixtures.
EXPECTED_REJECTIONS: dict[tuple[str, str, str], tuple[int, str]] = {
    # Not OpenRTB at all: the bidder's wire protocol is its own JSON (see NON_OPENRTB_BIDDERS).
    ("outbound", "$.id", "required field 'id' is missing"): (172, "proprietary request body, no OpenRTB id/imp"),
    ("outbound", "$.test", "wrong type at $.test"): (8, "mediasquare's proprietary body (test: true, no id/imp)"),
    # Broken on purpose: supplemental fixtures testing an adapter's error handling.
    ("incoming", "$.imp[].ext", "wrong type at $.imp[N].ext"): (55, "imp.ext is a string/number/array, not an object"),
    ("outbound", "$.imp[].ext", "wrong type at $.imp[N].ext"): (2, "tpmn/trustx pass the malformed imp.ext through"),
    ("incoming", "$.regs.ext", "wrong type at $.regs.ext"): (1, "regs.ext is a string"),
    ("incoming", "$.user.ext", "wrong type at $.user.ext"): (1, "user.ext is a string"),
    ("incoming", "$.site.publisher.ext", "wrong type at $.site.publisher.ext"): (1, "site.publisher.ext is a string"),
    ("incoming", "$.imp", "request.imp must contain at least one impression"): (27, "imp: [] (no-imps fixtures)"),
    ("incoming", "$.imp", "required field 'imp' is missing"): (5, "no imp at all"),
    ("incoming", "$.id", "required field 'id' is missing"): (1, "request without id (mediasquare)"),
    ("incoming", "$.imp[].id", "required field 'id' is missing"): (8, "impression without id"),
    ("incoming", "$.imp[].id", "impression id repeats $.imp[N].id; impression ids must be unique"): (
        12,
        "two imps share an id",
    ),
    ("outbound", "$.imp[].id", "impression id repeats $.imp[N].id; impression ids must be unique"): (
        2,
        "bliink/logicad split one imp per format, keeping the id",
    ),
    ("incoming", "$.imp[]", "an impression must offer at least one of banner, video, audio, native"): (
        49,
        "no media object (bad_media_type fixtures, typo 'Xbanner')",
    ),
    ("outbound", "$.imp[]", "an impression must offer at least one of banner, video, audio, native"): (
        29,
        "same, passed through",
    ),
    ("incoming", "$.imp[].banner", "banner has no size"): (22, "banner: {} without w/h or format"),
    ("outbound", "$.imp[].banner", "banner has no size"): (7, "same, passed through"),
    ("incoming", "$.imp[].banner.format[]", "a fixed-size format needs non-zero w and h"): (
        1,
        "format {w: 300} without h",
    ),
    ("incoming", "$.imp[].banner.format[]", "a format needs non-zero {w, h} or non-zero {wmin, wratio, hratio}"): (
        1,
        "format {}",
    ),
    ("outbound", "$.imp[].banner.w", "banner.w must not be negative"): (
        11,
        "audienceNetwork sends w: -1 (Meta's 'full width')",
    ),
    ("outbound", "$.imp[].bidfloor", "bidfloor must not be negative"): (1, "conversant test with bidfloor -3"),
    ("incoming", "$.imp[].video.mimes", "video.mimes must list at least one MIME type"): (
        28,
        "video without mimes (required by the spec)",
    ),
    ("outbound", "$.imp[].video.mimes", "video.mimes must list at least one MIME type"): (4, "same, passed through"),
    ("incoming", "$.imp[].audio.mimes", "audio.mimes must list at least one MIME type"): (4, "audio without mimes"),
    ("outbound", "$.imp[].audio.mimes", "audio.mimes must list at least one MIME type"): (3, "same, passed through"),
    ("incoming", "$", "a request may carry only one of site, app, dooh"): (4, "both site and app"),
    ("outbound", "$", "a request may carry only one of site, app, dooh"): (2, "both site and app, passed through"),
    ("incoming", "$.test", "test is a flag"): (9, "impactify fixtures send test: 3"),
    ("outbound", "$.test", "test is a flag"): (9, "same, passed through"),
    ("incoming", "$.app.paid", "paid is a flag"): (1, "stroeerCore sends app.paid: 2"),
    ("outbound", "$.app.paid", "paid is a flag"): (1, "same, passed through"),
    ("incoming", "$.app.ext.prebid.source", "app.ext.prebid.source must be a string"): (
        1,
        "connatix test with source: 123",
    ),
    ("outbound", "$.app.ext.prebid.source", "app.ext.prebid.source must be a string"): (1, "same, passed through"),
    ("incoming", "$.imp[].ext.prebid", "imp.ext.prebid must be an object"): (
        1,
        "resetdigital: imp.ext.prebid is a string",
    ),
    ("incoming", "$.imp[].ext.prebid.storedrequest.id", "a stored request id must be a non-empty string"): (
        1,
        "teal: storedrequest.id is a number",
    ),
    # native.request must hold a Native 1.x request (a JSON string); many fixtures use placeholders.
    ("incoming", "$.imp[].native.request", "required field 'request' is missing"): (3, "native: {} or {ver} only"),
    ("outbound", "$.imp[].native.request", "required field 'request' is missing"): (
        7,
        "audienceNetwork/grid send native without request",
    ),
    ("incoming", "$.imp[].native.request", "native.request is empty"): (27, 'request: ""'),
    ("outbound", "$.imp[].native.request", "native.request is empty"): (27, 'request: "", passed through'),
    ("incoming", "$.imp[].native.request", "native.request is not valid JSON"): (
        30,
        'placeholders like "{json string 1}"',
    ),
    ("outbound", "$.imp[].native.request", "native.request is not valid JSON"): (24, "same, passed through"),
    ("incoming", "$.imp[].native.request", "native.request does not match Native N.x"): (
        6,
        "JSON encoded twice (a string, not an object)",
    ),
    ("outbound", "$.imp[].native.request", "native.request does not match Native N.x"): (5, "same, passed through"),
    ("incoming", "$.imp[].native.request", "native.request.assets must contain at least one asset"): (
        17,
        'request: "{}"',
    ),
    ("outbound", "$.imp[].native.request", "native.request.assets must contain at least one asset"): (
        15,
        "same, passed through",
    ),
    ("incoming", "$.imp[].native.request", "native.request.plcmttype is not a Native N.N placement type"): (
        6,
        "plcmttype 11, copied from the Native spec's own example",
    ),
    ("outbound", "$.imp[].native.request", "native.request.plcmttype is not a Native N.N placement type"): (
        6,
        "same, passed through",
    ),
    (
        "incoming",
        "$.imp[].native.request",
        "native.request.assets[N] must hold exactly one of title, img, video, data",
    ): (4, "readpeak typo: key ' data'"),
    (
        "outbound",
        "$.imp[].native.request",
        "native.request.assets[N] must hold exactly one of title, img, video, data",
    ): (4, "same, passed through"),
    ("incoming", "$.imp[].native.request", "native.request.assets[N].title.len must be a positive number"): (
        2,
        "mobilefuse: title {text} (response-style asset)",
    ),
    ("outbound", "$.imp[].native.request", "native.request.assets[N].title.len must be a positive number"): (
        2,
        "same, passed through",
    ),
}

# Bidders whose outbound body is their own protocol, not an OpenRTB BidRequest (beachfront: banner only).
NON_OPENRTB_BIDDERS = frozenset(
    {
        "adnuntius",
        "adquery",
        "beachfront",
        "contxtful",
        "eplanning",
        "flipp",
        "huaweiads",
        "invibes",
        "mediasquare",
        "sspBC",
    }
)


def _rejection_key(which: str, e: OpenRTBError) -> tuple[str, str, str]:
    return which, re.sub(r"\[\d+\]", "[]", e.path), re.sub(r"\d+", "N", e.what.split(":")[0])


def test_bidder_exchange_requests_decode_or_fail_for_the_listed_reasons(bidder_exchanges: list[dict[str, Any]]) -> None:
    seen: Counter[tuple[str, str, str]] = Counter()
    examples: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    accepted = 0
    for record in bidder_exchanges:
        for which in ("incoming", "outbound"):
            request = record[f"{which}_request"]
            if request is None:  # no HTTP call was made (outcome request_rejected / no_request_sent)
                continue
            try:
                decode_request_obj(request)
                accepted += 1
            except OpenRTBError as e:
                assert path_points_into(request, e.path), (record["source_path"], e.path)
                key = _rejection_key(which, e)
                seen[key] += 1
                examples[key].append(f"{record['source_path']}#{record['call_index']}")
    expected = {key: count for key, (count, _reason) in EXPECTED_REJECTIONS.items()}
    unexpected = {k: (n, examples[k][:3]) for k, n in seen.items() if expected.get(k) != n}
    missing = {k: n for k, n in expected.items() if k not in seen}
    assert not unexpected and not missing, f"rejections changed:\n new or different: {unexpected}\n gone: {missing}"
    assert accepted == 5195 - sum(expected.values())


def test_non_openrtb_wire_formats_are_exactly_the_listed_bidders(bidder_exchanges: list[dict[str, Any]]) -> None:
    proprietary = set()
    for record in bidder_exchanges:
        body = record["outbound_request"]
        if body is not None and "imp" not in body:
            proprietary.add(record["bidder"])
    assert proprietary == NON_OPENRTB_BIDDERS


def test_every_accepted_request_round_trips(bidder_exchanges: list[dict[str, Any]]) -> None:
    for record in bidder_exchanges:
        request = record["outbound_request"]
        if request is None:
            continue
        try:
            req = decode_request_obj(request)
        except OpenRTBError:
            continue
        assert decode_request(encode_request(req)) == req, record["source_path"]


# --- auction_endpoint_requests.jsonl.gz ---------------------------------------------------------

# Valid fixtures we reject, with the reason. Keep this short.
VALID_BUT_REJECTED = {
    "endpoints/openrtb2/sample-requests/valid-whole/supplementary/imp-info-invalid.json": (
        "names no site/app/dooh and its only imp has no media object: both come from Prebid's stored imp '1' "
        "and server defaults, which we do not merge; Prebid answers 200 with an empty body ({}) here"
    ),
}

# Where Prebid's message names a field and our path is not a prefix of it (or it of ours).
PATH_DIFFERS_FROM_PREBID = {
    "invalid-whole/imp-id-duplicates.json": "we point at the repeated id ($.imp[1].id), Prebid names the first",
    "invalid-whole/imp-ext-invalid-params.json": (
        "we point where the params are ($.imp[0].ext.appnexus); Prebid names its normalised location"
    ),
    "invalid-whole/invalid-bidder-params.json": "same as imp-ext-invalid-params",
    "invalid-whole/user-ext-prebid-buyeruids-unknown.json": "Prebid's message drops 'prebid.buyeruids' from the path",
    "invalid-whole/tmax-negative.json": "the request has no imp, which the decoder reports before the negative tmax",
    "invalid-whole/storedrequest-id-int.json": (
        "Prebid's message says 'ext.prebid.storedrequest.id' (our regex reads 'request.id')"
    ),
}


def _short(record: dict[str, Any]) -> str:
    return str(record["source_path"]).split("sample-requests/")[1]


def test_invalid_endpoint_requests_are_rejected_at_a_real_json_path(
    bidder_exchanges: list[dict[str, Any]], auction_endpoint: list[dict[str, Any]]
) -> None:
    known = known_bidders(bidder_exchanges, auction_endpoint)
    invalid = [r for r in auction_endpoint if r["category"].startswith("invalid-") and r["expected_http_status"] == 400]
    assert len(invalid) == 108
    problems = []
    for record in invalid:
        try:
            decode_request(json.dumps(record["request"]), endpoint_context(record, known))
            problems.append(f"{_short(record)}: accepted")
            continue
        except OpenRTBError as e:
            error = e
        if not path_points_into(record["request"], error.path):
            problems.append(f"{_short(record)}: path {error.path} is not in the request")
        named = re.search(r"\b(?:request|req)\.([A-Za-z0-9_.\[\]]*[A-Za-z0-9_\]])", record["expected_error"] or "")
        if named is not None and _short(record) not in PATH_DIFFERS_FROM_PREBID:
            theirs = "$." + named.group(1)
            if not (error.path.startswith(theirs) or theirs.startswith(error.path)):
                problems.append(f"{_short(record)}: we say {error.path}, Prebid says {theirs}")
    assert not problems, "\n".join(problems)


def test_valid_endpoint_requests_are_accepted(
    bidder_exchanges: list[dict[str, Any]], auction_endpoint: list[dict[str, Any]]
) -> None:
    known = known_bidders(bidder_exchanges, auction_endpoint)
    valid = [r for r in auction_endpoint if r["category"].startswith("valid-") and r["expected_http_status"] == 200]
    assert len(valid) == 65
    rejected = {}
    for record in valid:
        try:
            decode_request(json.dumps(record["request"]), endpoint_context(record, known))
        except OpenRTBError as e:
            rejected[record["source_path"]] = f"{e.path}: {e.what}"
    assert set(rejected) == set(VALID_BUT_REJECTED), rejected


def test_other_accepted_endpoint_requests_are_accepted_too(
    bidder_exchanges: list[dict[str, Any]], auction_endpoint: list[dict[str, Any]]
) -> None:
    """AMP, aliases, currency, hooks ...: requests Prebid answers with 200 for reasons beyond validation."""
    known = known_bidders(bidder_exchanges, auction_endpoint)
    others = [
        r for r in auction_endpoint if not r["category"].startswith("valid-") and r["expected_http_status"] == 200
    ]
    assert len(others) == 59
    for record in others:
        decode_request(json.dumps(record["request"]), endpoint_context(record, known))


@pytest.mark.parametrize(
    ("name", "without_context_path"),
    [
        # Need the auction-entry context: bidder names, the site requirement, the stores.
        ("invalid-whole/imp-no-ext.json", None),
        ("invalid-whole/no-site-or-app-or-dooh.json", None),
        ("invalid-whole/bid-adjustment-invalid-bidder.json", None),
        ("invalid-stored/bad_stored_imp.json", None),
        # Invalid anywhere: no context needed.
        ("invalid-whole/regs-gdpr-invalid.json", "$.regs.gdpr"),
        ("invalid-whole/imp-ext-prebid-bidder-empty.json", "$.imp[0].ext.prebid.bidder"),
        ("invalid-native/asset-empty.json", "$.imp[0].native.request"),
    ],
)
def test_context_only_adds_rules(
    auction_endpoint: list[dict[str, Any]], name: str, without_context_path: str | None
) -> None:
    (record,) = [r for r in auction_endpoint if _short(r) == name]
    body = json.dumps(record["request"])
    if without_context_path is None:
        decode_request(body)  # a bidder-bound request may legitimately look like this
    else:
        with pytest.raises(OpenRTBError) as info:
            decode_request(body)
        assert info.value.path == without_context_path
