"""The router's request id: what the split hashes for v1 and v2 bodies."""

from __future__ import annotations

from bidflow.deploy.router import request_id


def test_v1_uses_the_first_auctions_id() -> None:
    body = b'{"instances": [{"request": {"id": "a-1", "imp": []}}, {"request": {"id": "a-2"}}]}'
    assert request_id("/v1/models/bid_filter:predict", body) == "a-1"


def test_v2_uses_the_infer_request_id() -> None:
    assert request_id("/v2/models/bid_filter/infer", b'{"id": "r-9", "inputs": []}') == "r-9"


def test_a_body_without_an_id_is_hashed_whole() -> None:
    assert request_id("/v1/models/bid_filter:predict", b"not json") == "not json"
    assert request_id("/v1/models/bid_filter:predict", b'{"instances": []}') == '{"instances": []}'
