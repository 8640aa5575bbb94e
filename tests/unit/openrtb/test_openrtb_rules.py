"""Each semantic rule, one broken field at a time, and what the ValidationContext adds."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from openrtb_testutil import parse_path, path_points_into

from bidflow.errors import OpenRTBError
from bidflow.openrtb import ValidationContext, decode_request

BASE: dict[str, Any] = {
    "id": "r",
    "imp": [
        {
            "id": "1",
            "banner": {"w": 300, "h": 250, "format": [{"w": 300, "h": 250}]},
            "video": {"mimes": ["video/mp4"], "minduration": 5, "maxduration": 30, "w": 640, "h": 480},
            "audio": {"mimes": ["audio/mp4"], "minbitrate": 64, "maxbitrate": 128},
            "native": {"request": json.dumps({"ver": "1.2", "assets": [{"id": 1, "title": {"len": 25}}]})},
            "pmp": {"deals": [{"id": "deal-1", "bidfloor": 1.0}]},
            "bidfloor": 0.1,
            "ext": {"prebid": {"bidder": {"appnexus": {"placementId": 1}}}},
        }
    ],
    "site": {"id": "s", "page": "https://example.com", "ext": {"amp": 0}},
    "device": {"w": 390, "h": 844, "ppi": 460, "geo": {"accuracy": 10}},
    "user": {"geo": {"accuracy": 5}, "ext": {"consent": "CPX", "prebid": {"buyeruids": {"appnexus": "u-1"}}}},
    "regs": {"gdpr": 1, "coppa": 0, "ext": {"gdpr": 1}},
    "tmax": 100,
    "ext": {
        "prebid": {"cache": {"bids": {}}, "aliases": {"an": "appnexus"}, "bidadjustmentfactors": {"appnexus": 0.9}}
    },
}

DELETE = object()


def variant(**changes: Any) -> dict[str, Any]:
    """BASE with values replaced (or deleted) at JSON paths given as keyword values: ``variant(**{"$.tmax": -1})``."""
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = parse_path(path)
        node: Any = doc
        for seg in parents:
            node = node[seg]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


def rejected_at(doc: dict[str, Any], context: ValidationContext | None = None) -> str:
    with pytest.raises(OpenRTBError) as info:
        decode_request(json.dumps(doc), context)
    path: str = info.value.path
    assert path_points_into(doc, path), path
    return path


def test_base_request_is_valid() -> None:
    decode_request(json.dumps(BASE))


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"$.imp": []}, "$.imp"),
        (
            {"$.imp[0].banner": DELETE, "$.imp[0].video": DELETE, "$.imp[0].audio": DELETE, "$.imp[0].native": DELETE},
            "$.imp[0]",
        ),
        ({"$.tmax": -1}, "$.tmax"),
        ({"$.test": 2}, "$.test"),
        ({"$.app": {"id": "a"}}, "$"),
        ({"$.imp[0].bidfloor": -0.01}, "$.imp[0].bidfloor"),
        ({"$.imp[0].exp": -1}, "$.imp[0].exp"),
        ({"$.imp[0].instl": 2}, "$.imp[0].instl"),
        ({"$.imp[0].pmp.deals[0].id": ""}, "$.imp[0].pmp.deals[0].id"),
        ({"$.imp[0].pmp.deals[0].bidfloor": -1}, "$.imp[0].pmp.deals[0].bidfloor"),
        ({"$.imp[0].metric": [{"type": "viewability"}]}, "$.imp[0].metric[0].value"),
        # banner and format
        ({"$.imp[0].banner.w": -1}, "$.imp[0].banner.w"),
        ({"$.imp[0].banner": {"w": 300}}, "$.imp[0].banner"),
        ({"$.imp[0].banner": {"format": []}}, "$.imp[0].banner"),
        ({"$.imp[0].banner.format": [{"w": 300, "h": 250, "wratio": 4}]}, "$.imp[0].banner.format[0]"),
        ({"$.imp[0].banner.format": [{"w": 300, "h": 0}]}, "$.imp[0].banner.format[0]"),
        ({"$.imp[0].banner.format": [{"wmin": 300, "wratio": 4}]}, "$.imp[0].banner.format[0]"),
        ({"$.imp[0].banner.format": [{}]}, "$.imp[0].banner.format[0]"),
        ({"$.imp[0].banner.format": [{"w": 1, "h": 1}, {"w": -3, "h": 1}]}, "$.imp[0].banner.format[1].w"),
        # video and audio
        ({"$.imp[0].video.mimes": []}, "$.imp[0].video.mimes"),
        ({"$.imp[0].video.mimes": DELETE}, "$.imp[0].video.mimes"),
        ({"$.imp[0].video.maxbitrate": -1}, "$.imp[0].video.maxbitrate"),
        ({"$.imp[0].video.minduration": 60}, "$.imp[0].video.minduration"),
        ({"$.imp[0].video.skip": 3}, "$.imp[0].video.skip"),
        ({"$.imp[0].audio.mimes": []}, "$.imp[0].audio.mimes"),
        ({"$.imp[0].audio.sequence": -1}, "$.imp[0].audio.sequence"),
        # native
        ({"$.imp[0].native.request": ""}, "$.imp[0].native.request"),
        ({"$.imp[0].native.request": "{json string 1}"}, "$.imp[0].native.request"),
        ({"$.imp[0].native.request": '{"assets": []}'}, "$.imp[0].native.request"),
        # device, user, regs
        ({"$.device.w": -1}, "$.device.w"),
        ({"$.device.ppi": -1}, "$.device.ppi"),
        ({"$.device.dnt": 7}, "$.device.dnt"),
        ({"$.device.geo.accuracy": -1}, "$.device.geo.accuracy"),
        ({"$.user.geo.accuracy": -1}, "$.user.geo.accuracy"),
        ({"$.regs.gdpr": 2}, "$.regs.gdpr"),
        ({"$.regs.coppa": -1}, "$.regs.coppa"),
        ({"$.regs.ext.gdpr": "1"}, "$.regs.ext.gdpr"),
        ({"$.regs.ext.gdpr": True}, "$.regs.ext.gdpr"),
        ({"$.regs.ext.gdpr": 1.0}, "$.regs.ext.gdpr"),
        # Prebid ext conventions (whenever present)
        ({"$.site.ext.amp": 2}, "$.site.ext.amp"),
        ({"$.imp[0].ext.prebid.bidder": {}}, "$.imp[0].ext.prebid.bidder"),
        ({"$.imp[0].ext.prebid.bidder": {"my-bidder": "x"}}, "$.imp[0].ext.prebid.bidder['my-bidder']"),
        ({"$.imp[0].ext.prebid.storedrequest": {"id": 7}}, "$.imp[0].ext.prebid.storedrequest.id"),
        ({"$.user.ext.consent": 1}, "$.user.ext.consent"),
        ({"$.user.ext.prebid": {}}, "$.user.ext.prebid.buyeruids"),
        ({"$.user.ext.prebid.buyeruids": {"appnexus": 5}}, "$.user.ext.prebid.buyeruids.appnexus"),
        ({"$.ext.prebid.cache": {}}, "$.ext.prebid.cache"),
        ({"$.ext.prebid.storedrequest": {"id": 13}}, "$.ext.prebid.storedrequest.id"),
        ({"$.ext.prebid.aliases": {"an": "AppNexus", "appnexus": "appnexus"}}, "$.ext.prebid.aliases.appnexus"),
        ({"$.ext.prebid.bidadjustmentfactors": {"appnexus": 0}}, "$.ext.prebid.bidadjustmentfactors.appnexus"),
        (
            {"$.ext.prebid.bidadjustmentfactors": {"rubicon": 1, "Rubicon": 2}},
            "$.ext.prebid.bidadjustmentfactors.Rubicon",
        ),
        ({"$.ext.prebid.channel": {"name": ""}}, "$.ext.prebid.channel.name"),
        (
            {"$.device.ext": {"prebid": {"interstitial": {"minwidthperc": 101, "minheightperc": 50}}}},
            "$.device.ext.prebid.interstitial.minwidthperc",
        ),
    ],
)
def test_each_rule_names_the_offending_field(changes: dict[str, Any], path: str) -> None:
    assert rejected_at(variant(**changes)) == path


def test_duplicate_impression_ids_point_at_the_repeat() -> None:
    doc = variant()
    doc["imp"].append(copy.deepcopy(doc["imp"][0]))
    assert rejected_at(doc) == "$.imp[1].id"
    doc["imp"][1]["id"] = "2"
    decode_request(json.dumps(doc))


def test_interstitial_banner_may_leave_its_size_to_the_device() -> None:
    sizeless = {"$.imp[0].banner": {}, "$.imp[0].instl": 1}
    decode_request(json.dumps(variant(**sizeless)))
    # Prebid's interstitial settings need a size to derive the list from: the banner's or the screen's.
    settings = {"prebid": {"interstitial": {"minwidthperc": 50, "minheightperc": 40}}}
    decode_request(json.dumps(variant(**sizeless, **{"$.device.ext": settings})))
    no_screen = variant(**sizeless, **{"$.device.ext": settings, "$.device.w": DELETE, "$.device.h": DELETE})
    assert rejected_at(no_screen) == "$.imp[0].banner"


def test_null_ext_members_count_as_absent() -> None:
    doc = variant(
        **{"$.imp[0].ext": {"prebid": None, "bidder": {"x": 1}}, "$.ext.prebid": None, "$.user.ext": {"consent": None}}
    )
    decode_request(json.dumps(doc))


def test_lat_lon_out_of_range_is_accepted() -> None:
    # Prebid's own valid fixture device-sua.json sends lat 123.456; a bad coordinate is data quality.
    decode_request(json.dumps(variant(**{"$.device.geo.lat": 123.456})))


# --- with a ValidationContext ------------------------------------------------------------------

ENTRY = ValidationContext(auction_entry=True)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"$.site": DELETE}, "$"),
        ({"$.site": {"domain": "example.com"}}, "$.site"),
        ({"$.site": DELETE, "$.dooh": {"name": "screen"}}, "$.dooh"),
        ({"$.imp[0].ext": DELETE}, "$.imp[0].ext"),
        ({"$.imp[0].ext": {"gpid": "/1/a"}}, "$.imp[0].ext"),
        ({"$.imp[0].banner.wmin": 10}, "$.imp[0].banner.wmin"),
        ({"$.imp[0].ext": {"appnexus": "params"}}, "$.imp[0].ext.appnexus"),
    ],
)
def test_auction_entry_rules(changes: dict[str, Any], path: str) -> None:
    doc = variant(**changes)
    decode_request(json.dumps(doc))  # fine for a request sent to a bidder
    assert rejected_at(doc, ENTRY) == path


def test_auction_entry_accepts_both_bidder_layouts_and_skips_reserved_keys() -> None:
    decode_request(json.dumps(BASE), ENTRY)
    legacy = variant(**{"$.imp[0].ext": {"appnexus": {"placementId": 1}, "gpid": "/1/a", "skadn": {"v": 1}}})
    decode_request(json.dumps(legacy), ENTRY)


KNOWN = ValidationContext(known_bidders=frozenset({"AppNexus", "rubicon"}))


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"$.imp[0].ext.prebid.bidder": {"nobody": {}}}, "$.imp[0].ext.prebid.bidder.nobody"),
        ({"$.ext.prebid.aliases": {"an": "nobody"}}, "$.ext.prebid.aliases.an"),
        ({"$.ext.prebid.bidadjustmentfactors": {"nobody": 1.1}}, "$.ext.prebid.bidadjustmentfactors.nobody"),
        ({"$.user.ext.prebid.buyeruids": {"nobody": "u"}}, "$.user.ext.prebid.buyeruids.nobody"),
    ],
)
def test_known_bidders_rules(changes: dict[str, Any], path: str) -> None:
    doc = variant(**changes)
    decode_request(json.dumps(doc))
    assert rejected_at(doc, KNOWN) == path


def test_known_bidders_are_case_insensitive_and_aliases_count() -> None:
    doc = variant(
        **{"$.imp[0].ext.prebid.bidder": {"APPNEXUS": {}, "an": {}}, "$.user.ext.prebid.buyeruids": {"An": "u"}}
    )
    decode_request(json.dumps(doc), KNOWN)


def test_at_the_entry_unknown_legacy_keys_are_ignored_but_one_bidder_is_needed() -> None:
    context = ValidationContext(auction_entry=True, known_bidders=frozenset({"appnexus"}))
    doc = variant(**{"$.imp[0].ext": {"appnexus": {}, "somethingElse": {"x": 1}}})
    decode_request(json.dumps(doc), context)
    assert rejected_at(variant(**{"$.imp[0].ext": {"somethingElse": {"x": 1}}}), context) == "$.imp[0].ext"


def test_stores() -> None:
    context = ValidationContext(
        stored_imps={"ok": b'{"id": "a"}', "broken": b'{"id": "a" "x": 1}', "list": b"[]"}, stored_requests={"r": "{}"}
    )
    stored = variant(**{"$.imp[0].ext.prebid.storedrequest": {"id": "ok"}, "$.ext.prebid.storedrequest": {"id": "r"}})
    decode_request(json.dumps(stored), context)
    for bad in ("broken", "list", "missing"):
        doc = variant(**{"$.imp[0].ext.prebid.storedrequest": {"id": bad}})
        decode_request(json.dumps(doc))  # no store, nothing to check
        assert rejected_at(doc, context) == "$.imp[0].ext.prebid.storedrequest.id"
    assert (
        rejected_at(variant(**{"$.ext.prebid.storedrequest": {"id": "nope"}}), context)
        == "$.ext.prebid.storedrequest.id"
    )


def test_bidder_params_check_gets_the_core_bidder() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def check(bidder: str, params: dict[str, Any]) -> str | None:
        calls.append((bidder, params))
        return "placementId must be a number" if not isinstance(params.get("placementId"), int) else None

    context = ValidationContext(auction_entry=True, known_bidders=frozenset({"appnexus"}), bidder_params=check)
    doc = variant(**{"$.imp[0].ext.prebid.bidder": {"an": {"placementId": 5}}})
    decode_request(json.dumps(doc), context)
    assert calls == [("appnexus", {"placementId": 5})]
    bad = variant(**{"$.imp[0].ext.prebid.bidder": {"an": {"placementId": "x"}}})
    assert rejected_at(bad, context) == "$.imp[0].ext.prebid.bidder.an"
