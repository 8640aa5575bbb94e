"""The bidder's request bodies, checked: bid requests (v1 instances, v2 tensors) and notices.

Every refusal is a ``RequestError`` naming the field by its JSON path (HTTP 400 through
``bidflow.serving.errors``). A campaign the served bidder does not bid for is refused the same way:
a bid for it would spend another campaign's budget.
"""

from __future__ import annotations

import math
from typing import Any, Final, NamedTuple

import numpy as np

from bidflow.serving.bodies import bytes_tensor, check_shape, json_body, type_name, unique_inputs
from bidflow.serving.errors import RequestError

MAX_AUCTION_ID: Final = 128  # characters: ids are Redis hash fields, kept until settled
MAX_NOTICES: Final = 1024  # per request
_PCTR_TYPES: Final = frozenset({"FP32", "FP64"})


class Auction(NamedTuple):
    """One bid request: its pCTR and the auction id its notice will name (None: no notice will come)."""

    pctr: float
    auction: str | None


class Notice(NamedTuple):
    """One win (``price``: the clearing price) or loss (``price`` None) notice."""

    auction: str
    price: int | None


def v1_auctions(payload: Any, campaign: str, limit: int) -> list[Auction]:
    """``{"instances": [{"campaign", "pctr", "auction"?}, ...]}`` (bytes or decoded) -> checked auctions."""
    if isinstance(payload, bytes | bytearray):
        payload = json_body(payload)
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise RequestError("the body needs a non-empty 'instances' list (one object per auction)", field="$.instances")
    if len(instances) > limit:
        raise RequestError("too many auctions in one request", field="$.instances", expected=f"at most {limit}",
                           got=str(len(instances)))  # fmt: skip
    out = []
    for i, instance in enumerate(instances):
        where = f"$.instances[{i}]"
        if not isinstance(instance, dict):
            raise RequestError("an instance must be an object", field=where, got=type_name(instance))
        for key in instance:
            if key not in ("campaign", "pctr", "auction"):
                raise RequestError(f"unknown field {key!r}", field=f"{where}.{key}",
                                   expected="campaign, pctr, auction")  # fmt: skip
        check_campaign(instance.get("campaign"), campaign, f"{where}.campaign")
        out.append(
            Auction(
                pctr(instance.get("pctr"), f"{where}.pctr"), auction_id(instance.get("auction"), f"{where}.auction")
            )
        )
    return out


def v2_auctions(request: Any, campaign: str, limit: int) -> list[Auction]:
    """v2 inputs ``campaign`` (BYTES [n]), ``pctr`` (FP32/FP64 [n]), ``auction`` (BYTES [n], optional)."""
    inputs = unique_inputs(request.inputs)
    for name, (i, _) in inputs.items():
        if name not in ("campaign", "pctr", "auction"):
            raise RequestError(f"unknown input {name!r}", field=f"$.inputs[{i}].name",
                               expected="campaign, pctr, auction")  # fmt: skip
    for name in ("campaign", "pctr"):
        if name not in inputs:
            raise RequestError(f"input {name!r} is missing", field="$.inputs", expected="campaign, pctr, auction")
    i, tensor = inputs["campaign"]
    campaigns = bytes_tensor(tensor, f"$.inputs[{i}]")
    n = len(campaigns)
    if not n:
        raise RequestError("the request has no auctions", field=f"$.inputs[{i}].data")
    if n > limit:
        raise RequestError("too many auctions in one request", field=f"$.inputs[{i}].data",
                           expected=f"at most {limit}", got=str(n))  # fmt: skip
    for k, value in enumerate(campaigns):
        check_campaign(value.decode("utf-8", "replace") if isinstance(value, bytes) else value, campaign,
                       f"$.inputs[{i}].data[{k}]")  # fmt: skip
    j, tensor = inputs["pctr"]
    values = _numbers(tensor, f"$.inputs[{j}]", n)
    ids: list[Any] = [None] * n
    a = -1
    if "auction" in inputs:
        a, tensor = inputs["auction"]
        ids = bytes_tensor(tensor, f"$.inputs[{a}]")
        if len(ids) != n:
            raise RequestError("inputs differ in length", field=f"$.inputs[{a}].data", expected=str(n),
                               got=str(len(ids)))  # fmt: skip
    out = []
    for k in range(n):
        ident = ids[k].decode("utf-8", "replace") if isinstance(ids[k], bytes) else ids[k]
        out.append(Auction(pctr(values[k], f"$.inputs[{j}].data[{k}]"), auction_id(ident, f"$.inputs[{a}].data[{k}]")))
    return out


