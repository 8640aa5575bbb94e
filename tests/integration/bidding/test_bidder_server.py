"""The bidder's model server as real processes on 127.0.0.1, its budget shared in real Redis.

Two replicas share one budget on the shared Redis (database ``REDIS_DB``, a model name of their own);
a third bids from a private ``redis-server`` on a free port that the last test kills.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bidflow.bidding.artifact import load_bidder
from bidflow.bidding.budget import BudgetStore, Plan, place_bid
from tests.conftest import free_port
from tests.integration.bidding.conftest import (
    EPISODE,
    REDIS_DB,
    Replica,
    start_replica,
    unique_name,
    wait_ready,
    write_config,
)
from tests.integration.serving.conftest import RedisServer

pytestmark = pytest.mark.integration

CLIENTS = 24
BIDS = 8 * EPISODE  # eight whole episodes across the two replicas


@dataclass
class Servers:
    shared: tuple[Replica, Replica]  # two replicas, one budget on the shared Redis
    alone: Replica  # one replica on the private Redis
    private_redis: RedisServer
    store: BudgetStore  # the shared replicas' store, read directly
    budget: int
    pctrs: list[float]


@pytest.fixture(scope="module")
def servers(
    bidder_folder: Path, redis_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    from bidflow.bidding.auctions import read_auctions

    root = tmp_path_factory.mktemp("bidder-servers")
    private = RedisServer(free_port(), root)
    private.start()
    shared_url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    name = unique_name()
    shared_config = write_config(root / "shared.yaml", name, shared_url)
    alone_config = write_config(root / "alone.yaml", "bidder_alone", f"redis://127.0.0.1:{private.port}/0")
    replicas = [
        start_replica(bidder_folder, shared_config, name, root),
        start_replica(bidder_folder, shared_config, name, root),
        start_replica(bidder_folder, alone_config, "bidder_alone", root),
    ]
    bidder = load_bidder(bidder_folder)
    plan = Plan(bidder.budget(bidder.settings.served_level), bidder.settings.episode)
    store = BudgetStore.connect(shared_url, name, bidder.campaign.id, plan, ttl_s=30, timeout_s=2)
    log = read_auctions(shared_data / "ipinyou_auction_outcomes" / "validation_by_campaign" / "2997.csv.gz")
    try:
        for replica in replicas:
            wait_ready(replica)
        yield Servers((replicas[0], replicas[1]), replicas[2], private, store, plan.budget, log.pctr[:BIDS].tolist())
    finally:
        for replica in replicas:
            replica.stop()
        private.kill()
        store.clear()
        store.close()


def _v1(replica: Replica, *instances: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{replica.url}/v1/models/{replica.name}:predict", json={"instances": list(instances)}, timeout=5)


def _notices(replica: Replica, *notices: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{replica.url}/v1/models/{replica.name}/notices", json={"notices": list(notices)}, timeout=5)


def _metric(replica: Replica, name: str, **labels: str) -> float:
    text = httpx.get(f"{replica.url}/metrics", timeout=5).text
    wanted = {"model": replica.name} | labels
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))).items() >= wanted.items():
            total += float(match.group(2))
    return total


def test_v1_and_v2_bids_and_notices(servers: Servers) -> None:
    alone = servers.alone
    one = _v1(alone, {"campaign": "2997", "pctr": 0.05, "auction": "v1-a"}, {"campaign": 2997, "pctr": 0.0001})
    assert one.status_code == 200, one.text
    bids = one.json()["predictions"]
    assert all(type(b) is int for b in bids) and bids[0] > bids[1] >= 0
    body = {
        "inputs": [
            {"name": "campaign", "shape": [2], "datatype": "BYTES", "data": ["2997", "2997"]},
            {"name": "pctr", "shape": [2], "datatype": "FP32", "data": [0.05, 0.0001]},
            {"name": "auction", "shape": [2], "datatype": "BYTES", "data": ["v2-a", "v2-b"]},
        ]
    }
    two = httpx.post(f"{alone.url}/v2/models/{alone.name}/infer", json=body, timeout=5)
    assert two.status_code == 200, two.text
    (output,) = two.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("bid", "INT64", [2])
    assert output["data"][0] > 0
    settled = _notices(
        alone,
        {"campaign": "2997", "auction": "v1-a", "price": bids[0] - 1},
        {"campaign": "2997", "auction": "v2-a", "price": None},
        {"campaign": "2997", "auction": "v1-a", "price": 1},  # the same notice again: nothing to settle
    )
    assert settled.status_code == 200, settled.text
    won, lost, again = settled.json()["results"]
    assert won == {"auction": "v1-a", "status": "won", "charged": bids[0] - 1, "refunded": 1, "episode": 1}
    assert (lost["status"], lost["refunded"]) == ("lost", output["data"][0])
    assert again == {"auction": "v1-a", "status": "unknown"}
    assert _metric(alone, "bidflow_bidder_bids_total") == 4
    assert _metric(alone, "bidflow_bidder_notices_unknown_total") == 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"instances": [{"campaign": "2997", "pctr": -0.5}]}, 400, "$.instances[0].pctr"),
        ({"instances": [{"campaign": "2997", "pctr": 1.01}]}, 400, "$.instances[0].pctr"),
        ({"instances": [{"campaign": "2997", "pctr": "high"}]}, 400, "$.instances[0].pctr"),
        ({"instances": [{"campaign": "2997"}]}, 400, "$.instances[0].pctr"),
        ({"instances": [{"campaign": "1458", "pctr": 0.1}]}, 400, "$.instances[0].campaign"),
        ({"instances": []}, 400, "$.instances"),
        (b"{not json", 400, "$"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(servers: Servers, body: Any, status: int, field: str) -> None:
    alone = servers.alone
    url = f"{alone.url}/v1/models/{alone.name}:predict"
    response = httpx.post(url, content=body, timeout=5) if isinstance(body, bytes) else httpx.post(url, json=body)
    assert (response.status_code, response.json().get("field")) == (status, field), response.text


def test_bad_notices_and_bad_v2_inputs_are_400(servers: Servers) -> None:
    alone = servers.alone
    missing_price = _notices(alone, {"campaign": "2997", "auction": "x"})
    assert (missing_price.status_code, missing_price.json()["field"]) == (400, "$.notices[0].price")
    garbage = httpx.post(f"{alone.url}/v1/models/{alone.name}/notices", content=b"]", timeout=5)
    assert (garbage.status_code, garbage.json()["field"]) == (400, "$")
    body = {"inputs": [{"name": "campaign", "shape": [1], "datatype": "BYTES", "data": ["2997"]},
                       {"name": "pctr", "shape": [1], "datatype": "FP64", "data": [7.0]}]}  # fmt: skip
    v2 = httpx.post(f"{alone.url}/v2/models/{alone.name}/infer", json=body, timeout=5)
    assert (v2.status_code, v2.json()["field"]) == (400, "$.inputs[1].data[0]")
    assert httpx.post(f"{alone.url}/v1/models/nobody/notices", json={}, timeout=5).status_code == 404


async def _hammer(servers: Servers) -> list[tuple[int, dict[str, Any] | None]]:
    """``CLIENTS`` concurrent clients bid on ``BIDS`` auctions through both replicas; every bid is won at
    its own price (the worst case for the budget), and its win notice goes to the other replica."""
    a, b = servers.shared
    outcomes: list[tuple[int, dict[str, Any] | None]] = []
    limits = httpx.Limits(max_connections=CLIENTS * 2)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def worker(k: int) -> None:
            for i in range(k, BIDS, CLIENTS):
                bidder, notified = (a, b) if i % 2 else (b, a)
                auction = f"h-{i}"
                instance = {"campaign": "2997", "pctr": servers.pctrs[i], "auction": auction}
                answer = await client.post(
                    f"{bidder.url}/v1/models/{bidder.name}:predict", json={"instances": [instance]}
                )
                assert answer.status_code == 200, answer.text
                bid = answer.json()["predictions"][0]
                if not bid:
                    outcomes.append((0, None))
                    continue
                notice = {"campaign": "2997", "auction": auction, "price": bid}
                settled = await client.post(
                    f"{notified.url}/v1/models/{notified.name}/notices", json={"notices": [notice]}
                )
                assert settled.status_code == 200, settled.text
                outcomes.append((bid, settled.json()["results"][0]))

        await asyncio.gather(*(worker(k) for k in range(CLIENTS)))
    return outcomes


@dataclass
class ThirdReplica:
    """A replica in this process (``place_bid`` on the same store, as a server does), bidding in a tight
    loop while the servers are hammered: every server's read -> reserve window then overlaps
    reservations, so the script's refusal (and the recomputed bid) is exercised, not just possible."""

    store: BudgetStore
    policy: Any
    pctrs: list[float]
    stop: threading.Event = field(default_factory=threading.Event)
    seen: list[float] = field(default_factory=list)
    charged: list[tuple[int, int]] = field(default_factory=list)  # (episode, price) of each win
    refused: int = 0

    def run(self) -> None:
        while not self.stop.wait(0.002):  # leaves the clients most of this process's time
            pctr = self.pctrs[len(self.seen) % len(self.pctrs)]
            auction = f"t-{len(self.seen)}"
            placed = place_bid(self.store, self.policy, pctr, auction)
            self.seen.append(pctr)
            self.refused += placed.refused
            if placed.bid:
                settled = self.store.settle(auction, placed.bid)  # won at its own bid, as the clients' are
                assert settled.status == "won" and settled.episode is not None
                self.charged.append((settled.episode, settled.charged))


