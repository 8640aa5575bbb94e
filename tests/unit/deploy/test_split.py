"""The canary split: deterministic per request id, the configured share, independent of exploration."""

from __future__ import annotations

import pytest

from bidflow.deploy.split import route, split_bucket
from bidflow.modeling.economics import is_exploration

IDS = [f"auction-{i}" for i in range(20_000)]


@pytest.mark.parametrize("percent", [1, 20, 50, 90])
def test_share_of_requests_matches_the_percent(percent: int) -> None:
    share = sum(route(i, percent) == "canary" for i in IDS) / len(IDS)
    assert abs(share - percent / 100) < 0.015


def test_the_same_request_goes_to_the_same_side_every_time() -> None:
    first = [route(i, 20) for i in IDS[:2000]]
    assert first == [route(i, 20) for i in IDS[:2000]]


def test_raising_the_percent_only_moves_champion_requests_to_the_canary() -> None:
    at_20 = {i for i in IDS if route(i, 20) == "canary"}
    at_50 = {i for i in IDS if route(i, 50) == "canary"}
    assert at_20 < at_50


def test_edges() -> None:
    assert {route(i, 0) for i in IDS[:500]} == {"champion"}
    assert {route(i, 100) for i in IDS[:500]} == {"canary"}
    assert all(0 <= split_bucket(i) < 100 for i in IDS[:500])


def test_canary_traffic_explores_at_the_same_rate_as_the_champion() -> None:
    canary = [i for i in IDS if route(i, 30) == "canary"]
    champion = [i for i in IDS if route(i, 30) == "champion"]
    rate = [sum(is_exploration(i, 0.1) for i in side) / len(side) for side in (canary, champion)]
    assert abs(rate[0] - rate[1]) < 0.02
