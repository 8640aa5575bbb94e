"""The bidder's request bodies without any service: what is accepted, and the field every refusal names."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from bidflow.serving.bidder_bodies import MAX_AUCTION_ID, Auction, Notice, notices, v1_auctions, v2_auctions
from bidflow.serving.errors import RequestError, error_response

CAMPAIGN = "2997"


def _v1(*instances: Any) -> bytes:
    return json.dumps({"instances": list(instances)}).encode()


def _refused(call: Any, field: str) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call()
    assert caught.value.field == field, caught.value.render()
    status, body = error_response(caught.value, lambda _: None)
    assert status == 400 and body["field"] == field
    return caught.value


def test_v1_instances_are_read_with_and_without_an_auction_id() -> None:
    body = _v1({"campaign": "2997", "pctr": 0.0041, "auction": "a-17"}, {"campaign": 2997, "pctr": 0})
    assert v1_auctions(body, CAMPAIGN, 64) == [Auction(0.0041, "a-17"), Auction(0.0, None)]
    assert v1_auctions(json.loads(body), CAMPAIGN, 64)[0] == Auction(0.0041, "a-17")  # an already decoded body


@pytest.mark.parametrize(
    ("instance", "field", "words"),
    [
        ({"campaign": "2997", "pctr": -0.1}, "$.instances[0].pctr", "from 0 to 1"),
        ({"campaign": "2997", "pctr": 1.5}, "$.instances[0].pctr", "from 0 to 1"),
        ({"campaign": "2997"}, "$.instances[0].pctr", "missing"),
        ({"campaign": "2997", "pctr": "0.1"}, "$.instances[0].pctr", "number"),
        ({"campaign": "2997", "pctr": True}, "$.instances[0].pctr", "number"),
        ({"campaign": "1458", "pctr": 0.1}, "$.instances[0].campaign", "does not bid for"),
        ({"pctr": 0.1}, "$.instances[0].campaign", "missing"),
        ({"campaign": "2997", "pctr": 0.1, "auction": ""}, "$.instances[0].auction", "non-empty"),
        ({"campaign": "2997", "pctr": 0.1, "auction": 17}, "$.instances[0].auction", "string"),
        ({"campaign": "2997", "pctr": 0.1, "auction": "a" * (MAX_AUCTION_ID + 1)}, "$.instances[0].auction", "string"),
        ({"campaign": "2997", "pctr": 0.1, "budget": 5}, "$.instances[0].budget", "unknown field"),
    ],
)
def test_bad_v1_instances_name_their_field(instance: dict[str, Any], field: str, words: str) -> None:
    error = _refused(lambda: v1_auctions(_v1({"campaign": "2997", "pctr": 0.2}, instance), CAMPAIGN, 64),
                     field.replace("[0]", "[1]"))  # fmt: skip
    assert words in error.what


def test_nan_and_infinite_pctr_are_refused() -> None:
    for text in (b"NaN", b"Infinity", b"1e999"):
        body = b'{"instances": [{"campaign": "2997", "pctr": ' + text + b"}]}"
        with pytest.raises(RequestError) as caught:
            v1_auctions(body, CAMPAIGN, 64)
        assert caught.value.field in ("$", "$.instances[0].pctr")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{nope", "$"),
        (b"[1, 2]", "$.instances"),
        (b'{"instances": []}', "$.instances"),
        (b'{"instances": {"campaign": "2997"}}', "$.instances"),
        (b'{"instances": ["2997"]}', "$.instances[0]"),
    ],
)
def test_malformed_v1_bodies_are_400(body: bytes, field: str) -> None:
    _refused(lambda: v1_auctions(body, CAMPAIGN, 64), field)


def test_too_many_auctions_in_one_request() -> None:
    body = _v1(*[{"campaign": "2997", "pctr": 0.1}] * 5)
    error = _refused(lambda: v1_auctions(body, CAMPAIGN, 4), "$.instances")
    assert error.expected == "at most 4"


def _tensor(name: str, datatype: str, data: Any, shape: list[int] | None = None) -> InferInput:
    tensor = InferInput(name, shape or [len(data)], datatype)
    tensor.data = data
    return tensor


def _v2(*inputs: InferInput) -> InferRequest:
    return InferRequest(model_name="bidder", infer_inputs=list(inputs))


def test_v2_inputs_are_read() -> None:
    request = _v2(
        _tensor("campaign", "BYTES", ["2997", b"2997"]),
        _tensor("pctr", "FP32", np.array([0.25, 0.5], dtype=np.float32)),
        _tensor("auction", "BYTES", ["x", b"y"]),
    )
    assert v2_auctions(request, CAMPAIGN, 64) == [Auction(0.25, "x"), Auction(0.5, "y")]
    without_ids = _v2(_tensor("campaign", "BYTES", ["2997"]), _tensor("pctr", "FP64", [0.125]))
    assert v2_auctions(without_ids, CAMPAIGN, 64) == [Auction(0.125, None)]


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ([_tensor("pctr", "FP64", [0.1])], "$.inputs"),  # no campaign
        ([_tensor("campaign", "BYTES", ["2997"])], "$.inputs"),  # no pctr
        ([_tensor("campaign", "BYTES", ["1458"]), _tensor("pctr", "FP64", [0.1])], "$.inputs[0].data[0]"),
        ([_tensor("campaign", "BYTES", ["2997"]), _tensor("pctr", "FP64", [2.0])], "$.inputs[1].data[0]"),
        ([_tensor("campaign", "BYTES", ["2997"]), _tensor("pctr", "BYTES", ["0.1"])], "$.inputs[1].datatype"),
        ([_tensor("campaign", "BYTES", ["2997"]), _tensor("pctr", "FP64", [0.1, 0.2])], "$.inputs[1].data"),
        ([_tensor("campaign", "BYTES", ["2997"]), _tensor("pctr", "FP64", [0.1], [3])], "$.inputs[1].shape"),
        ([_tensor("campaign", "BYTES", ["2997"]), _tensor("pctr", "FP64", [0.1]), _tensor("x", "FP64", [1.0])],
         "$.inputs[2].name"),
        ([_tensor("campaign", "BYTES", ["2997"]), _tensor("pctr", "FP64", [0.1]), _tensor("auction", "BYTES", [""])],
         "$.inputs[2].data[0]"),
    ],
)  # fmt: skip
def test_bad_v2_inputs_name_their_field(inputs: list[InferInput], field: str) -> None:
    _refused(lambda: v2_auctions(_v2(*inputs), CAMPAIGN, 64), field)


def test_notices_are_read_and_prices_rounded_up() -> None:
    body = {"notices": [{"campaign": "2997", "auction": "a", "price": 40},
                        {"campaign": "2997", "auction": "b", "price": None},
                        {"campaign": "2997", "auction": "c", "price": 39.2}]}  # fmt: skip
    assert notices(json.dumps(body).encode(), CAMPAIGN) == [Notice("a", 40), Notice("b", None), Notice("c", 40)]


@pytest.mark.parametrize(
    ("notice", "field"),
    [
        ({"campaign": "2997", "auction": "a"}, "$.notices[0].price"),  # a win must not read as a loss
        ({"campaign": "2997", "auction": "a", "price": -1}, "$.notices[0].price"),
        ({"campaign": "2997", "auction": "a", "price": "40"}, "$.notices[0].price"),
        ({"campaign": "2997", "price": 40}, "$.notices[0].auction"),
        ({"campaign": "1458", "auction": "a", "price": 40}, "$.notices[0].campaign"),
        ({"campaign": "2997", "auction": "a", "price": 40, "won": True}, "$.notices[0].won"),
    ],
)
def test_bad_notices_name_their_field(notice: dict[str, Any], field: str) -> None:
    _refused(lambda: notices(json.dumps({"notices": [notice]}).encode(), CAMPAIGN), field)


def test_malformed_notice_bodies_are_400() -> None:
    for body in (b"{nope", b'{"notices": []}', b'{"wins": []}', b'{"notices": [1]}'):
        with pytest.raises(RequestError):
            notices(body, CAMPAIGN)
