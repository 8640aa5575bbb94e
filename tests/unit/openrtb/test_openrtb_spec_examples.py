"""The IAB specification's own examples and two open-source libraries' golden files.

See ``openrtb_spec_examples/PROVENANCE.md``. Bid requests must decode; where an example is not
valid as written, the test names it and says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from bidflow.errors import OpenRTBError
from bidflow.openrtb import (
    App,
    Audio,
    Banner,
    Content,
    Device,
    Imp,
    Native,
    Pmp,
    Site,
    Source,
    User,
    Video,
    decode_request,
    encode_request,
)
from bidflow.openrtb.native import check_native_request

# Examples that elide the Native payload ("[ ... ]", "...Native Spec request as an encoded
# string..."), so native.request is not JSON. The rest of each request is checked below.
ELIDED_NATIVE_PAYLOAD = {
    "mxmCherry_openrtb/openrtb2__bid-request__2.5__native-ad.json",
    "bsm_openrtb/breq.native.json",
}


def _bid_request_files(spec_examples: Path) -> list[Path]:
    iab = spec_examples / "iab_openrtb2.x_implementation_md"
    index = json.loads((iab / "index.json").read_text(encoding="utf-8"))
    files = [iab / entry["file"] for entry in index if entry["kind"] == "bid_request"]
    files += sorted((spec_examples / "mxmCherry_openrtb").glob("openrtb2__bid-request__*.json"))
    files += sorted((spec_examples / "bsm_openrtb").glob("breq.*.json"))
    return files


def test_every_spec_bid_request_decodes(spec_examples: Path) -> None:
    files = _bid_request_files(spec_examples)
    assert len(files) == 17  # 2 IAB DOOH + 11 mxmCherry (2.5 and 2.6) + 4 bsm
    failed = {}
    for path in files:
        name = f"{path.parent.name}/{path.name}"
        try:
            req = decode_request(path.read_bytes())
        except OpenRTBError as e:
            failed[name] = e.path
            continue
        assert decode_request(encode_request(req)) == req, name
    assert failed == dict.fromkeys(ELIDED_NATIVE_PAYLOAD, "$.imp[0].native.request")


def test_elided_native_examples_are_valid_once_the_payload_is_filled_in(spec_examples: Path) -> None:
    payload = json.dumps({"ver": "1.2", "assets": [{"id": 1, "required": 1, "title": {"len": 90}}]})
    for name in ELIDED_NATIVE_PAYLOAD:
        doc = json.loads((spec_examples / name).read_text(encoding="utf-8"))
        doc["imp"][0]["native"]["request"] = payload
        decode_request(json.dumps(doc))


def test_dooh_examples_decode_the_26_objects(spec_examples: Path) -> None:
    req = decode_request(
        (spec_examples / "iab_openrtb2.x_implementation_md" / "04_7_9_6_1_dooh_banner_bid_request.json").read_bytes()
    )
    assert req.dooh is not None
    assert req.site is None and req.app is None
    assert req.imp[0].qty is not None and req.imp[0].qty.multiplier is not None


def test_native_request_examples_fail_only_on_their_placement_type(spec_examples: Path) -> None:
    """The Native 1.1/1.2 examples use ``plcmttype: 11``, which is not in the spec's own table (1-4, 500+).

    With a valid placement type they pass every other native check.
    """
    files = sorted(spec_examples.glob("*/native*request*.json"))
    assert len(files) == 6
    for path in files:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
        body = doc.get("native", doc)  # Native 1.0 style wraps the body in {"native": ...}
        assert body["plcmttype"] == 11
        with pytest.raises(OpenRTBError, match="plcmttype"):
            check_native_request(text, "$.imp[0].native.request")
        body["plcmttype"] = 1
        check_native_request(json.dumps(doc), "$.imp[0].native.request")


# Single objects of bsm/openrtb, decoded into their own type.
FRAGMENT_TYPES: dict[str, type[msgspec.Struct]] = {
    "app.json": App,
    "audio.json": Audio,
    "banner.json": Banner,
    "content.json": Content,
    "device.json": Device,
    "impression.json": Imp,
    "native.json": Native,
    "pmp.json": Pmp,
    "site.json": Site,
    "source.json": Source,
    "video.json": Video,
}


@pytest.mark.parametrize("name", sorted(FRAGMENT_TYPES))
def test_single_object_fixtures_decode_into_their_type(spec_examples: Path, name: str) -> None:
    msgspec.json.decode((spec_examples / "bsm_openrtb" / name).read_bytes(), type=FRAGMENT_TYPES[name])


def test_quoted_numbers_are_rejected(spec_examples: Path) -> None:
    """bsm's ``content.quoted.json`` writes integers as strings ("context": "1"); the spec says integer."""
    with pytest.raises(msgspec.ValidationError, match=r"\$\.context"):
        msgspec.json.decode((spec_examples / "bsm_openrtb" / "content.quoted.json").read_bytes(), type=Content)


def test_iab_user_id_examples_write_integers_as_strings(spec_examples: Path) -> None:
    """The 2.6 implementation guide's EID examples write ``"mm": "3"`` and ``"atype": "1"``; the 2.6
    spec types both as integer. Everything else in those user objects decodes once they are integers.
    """
    iab = spec_examples / "iab_openrtb2.x_implementation_md"
    quirky = 0
    for path in sorted(iab.glob("*_example_*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        user = doc.get("user")
        if user is None:
            continue
        eids = user.get("eids") or []
        if any(isinstance(e.get("mm"), str) for e in eids):
            quirky += 1  # examples 3, 4, 5 and 8
            with pytest.raises(msgspec.ValidationError, match="mm"):
                msgspec.convert(user, User)
            for e in eids:
                e["mm"] = int(e["mm"])
                for uid in e.get("uids") or []:
                    if isinstance(uid.get("atype"), str):
                        uid["atype"] = int(uid["atype"])
        msgspec.convert(user, User)
    assert quirky == 4