def test_two_replicas_hammered_never_overspend_an_episode(servers: Servers, bidder_folder: Path) -> None:
    third = ThirdReplica(servers.store, load_bidder(bidder_folder).policy(), servers.pctrs)
    thread = threading.Thread(target=third.run)
    thread.start()
    try:
        outcomes = asyncio.run(_hammer(servers))
    finally:
        third.stop.set()
        thread.join(10)
    assert len(outcomes) == BIDS
    spent: dict[int, int] = defaultdict(int)
    for bid, result in outcomes:
        if result is not None:
            assert (result["status"], result["charged"], result["refunded"]) == ("won", bid, 0), result
            spent[result["episode"]] += result["charged"]
    for episode, price in third.charged:
        spent[episode] += price
    auctions = BIDS + len(third.seen)
    whole = range(1, auctions // EPISODE + 1)
    assert set(whole) <= set(spent) <= {*whole, auctions // EPISODE + 1}
    assert max(spent.values()) <= servers.budget, spent  # never overspent, in any episode
    # the budget was the binding constraint: each whole episode spent nearly all of it, and bids of 0 followed
    assert min(spent[e] for e in whole) > 0.9 * servers.budget, spent
    a, b = servers.shared
    assert sum(_metric(r, "bidflow_bidder_zero_bids_total", reason="budget_exhausted") for r in (a, b)) > 0
    assert min(_metric(r, "bidflow_bidder_bids_total") for r in (a, b)) == BIDS / 2
    # the replicas did race for the last of the budget, and a refused reservation was bid again
    assert sum(_metric(r, "bidflow_bidder_rebids_total") for r in (a, b)) + third.refused > 0
    # what Redis says is what the notices settled, and every auction was counted exactly once
    totals = servers.store.totals()
    assert totals.spent == sum(spent.values())
    assert totals.spend == dict(spent)
    assert (totals.outstanding, totals.reservations) == (0, 0)
    assert (totals.state.episode - 1) * EPISODE + EPISODE - totals.state.left == auctions
    assert totals.state.mean_pctr == pytest.approx(np.mean(servers.pctrs + third.seen))


def test_redis_down_bids_zero_and_recovers(servers: Servers) -> None:
    alone = servers.alone
    instance = {"campaign": "2997", "pctr": 0.05, "auction": "down-1"}
    assert _v1(alone, instance).json()["predictions"][0] > 0
    servers.private_redis.kill()
    for k in range(3):
        down = _v1(alone, {"campaign": "2997", "pctr": 0.05, "auction": f"down-{k + 2}"})
        assert (down.status_code, down.json()["predictions"]) == (200, [0]), down.text
    notice = _notices(alone, {"campaign": "2997", "auction": "down-1", "price": 10})
    assert notice.status_code == 503 and notice.json()["reason"], notice.text
    assert _metric(alone, "bidflow_bidder_zero_bids_total", reason="budget_unavailable") == 3
    servers.private_redis.start()  # an empty Redis: the bidder starts a fresh episode
    deadline = time.monotonic() + 10
    while _v1(alone, {"campaign": "2997", "pctr": 0.05, "auction": "up"}).json()["predictions"] == [0]:
        assert time.monotonic() < deadline, "bids did not resume"
        time.sleep(0.1)
