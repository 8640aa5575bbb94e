"""The Native 1.x request inside imp.native.request (most cases come from Prebid's fixtures)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bidflow.errors import OpenRTBError
from bidflow.openrtb.native import check_native_request

PATH = "$.imp[0].native.request"


def native(**fields: Any) -> str:
    doc: dict[str, Any] = {"ver": "1.2", "assets": [{"id": 1, "title": {"len": 25}}]}
    doc.update(fields)
    return json.dumps(doc)


def test_valid_requests() -> None:
    check_native_request(native(), PATH)
    check_native_request(native(context=2, contextsubtype=21, plcmttype=4), PATH)
    check_native_request(native(context=500, contextsubtype=10, plcmttype=500), PATH)  # exchange-specific
    check_native_request(native(assets=[{"id": 0, "img": {"wmin": 10}}, {"id": 1, "data": {"type": 12}}]), PATH)
    check_native_request(native(assets=[{"title": {"len": 1}}, {"data": {"type": 501}}]), PATH)  # no ids at all
    check_native_request(
        native(eventtrackers=[{"event": 1, "methods": [1, 2]}, {"event": 555, "methods": [500]}]), PATH
    )
    video = {"mimes": ["video/mp4"], "minduration": 0, "maxduration": 30, "protocols": [2, 14]}
    check_native_request(native(assets=[{"video": video}]), PATH)


def test_native_10_wrapper_is_unwrapped() -> None:
    check_native_request(json.dumps({"native": {"ver": "1.0", "assets": [{"id": 1, "title": {"len": 5}}]}}), PATH)
    with pytest.raises(OpenRTBError, match="at least one asset"):
        check_native_request(json.dumps({"native": {"ver": "1.0", "assets": []}}), PATH)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "is empty"),
        ("{json string 1}", "not valid JSON"),
        ('"{\\"assets\\": []}"', "does not match"),  # JSON encoded twice
        ("[]", "does not match"),
        ('{"assets": [{"id": "1", "title": {"len": 2}}]}', "does not match"),
        (native(context=4), "context"),
        (native(contextsubtype=-1), "contextsubtype"),
        (native(context=1, contextsubtype=31), "does not belong"),
        (native(plcmttype=5), "plcmttype"),
        (native(assets=[{"id": 1, "title": {"len": 1}}, {"id": 1, "data": {"type": 1}}]), "repeats"),
        (native(assets=[{"id": 1, "title": {"len": 1}}, {"data": {"type": 1}}]), "either every asset"),
        (native(assets=[{"id": 1}]), "exactly one"),
        (native(assets=[{"id": 1, "title": {"len": 0}}]), "title.len"),
        (native(assets=[{"id": 1, "img": {"h": -1}}]), "img.h"),
        (native(assets=[{"id": 1, "data": {}}]), "data.type"),
        (native(assets=[{"id": 1, "video": {"mimes": ["v"], "maxduration": 5, "protocols": [1]}}]), "minduration"),
        (
            native(
                assets=[{"id": 1, "video": {"mimes": ["v"], "minduration": 1, "maxduration": 5, "protocols": [15]}}]
            ),
            "protocol",
        ),
        (native(eventtrackers=[{"event": 1, "methods": []}]), "methods"),
        (native(eventtrackers=[{"event": 1, "methods": [3]}]), "method"),
        (native(eventtrackers=[{}]), "event"),
    ],
)
def test_invalid_requests_fail_at_the_native_string(raw: str, fragment: str) -> None:
    with pytest.raises(OpenRTBError, match=fragment) as info:
        check_native_request(raw, PATH)
    assert info.value.path == PATH
