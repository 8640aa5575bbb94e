"""Property-based tests: nothing but OpenRTBError escapes, paths are real, round trips are exact."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openrtb_testutil import path_points_into

from bidflow.errors import OpenRTBError
from bidflow.openrtb import BidRequest, decode_request, decode_request_obj, encode_request
from bidflow.openrtb.native import NativeRequest

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings without lone surrogates: those have no UTF-8 form and cannot be JSON text at all.
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20
)


def outcome(run: Any, arg: Any) -> tuple[str, str | None]:
    """Run a decoder; anything but success or OpenRTBError fails the test."""
    try:
        run(arg)
    except OpenRTBError as e:
        return "rejected", e.path
    return "accepted", None


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    outcome(decode_request, data)


@SETTINGS
@given(st.text(max_size=500))
def test_arbitrary_text(data: str) -> None:
    outcome(decode_request, data)


@SETTINGS
@given(JSON_VALUES)
def test_arbitrary_json_values(value: Any) -> None:
    kind, path = outcome(decode_request, json.dumps(value))
    assert outcome(decode_request_obj, value) == (kind, path)
    if path is not None:
        assert path_points_into(value, path)


# --- requests shaped like the model, with wrong types mixed in ----------------------------------


def _shaped(t: msgspec.inspect.Type, depth: int, wrong: bool) -> st.SearchStrategy[Any]:
    """Values of type ``t``; with ``wrong``, one in six is arbitrary JSON (a wrong type at a random place)."""
    fitting = _fitting(t, depth, wrong)
    return st.one_of(*[fitting] * 5, JSON_VALUES) if wrong else fitting  # one_of picks uniformly


def _fitting(t: msgspec.inspect.Type, depth: int, wrong: bool) -> st.SearchStrategy[Any]:
    if isinstance(t, msgspec.inspect.UnionType):  # our unions are all "X | None"
        (inner,) = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        return _fitting(inner, depth, wrong)
    if isinstance(t, msgspec.inspect.StructType):
        fields = [f for f in t.fields if depth > 0 or f.required]
        required = {f.encode_name: _field(t.cls, f, depth - 1, wrong) for f in fields if f.required}
        optional = {f.encode_name: _field(t.cls, f, depth - 1, wrong) for f in fields if not f.required}
        return st.fixed_dictionaries(required, optional=optional)
    if isinstance(t, msgspec.inspect.ListType):
        return st.lists(_shaped(t.item_type, depth, wrong), min_size=1, max_size=3)
    if isinstance(t, msgspec.inspect.IntType):  # mostly valid flags, sometimes negative or large
        return st.sampled_from([0, 1]) | st.integers(-1, 600)
    if isinstance(t, msgspec.inspect.FloatType):
        return st.integers(-1, 100) | st.floats(-1, 1e6, allow_nan=False)
    if isinstance(t, msgspec.inspect.StrType):
        return TEXT
    if isinstance(t, msgspec.inspect.DictType):  # ext: free JSON, sometimes with Prebid's keys
        return st.dictionaries(
            st.sampled_from(["prebid", "consent", "gdpr", "amp", "bidder", "x"]) | TEXT, JSON_VALUES, max_size=3
        )
    return JSON_VALUES


def _field(cls: type, f: msgspec.inspect.Field, depth: int, wrong: bool) -> st.SearchStrategy[Any]:
    if cls.__name__ == "Native" and f.name == "request":  # a JSON string holding a Native request
        return _shaped(msgspec.inspect.type_info(NativeRequest), 3, wrong).map(json.dumps) | TEXT
    return _shaped(f.type, depth, wrong)


# Shaped like a BidRequest: the well-typed ones exercise the rules, the others the decoder.
def _one_channel(doc: dict[str, Any]) -> dict[str, Any]:
    for extra in ("app", "dooh"):
        if "site" in doc or (extra == "dooh" and "app" in doc):
            doc.pop(extra, None)
    return doc


REQUEST_TYPED = _fitting(msgspec.inspect.type_info(BidRequest), 3, wrong=False).map(_one_channel)
REQUEST_SHAPED = _fitting(msgspec.inspect.type_info(BidRequest), 3, wrong=True)


@SETTINGS
@given(REQUEST_TYPED | REQUEST_SHAPED)
def test_requests_shaped_like_the_model(doc: Any) -> None:
    kind, path = outcome(decode_request, json.dumps(doc))
    assert outcome(decode_request_obj, doc) == (kind, path)
    if path is not None:
        assert path_points_into(doc, path), path
    else:
        req = decode_request(json.dumps(doc))
        assert decode_request(encode_request(req)) == req


# --- mutations of real, valid requests ------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_corpus(bidder_exchanges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    corpus = []
    for record in bidder_exchanges[::7]:
        request = record["outbound_request"]
        if request is None:
            continue
        try:
            decode_request_obj(request)
        except OpenRTBError:
            continue
        corpus.append(request)
    assert len(corpus) > 200
    return corpus


def _locations(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _locations(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _locations(v, (*prefix, i))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_valid_requests(valid_corpus: list[dict[str, Any]], data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(valid_corpus)))
    where = data.draw(st.sampled_from(_locations(doc)))
    parent: Any = doc
    for seg in where[:-1]:
        parent = parent[seg]
    last = where[-1]
    action = data.draw(st.sampled_from(["replace", "replace", "delete"]))
    if action == "delete":
        del parent[last]
    else:
        parent[last] = data.draw(JSON_VALUES)
    kind, path = outcome(decode_request, json.dumps(doc))
    assert outcome(decode_request_obj, doc) == (kind, path)
    if path is not None:
        assert path_points_into(doc, path), path


# --- round trips ----------------------------------------------------------------------------------

EXT = st.dictionaries(TEXT.map(lambda s: "x_" + s), JSON_VALUES, max_size=3)
POSITIVE = st.integers(1, 4000)


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    imps = []
    ids = draw(st.lists(TEXT.filter(bool), min_size=1, max_size=3, unique=True))
    for imp_id in ids:
        imp: dict[str, Any] = {"id": imp_id}
        kind = draw(st.sampled_from(["banner", "video", "audio", "native"]))
        if kind == "banner":
            imp["banner"] = {
                "format": draw(st.lists(st.fixed_dictionaries({"w": POSITIVE, "h": POSITIVE}), min_size=1, max_size=3))
            }
        elif kind in ("video", "audio"):
            imp[kind] = {"mimes": draw(st.lists(TEXT, min_size=1, max_size=2)), "maxduration": draw(POSITIVE)}
        else:
            imp["native"] = {
                "request": json.dumps({"assets": [{"id": 1, "title": {"len": draw(POSITIVE)}}]}),
                "ver": "1.2",
            }
        if draw(st.booleans()):
            imp["bidfloor"] = draw(st.floats(0, 100, allow_nan=False))
        if draw(st.booleans()):
            imp["ext"] = draw(EXT)
        imps.append(imp)
    doc: dict[str, Any] = {"id": draw(TEXT.filter(bool)), "imp": imps}
    optional = {
        "site": st.fixed_dictionaries({"page": TEXT, "ext": EXT}),
        "device": st.fixed_dictionaries(
            {
                "ua": TEXT,
                "devicetype": st.integers(1, 7),
                "geo": st.fixed_dictionaries({"country": TEXT, "lat": st.floats(-90, 90)}),
            },
            optional={"ext": EXT},
        ),
        "user": st.fixed_dictionaries({"id": TEXT, "ext": EXT}),
        "regs": st.fixed_dictionaries({"coppa": st.integers(0, 1), "gdpr": st.integers(0, 1)}),
        "tmax": st.integers(0, 10_000),
        "cur": st.lists(TEXT, max_size=2),
        "ext": EXT,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            doc[key] = draw(strategy)
    return doc


@SETTINGS
@given(valid_requests())
def test_valid_requests_round_trip_exactly(doc: dict[str, Any]) -> None:
    req = decode_request(json.dumps(doc))
    assert json.loads(encode_request(req)) == doc
    assert decode_request(encode_request(req)) == req


def _known_part(value: Any, t: msgspec.inspect.Type) -> Any:
    """What a round trip keeps of ``value``: known fields that are not null, and ``ext`` verbatim."""
    if isinstance(t, msgspec.inspect.UnionType):
        (t,) = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
    if isinstance(t, msgspec.inspect.StructType):
        return {
            f.encode_name: _known_part(value[f.encode_name], f.type)
            for f in t.fields
            if value.get(f.encode_name) is not None
        }
    if isinstance(t, msgspec.inspect.ListType):
        return [_known_part(v, t.item_type) for v in value]
    return value


def test_real_requests_keep_every_known_field_and_all_ext(valid_corpus: list[dict[str, Any]]) -> None:
    info = msgspec.inspect.type_info(BidRequest)
    for doc in valid_corpus:
        assert json.loads(encode_request(decode_request_obj(doc))) == _known_part(doc, info)
