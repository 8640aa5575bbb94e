"""The shared budget's semantics on the real Redis (``bidflow.bidding.budget``): reserve, settle, expire, roll over."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from bidflow.bidding.budget import BudgetState, BudgetStore, BudgetUnavailable, Plan, place_bid
from tests.integration.bidding.conftest import unique_name

pytestmark = pytest.mark.integration

MakeStore = Callable[..., BudgetStore]


@dataclass
class FixedPolicy:
    """Bids ``value`` (capped by the budget left, as every policy is); records the states it was asked at."""

    value: int
    seen: list[tuple[int, int, float | None]] = field(default_factory=list)
    name: str = "constant"

    def bid(self, pctr: float, left: int, budget: int, mean_pctr: float | None = None) -> int:
        self.seen.append((left, budget, mean_pctr))
        return max(0, min(self.value, budget))


def test_a_fresh_store_starts_episode_one_with_the_full_budget(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=5)
    assert store.state() == BudgetState(100, 5, 1, None)
    totals = store.totals()
    assert (totals.outstanding, totals.spent, totals.reservations, totals.spend) == (0, 0, 0, {})


def test_reserve_deducts_counts_and_refuses_what_does_not_fit(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=5)
    placed, amount, state, _ = store.reserve(30, 0.1, "a")
    assert (placed, amount) == (1, 30)
    assert state == BudgetState(70, 4, 1, pytest.approx(0.1))
    placed, amount, state, _ = store.reserve(80, 0.3, "b")  # more than is left: refused, nothing counted
    assert (placed, amount) == (0, 80)
    assert state == BudgetState(70, 4, 1, pytest.approx(0.1))
    store.reserve(0, 0.3, None)  # a bid of 0 reserves nothing but counts the auction and its pCTR
    assert store.state() == BudgetState(70, 3, 1, pytest.approx(0.2))
    totals = store.totals()
    assert (totals.outstanding, totals.reservations, totals.spent) == (30, 1, 0)


def test_win_refunds_the_rest_loss_refunds_all_and_a_second_notice_is_a_no_op(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=10)
    store.reserve(30, 0.1, "won")
    store.reserve(25, 0.1, "lost")
    store.reserve(10, 0.1, "dear")
    assert store.state().budget == 35
    won = store.settle("won", 20)
    assert (won.status, won.charged, won.refunded, won.episode) == ("won", 20, 10, 1)
    lost = store.settle("lost", None)
    assert (lost.status, lost.charged, lost.refunded, lost.episode) == ("lost", 0, 25, 1)
    dear = store.settle("dear", 99)  # a price above the bid is charged at the bid (never more than reserved)
    assert (dear.status, dear.charged, dear.refunded) == ("won", 10, 0)
    assert store.state().budget == 100 - 20 - 10
    before = store.totals()
    assert (before.outstanding, before.spent, before.reservations, before.spend) == (0, 30, 0, {1: 30})
    for auction, price in (("won", 20), ("lost", None), ("never-bid", 5)):
        assert store.settle(auction, price).status == "unknown"
    assert store.totals() == before


def test_a_repeated_auction_id_gets_its_reservation_again(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=10)
    store.reserve(30, 0.1, "a")
    placed, amount, state, _ = store.reserve(50, 0.2, "a")
    assert (placed, amount, state.budget, state.left) == (2, 30, 70, 9)
    assert store.totals().outstanding == 30


def test_a_bid_without_auction_id_is_spent_at_once(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=10)
    store.reserve(30, 0.1, None)
    totals = store.totals()
    assert (totals.state.budget, totals.outstanding, totals.spent, totals.spend) == (70, 0, 30, {1: 30})


def test_a_reservation_without_notice_expires_as_spent(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=10, ttl_s=0.05)
    store.reserve(30, 0.1, "silent")
    store.reserve(20, 0.1, "settled")
    assert store.settle("settled", None).status == "lost"
    time.sleep(0.1)
    assert store.sweep() == (1, 30)
    totals = store.totals()
    assert (totals.state.budget, totals.outstanding, totals.spent, totals.reservations) == (70, 0, 30, 0)
    late = store.settle("silent", 10)  # the notice came too late: the full bid stays spent
    assert late.status == "unknown"
    assert store.totals().state.budget == 70


def test_reserve_and_settle_sweep_expired_reservations_too(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=10, ttl_s=0.05)
    store.reserve(30, 0.1, "silent")
    time.sleep(0.1)
    assert store.reserve(5, 0.1, "next")[3] == 1  # this call counted one expired reservation
    assert store.totals().spent == 30


def test_episode_rollover_and_notices_from_the_old_episode(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=3)
    store.reserve(40, 0.1, "old-won")
    store.reserve(30, 0.1, "old-lost")
    _, _, state, _ = store.reserve(10, 0.1, "last")  # the episode's last auction: a new one starts
    assert state == BudgetState(100, 3, 2, pytest.approx(0.1))
    store.reserve(60, 0.1, "new")
    won = store.settle("old-won", 25)
    assert (won.status, won.charged, won.refunded, won.episode) == ("won", 25, 0, 1)
    lost = store.settle("old-lost", None)
    assert (lost.status, lost.refunded, lost.episode) == ("lost", 0, 1)
    assert store.state().budget == 40  # the new episode's budget: only its own reservation is deducted
    new = store.settle("new", 50)
    assert (new.episode, new.refunded) == (2, 10)
    totals = store.totals()
    assert totals.spend == {1: 25, 2: 50}
    assert (totals.state.budget, totals.outstanding, totals.reservations) == (50, 10, 1)  # "last" is still open


def test_place_bid_recomputes_when_another_replica_reserved_in_between(make_store: MakeStore) -> None:
    name = unique_name()
    store, other = make_store(budget=100, episode=50, name=name), make_store(budget=100, episode=50, name=name)

    class Racing(FixedPolicy):
        def bid(self, pctr: float, left: int, budget: int, mean_pctr: float | None = None) -> int:
            if not self.seen:  # the other replica takes most of the budget after this one read the state
                other.reserve(90, 0.1, "other")
            return super().bid(pctr, left, budget, mean_pctr)

    policy = Racing(60)
    placed = place_bid(store, policy, 0.1, "mine")  # type: ignore[arg-type]
    assert [budget for _, budget, _ in policy.seen] == [100, 10]
    assert (placed.bid, placed.reason) == (10, None)
    assert store.totals().state.budget == 0


def test_a_recent_state_saves_the_read_and_a_stale_one_is_caught_by_the_script(make_store: MakeStore) -> None:
    name = unique_name()
    store, other = make_store(budget=100, episode=50, name=name, state_age_s=60), make_store(budget=100, episode=50,
                                                                                             name=name)  # fmt: skip
    assert place_bid(store, FixedPolicy(20), 0.1, "a").bid == 20  # type: ignore[arg-type]
    assert store.state() == BudgetState(80, 49, 1, pytest.approx(0.1))  # what the reservation returned
    other.reserve(70, 0.1, "other")  # another replica: this one's recent state does not know
    assert store.state().budget == 80
    policy = FixedPolicy(30)
    placed = place_bid(store, policy, 0.1, "b")  # type: ignore[arg-type]
    assert [budget for _, budget, _ in policy.seen] == [80, 10]  # refused at 30, bid again at the true 10
    assert (placed.bid, placed.refused) == (10, 1)
    assert store.settle("a", None).refunded == 20  # a refund is added to the recent state too
    assert store.state().budget == 20
    assert store.totals().state.budget == 20


def test_place_bid_gives_zero_with_the_reason(make_store: MakeStore) -> None:
    store = make_store(budget=50, episode=50)
    assert place_bid(store, FixedPolicy(50), 0.1, "a").bid == 50  # type: ignore[arg-type]
    exhausted = place_bid(store, FixedPolicy(50), 0.1, "b")  # type: ignore[arg-type]
    assert (exhausted.bid, exhausted.reason) == (0, "budget_exhausted")
    store.settle("a", None)
    not_worth = place_bid(store, FixedPolicy(0), 0.1, "c")  # type: ignore[arg-type]
    assert (not_worth.bid, not_worth.reason) == (0, "policy")
    again = place_bid(store, FixedPolicy(50), 0.1, "a")  # "a" was settled: a new reservation  # type: ignore[arg-type]
    assert (again.bid, again.repeated) == (50, False)
    repeated = place_bid(store, FixedPolicy(10), 0.1, "a")  # type: ignore[arg-type]
    assert (repeated.bid, repeated.repeated) == (50, True)


def test_the_mean_pctr_is_of_every_auction_seen(make_store: MakeStore) -> None:
    store = make_store(budget=100, episode=2)
    policy = FixedPolicy(0)
    for pctr in (0.1, 0.3, 0.5):  # across an episode boundary
        place_bid(store, policy, pctr, None)  # type: ignore[arg-type]
    assert [mean for _, _, mean in policy.seen] == [None, pytest.approx(0.1), pytest.approx(0.2)]
    assert [left for left, _, _ in policy.seen] == [2, 1, 2]


def test_an_unreachable_store_bids_zero_fast_and_opens_its_breaker() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = BudgetStore.connect(f"redis://127.0.0.1:{port}/0", unique_name(), "2997", Plan(100, 10), ttl_s=30,
                                timeout_s=0.05, cooldown_s=60)  # fmt: skip
    started = time.perf_counter()
    placed = place_bid(store, FixedPolicy(10), 0.1, "a")  # type: ignore[arg-type]
    assert (placed.bid, placed.reason, placed.state) == (0, "budget_unavailable", None)
    with pytest.raises(BudgetUnavailable, match="breaker"):
        store.settle("a", 5)
    assert time.perf_counter() - started < 1.0
    store.close()