def notices(body: bytes | bytearray, campaign: str) -> list[Notice]:
    """``{"notices": [{"campaign", "auction", "price"}, ...]}`` -> checked notices (``price`` null: lost)."""
    payload = json_body(body)
    items = payload.get("notices") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise RequestError("the body needs a non-empty 'notices' list", field="$.notices")
    if len(items) > MAX_NOTICES:
        raise RequestError("too many notices in one request", field="$.notices", expected=f"at most {MAX_NOTICES}",
                           got=str(len(items)))  # fmt: skip
    out = []
    for i, item in enumerate(items):
        where = f"$.notices[{i}]"
        if not isinstance(item, dict):
            raise RequestError("a notice must be an object", field=where, got=type_name(item))
        for key in item:
            if key not in ("campaign", "auction", "price"):
                raise RequestError(f"unknown field {key!r}", field=f"{where}.{key}",
                                   expected="campaign, auction, price")  # fmt: skip
        check_campaign(item.get("campaign"), campaign, f"{where}.campaign")
        auction = auction_id(item.get("auction"), f"{where}.auction")
        if auction is None:
            raise RequestError("a notice names its auction", field=f"{where}.auction", expected="the bid's auction id")
        if "price" not in item:
            # A win read as a loss would refund what was spent: the sender says which it is.
            raise RequestError("a notice needs 'price' (the clearing price; null when the auction was lost)",
                               field=f"{where}.price")  # fmt: skip
        out.append(Notice(auction, price(item["price"], f"{where}.price")))
    return out


def check_campaign(value: Any, campaign: str, where: str) -> None:
    """The campaign must be the bidder's own (a string, or an integer id)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None:
        raise RequestError("the campaign is missing", field=where, expected=repr(campaign))
    if value != campaign:
        raise RequestError("this bidder does not bid for that campaign", field=where, expected=repr(campaign),
                           got=repr(value)[:60])  # fmt: skip


def pctr(value: Any, where: str) -> float:
    """A click probability: a finite number in [0, 1]."""
    if value is None:
        raise RequestError("pctr is missing", field=where, expected="a number from 0 to 1")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError("pctr must be a number from 0 to 1", field=where, got=type_name(value))
    number = float(value)
    if not 0.0 <= number <= 1.0:  # NaN fails both comparisons
        raise RequestError("pctr must be a number from 0 to 1", field=where, expected="0 <= pctr <= 1",
                           got=repr(value)[:40])  # fmt: skip
    return number


def auction_id(value: Any, where: str) -> str | None:
    """An auction id: a non-empty string of at most ``MAX_AUCTION_ID`` characters, or absent."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_AUCTION_ID:
        raise RequestError("auction must be a non-empty string", field=where,
                           expected=f"at most {MAX_AUCTION_ID} characters", got=repr(value)[:40])  # fmt: skip
    return value


def price(value: Any, where: str) -> int | None:
    """A clearing price in whole price units (fen CPM); a fraction is rounded up (never undercharge)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise RequestError("price must be a non-negative number (fen CPM) or null", field=where,
                           got=repr(value)[:40])  # fmt: skip
    return math.ceil(value)


def _numbers(tensor: Any, where: str, n: int) -> list[Any]:
    if tensor.datatype not in _PCTR_TYPES:
        raise RequestError(f"input '{tensor.name}' must be FP32 or FP64", field=f"{where}.datatype",
                           got=str(tensor.datatype))  # fmt: skip
    data = tensor.data
    if isinstance(data, np.ndarray):
        data = data.ravel().tolist()
    if not isinstance(data, list):
        raise RequestError(f"input '{tensor.name}' holds no data", field=f"{where}.data")
    check_shape(tensor, len(data), where)
    if len(data) != n:
        raise RequestError("inputs differ in length", field=f"{where}.data", expected=str(n), got=str(len(data)))
    return data
