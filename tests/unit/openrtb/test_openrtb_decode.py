"""decode_request / decode_request_obj / encode_request: types, error paths, round trips."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest

from bidflow.errors import BidflowError, OpenRTBError
from bidflow.openrtb import BidRequest, decode_request, decode_request_obj, encode_request

REQUEST: dict[str, Any] = {
    "id": "req-1",
    "imp": [
        {
            "id": "1",
            "banner": {"w": 300, "h": 250, "format": [{"w": 300, "h": 250}, {"w": 320, "h": 50}], "pos": 1},
            "bidfloor": 0.5,
            "bidfloorcur": "USD",
            "secure": 1,
            "ext": {"prebid": {"bidder": {"appnexus": {"placementId": 12883451}}}, "gpid": "/123/slot"},
        }
    ],
    "site": {"id": "s1", "page": "https://example.com/a", "publisher": {"id": "pub-1"}},
    "device": {
        "ua": "Mozilla/5.0",
        "ip": "192.0.2.1",
        "devicetype": 2,
        "connectiontype": 2,
        "w": 1920,
        "h": 1080,
        "geo": {"country": "USA", "lat": 40.7, "lon": -74},
    },
    "user": {"id": "u1", "ext": {"consent": "CPX", "vendor": {"nested": [1, {"a": None}]}}},
    "regs": {"coppa": 0, "gdpr": 1, "ext": {"gdpr": 1, "us_privacy": "1YNN"}},
    "source": {"tid": "t-1", "schain": {"complete": 1, "ver": "1.0", "nodes": [{"asi": "x.com", "sid": "1", "hp": 1}]}},
    "tmax": 120,
    "cur": ["USD"],
    "at": 1,
    "ext": {"prebid": {"cache": {"bids": {}}}, "some_exchange": {"flag": True}},
}


def body(doc: Any = None) -> bytes:
    return json.dumps(REQUEST if doc is None else doc).encode()


def changed(path: list[str | int], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(REQUEST)
    node: Any = doc
    for seg in path[:-1]:
        node = node[seg]
    node[path[-1]] = value
    return doc


def test_decodes_with_openrtb_field_names() -> None:
    req = decode_request(body())
    assert isinstance(req, BidRequest)
    banner = req.imp[0].banner
    assert banner is not None and banner.w == 300 and banner.format is not None and banner.format[1].h == 50
    assert req.device is not None and req.device.geo is not None and req.device.geo.country == "USA"
    assert req.device.devicetype == 2 and req.device.connectiontype == 2
    assert req.site is not None and req.site.publisher is not None and req.site.publisher.id == "pub-1"
    assert req.regs is not None and req.regs.coppa == 0


def test_str_and_bytes_decode_alike() -> None:
    assert decode_request(body().decode()) == decode_request(body())


def test_floats_accept_integers_but_integers_refuse_floats_and_booleans() -> None:
    req = decode_request(body())
    assert req.device is not None and req.device.geo is not None and req.device.geo.lon == -74.0
    assert isinstance(req.device.geo.lon, float)
    for bad in (250.0, True, "250"):
        with pytest.raises(OpenRTBError) as info:
            decode_request(body(changed(["imp", 0, "banner", "h"], bad)))
        assert info.value.path == "$.imp[0].banner.h"
        assert info.value.expected == "int"


def test_wrong_type_names_path_expected_and_got() -> None:
    with pytest.raises(OpenRTBError) as info:
        decode_request(body(changed(["device", "geo", "country"], 840)))
    e = info.value
    assert (e.path, e.expected, e.got) == ("$.device.geo.country", "str", "int")
    assert isinstance(e, BidflowError)
    assert isinstance(e.__cause__, msgspec.ValidationError)  # raised "from" the msgspec error
    assert "where:    $.device.geo.country" in str(e)


def test_missing_required_field_points_at_the_field() -> None:
    doc = copy.deepcopy(REQUEST)
    del doc["imp"][0]["id"]
    with pytest.raises(OpenRTBError) as info:
        decode_request(body(doc))
    assert info.value.path == "$.imp[0].id"
    del doc["id"]
    with pytest.raises(OpenRTBError) as info:
        decode_request(body(doc))
    assert info.value.path in ("$.id", "$.imp[0].id")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"id": "x", "imp": [}', "byte"),
        (b"{", "ends early"),
        (b"", "ends early"),
        (b'{"id": "x", "imp": [{"id": "1", "video": {"mimes": ["v"]}}]} trailing', "byte"),
        (b"\xff\xfe", "byte"),
    ],
)
def test_json_syntax_errors_are_reported_at_the_root(data: bytes, fragment: str) -> None:
    with pytest.raises(OpenRTBError) as info:
        decode_request(data)
    assert info.value.path == "$"
    assert fragment in str(info.value)


@pytest.mark.parametrize("data", [b"null", b"[]", b'"req"', b"42", b"true"])
def test_non_objects_are_rejected_at_the_root(data: bytes) -> None:
    with pytest.raises(OpenRTBError) as info:
        decode_request(data)
    assert info.value.path == "$"
    assert info.value.expected == "object"


def test_text_that_is_not_utf8_is_an_openrtb_error() -> None:
    with pytest.raises(OpenRTBError):
        decode_request(b'{"id": "\xff", "imp": []}')
    with pytest.raises(OpenRTBError):
        decode_request('{"id": "\ud800", "imp": []}')  # lone surrogate: no UTF-8 form


def test_deep_nesting_is_an_openrtb_error() -> None:
    deep = b'{"id": "x", "imp": [], "ext": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(OpenRTBError):
        decode_request(deep)


def test_number_out_of_range_names_the_field() -> None:
    with pytest.raises(OpenRTBError) as info:
        decode_request(body().replace(b'"lat": 40.7', b'"lat": 1e400'))
    assert info.value.path == "$.device.geo.lat"


def test_null_means_absent() -> None:
    req = decode_request(body(changed(["device", "geo"], None)))
    assert req.device is not None and req.device.geo is None
    with pytest.raises(OpenRTBError) as info:  # ...but not for required fields
        decode_request(body(changed(["imp", 0, "id"], None)))
    assert info.value.path == "$.imp[0].id"


def test_unknown_fields_are_dropped_and_ext_is_kept_verbatim() -> None:
    doc = changed(["device", "not_openrtb"], {"x": 1})
    req = decode_request(body(doc))
    out = json.loads(encode_request(req))
    assert "not_openrtb" not in out["device"]
    assert out["ext"] == REQUEST["ext"]
    assert out["user"]["ext"] == REQUEST["user"]["ext"]
    assert out["imp"][0]["ext"] == REQUEST["imp"][0]["ext"]


def test_encode_round_trip_is_exact_for_known_fields() -> None:
    assert json.loads(encode_request(decode_request(body()))) == REQUEST
    req = decode_request(body())
    assert decode_request(encode_request(req)) == req


def test_encode_leaves_absent_fields_out_but_keeps_sent_defaults() -> None:
    out = json.loads(
        encode_request(
            decode_request(b'{"id": "x", "imp": [{"id": "1", "video": {"mimes": ["video/mp4"]}}], "test": 0}')
        )
    )
    assert out == {"id": "x", "imp": [{"id": "1", "video": {"mimes": ["video/mp4"]}}], "test": 0}


def test_decode_request_obj_matches_decode_request() -> None:
    assert decode_request_obj(copy.deepcopy(REQUEST)) == decode_request(body())
    with pytest.raises(OpenRTBError) as info:
        decode_request_obj(changed(["imp", 0, "banner", "w"], "wide"))
    assert info.value.path == "$.imp[0].banner.w"
    with pytest.raises(OpenRTBError) as info:
        decode_request_obj(changed(["ext"], {1: "non-string key"}))
    assert info.value.path == "$.ext"
    with pytest.raises(OpenRTBError) as info:
        decode_request_obj(None)
    assert info.value.path == "$"


def test_rules_run_after_decoding() -> None:
    with pytest.raises(OpenRTBError) as info:
        decode_request(body(changed(["imp", 0, "banner", "w"], -1)))
    assert info.value.path == "$.imp[0].banner.w"
    with pytest.raises(OpenRTBError) as info:
        decode_request_obj(changed(["tmax"], -5))
    assert info.value.path == "$.tmax"
