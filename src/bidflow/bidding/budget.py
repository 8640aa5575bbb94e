"""The served bidder's budget, shared by every replica through Redis, never overspent.

A campaign's budget is one pot however many model-server replicas bid from it, so it lives in Redis,
keyed by the registered model name and the campaign (``bidflow:bidder:{<model>:<campaign>}:*``; the
hash tag keeps the keys in one Redis Cluster slot). Per key set:

``state`` (hash)
    ``budget`` left in the episode (reservations already deducted), ``left`` auctions in the episode
    (the next one included), ``episode`` number, ``outstanding`` reserved amount not yet settled,
    ``spent`` settled spend over all episodes, ``pctr_sum`` / ``pctr_n`` (the running mean of the
    pCTRs seen, which the planned policy normalises by).
``reservations`` (hash)
    auction id -> ``<amount>:<episode>`` of each bid waiting for its notice.
``deadlines`` (sorted set)
    auction id -> the time (Redis's clock, ms) its reservation counts as spent.
``spend`` (hash)
    episode -> settled spend of that episode (the last ``budget_scripts.KEEP_EPISODES`` episodes).

Semantics:

* **A bid.** The server reads the state, asks the policy for the bid at that state (pCTR, auctions
  left, budget left, mean pCTR), then one atomic script reserves it: only if the bid is at most the
  budget left, it deducts the bid, counts the auction (``left`` - 1), adds the pCTR to the running
  mean and records the reservation under the auction id. When the last auction of an episode is
  counted, the next episode starts with the full budget ``B`` and ``T`` auctions. When the budget
  moved between the read and the script (another replica reserved), the script refuses and returns
  the state it saw; the bid is computed again from that state, at most ``ATTEMPTS`` times, then the
  auction is counted with a bid of 0. A bid of 0 reserves nothing but still counts the auction.
  Since every reservation is checked against the budget inside Redis, the replicas together never
  reserve more than ``B`` in an episode, whatever their number and timing.
* **A recent state instead of a read** (``state_age_s``, ``bidder.state_max_age_s``): the state a
  replica's own last script call returned, or a settlement updated, is used for the next bid
  while it is younger than that, instead of reading Redis again: one round trip per bid instead of
  two at any real request rate (the round trip, not the work, is most of a bid's cost). What it
  misses is what other replicas did in those milliseconds: a few auctions in ``left``, and budget
  they reserved, which the script's check catches (the refusal returns the fresh state). Safety does
  not depend on the state's age, only the bid's precision; 0 reads for every bid.
* **An auction id seen again** (a client retrying) gets the amount already reserved for it, and
  nothing changes: bid requests are idempotent per auction id.
* **No auction id**: nothing can settle the bid, so it is counted as spent at once (what expiry
  would do later).
* **A win notice** with clearing price ``p`` settles the reservation: ``p`` is spent (at most the
  reserved amount: a second-price auction never charges above the bid) and the rest is refunded.
  **A loss notice** refunds the whole reservation. A notice for an auction id with no reservation
  (unknown, already settled, or expired) changes nothing and is reported as ``unknown``: notices are
  idempotent, so a sender may retry. A notice for a reservation of an earlier episode settles that
  episode's spend but refunds nothing: the new episode's budget is never touched by the old one.
* **Expiry.** A reservation with no notice after ``ttl_s`` is counted as spent at the full bid: when
  notices are lost the bidder underspends rather than overspends. Expired reservations are swept by
  the scripts (a bounded number per call), so a late notice finds nothing to settle.
* **Redis unreachable or slow** (every call bounded by ``timeout_s``, no retries): ``BudgetUnavailable``.
  The server then bids 0, since spending without a budget could overspend, and stops asking Redis
  for ``cooldown_s`` (a breaker), so that each request does not pay the timeout. A reply that times
  out after Redis ran the script leaves a reservation no bid was answered with: it expires as spent
  (underspend, never over).

Two replicas serving different versions of one bidder may disagree on ``B`` or ``T``: a new
episode starts with the plan of the replica that counted the last auction of the previous one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from bidflow.bidding.budget_scripts import RESERVE_LUA, SETTLE_LUA, SWEEP_ONLY_LUA
from bidflow.bidding.budget_wire import Script, Wire, command
from bidflow.errors import BiddingError

if TYPE_CHECKING:
    import redis

    from bidflow.bidding.policies import Policy

log = logging.getLogger(__name__)

ATTEMPTS: Final = 3  # bids computed from a fresh state before the auction is counted with a bid of 0
DEFAULT_TIMEOUT_S: Final = 0.02
DEFAULT_COOLDOWN_S: Final = 1.0

Status = Literal["won", "lost", "unknown"]
_FIELDS: Final = (b"budget", b"left", b"episode", b"pctr_sum", b"pctr_n")
_STATUS: Final[tuple[Status, Status, Status]] = ("unknown", "won", "lost")


class BudgetUnavailable(BiddingError):
    """The budget store (Redis) did not answer in time, or is down: nothing may be spent."""


@dataclass(frozen=True)
class Plan:
    """One episode's budget ``B`` and length ``T`` (from the fitted bidder at the served level)."""

    budget: int
    episode: int


@dataclass(frozen=True)
class BudgetState:
    """What a bid is computed from: budget and auctions left in the episode, the mean pCTR seen."""

    budget: int
    left: int
    episode: int
    mean_pctr: float | None


@dataclass(frozen=True)
class Placed:
    """The outcome of one bid request.

    Attributes:
        bid: the bid answered (0: no bid).
        state: the state after the auction was counted (None when the store did not answer).
        reason: why the bid is 0 when it is (``policy``, ``budget_exhausted``, ``contention``,
            ``budget_unavailable``), else None.
        expired: reservations the call found expired and counted as spent.
        repeated: the auction id already had a reservation; its amount was answered again.
        refused: reservations the script refused because the budget moved after the state was read
            (another replica reserved in between); each was followed by a bid computed afresh.
    """

    bid: int
    state: BudgetState | None
    reason: str | None = None
    expired: int = 0
    repeated: bool = False
    refused: int = 0


@dataclass(frozen=True)
class Settlement:
    """The outcome of one notice: what it charged and refunded, and to which episode."""

    status: Status
    charged: int = 0
    refunded: int = 0
    episode: int | None = None
    expired: int = 0


@dataclass(frozen=True)
class Totals:
    """The whole store's accounting (for operators and tests)."""

    state: BudgetState
    outstanding: int
    spent: int
    reservations: int
    spend: dict[int, int]


class BudgetStore:
    """The shared budget of one (model, campaign) in Redis (see the module docstring).

    Args:
        client: a redis-py client (``connect`` makes one with bounded waits).
        model: the registered model name.
        campaign: the campaign id.
        plan: the episode budget and length new episodes start with.
        ttl_s: how long a reservation waits for its notice before it counts as spent.
        cooldown_s: how long Redis is left alone after a failure (every call raises at once meanwhile).
    """

    def __init__(
        self,
        client: redis.Redis,
        model: str,
        campaign: str,
        plan: Plan,
        *,
        ttl_s: float,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        state_age_s: float = 0.0,
    ) -> None:
        if plan.budget < 0 or plan.episode < 1:
            raise BiddingError("a budget plan needs B >= 0 and T >= 1", got=f"B={plan.budget}, T={plan.episode}")
        self.client = client
        self.plan = plan
        self.cooldown_s = cooldown_s
        tag = f"bidflow:bidder:{{{model}:{campaign}}}"
        self.keys: tuple[str, str, str, str] = (f"{tag}:state", f"{tag}:reservations", f"{tag}:deadlines",
                                                f"{tag}:spend")  # fmt: skip
        ttl_ms = b"%d" % max(1, math.ceil(ttl_s * 1000))
        self._reserve = Script(RESERVE_LUA, self.keys, 3, (b"%d" % plan.budget, b"%d" % plan.episode, ttl_ms))
        self._settle = Script(SETTLE_LUA, self.keys, 2)
        self._sweep = Script(SWEEP_ONLY_LUA, self.keys, 0)
        self._read = [command(b"HMGET", self.keys[0].encode(), *_FIELDS)]
        self._wire = Wire(client, (self._reserve, self._settle, self._sweep))
        self._open_until = 0.0
        self._last_reason: str | None = None
        self.state_age_s = state_age_s
        self._seen: BudgetState | None = None  # the newest state a call returned, and when
        self._seen_at = 0.0

    @classmethod
    def connect(
        cls,
        url: str,
        model: str,
        campaign: str,
        plan: Plan,
        *,
        ttl_s: float,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        state_age_s: float = 0.0,
    ) -> BudgetStore:
        """A store on the Redis at ``url`` whose every wait is bounded by ``timeout_s`` and never retried.

        redis-py's default retries with backoff would hold a request (and the event loop it runs
        on) for seconds while Redis is down; a bid that cannot be covered is 0 at once instead.
        """
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, model, campaign, plan, ttl_s=ttl_s, cooldown_s=cooldown_s, state_age_s=state_age_s)

    def state(self) -> BudgetState:
        """The state a bid is computed from (a fresh episode when the store holds none yet): read from
        Redis, or the newest one a call returned while it is younger than ``state_age_s``."""
        seen = self._seen
        if seen is not None and time.monotonic() - self._seen_at < self.state_age_s:
            return seen
        values = self._call(self._read)
        if values[0] is None:
            return BudgetState(self.plan.budget, self.plan.episode, 1, None)
        return _state(values[0], values[1], values[2], values[3], values[4])

    def reserve(self, bid: int, pctr: float, auction: str | None) -> tuple[int, int, BudgetState, int]:
        """Reserve ``bid`` for one auction and count it (the script's rules: see the module docstring).

        Returns:
            (placed: 1 reserved, 0 refused because the budget left is below ``bid``, 2 the auction id
            already had a reservation), the amount (the bid, or the earlier reservation's), the
            state after the call, and the reservations the call counted as spent on expiry.
        """
        ident = auction.encode() if auction else b""
        r = self._call(self._reserve.packed(b"%d" % bid, repr(pctr).encode(), ident)).split()
        after = _state(r[2], r[3], r[4], r[5], r[6])
        self._seen, self._seen_at = after, time.monotonic()
        return int(r[0]), int(r[1]), after, int(r[7])

    def settle(self, auction: str, price: int | None) -> Settlement:
        """Settle the reservation of ``auction``: won at ``price``, or lost (``price`` None)."""
        r = self._call(self._settle.packed(auction.encode(), b"%d" % (-1 if price is None else price))).split()
        status = _STATUS[int(r[0])]
        if status == "unknown":
            return Settlement(status, expired=int(r[4]))
        settled = Settlement(status, int(r[1]), int(r[2]), int(r[3]), int(r[4]))
        seen = self._seen
        if settled.refunded and seen is not None and seen.episode == settled.episode:  # keep the recent state true
            self._seen = BudgetState(seen.budget + settled.refunded, seen.left, seen.episode, seen.mean_pctr)
        return settled

    def sweep(self) -> tuple[int, int]:
        """Count the reservations past their deadline as spent (at most ``budget_scripts.SWEEP``); (count, amount)."""
        r = self._call(self._sweep.packed()).split()
        return int(r[0]), int(r[1])

    def totals(self) -> Totals:
        """The store's whole accounting, read in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys[0])
        pipe.hlen(self.keys[1])
        pipe.hgetall(self.keys[3])
        state, reservations, spend = self._guarded(pipe.execute)
        if not state:
            return Totals(BudgetState(self.plan.budget, self.plan.episode, 1, None), 0, 0, 0, {})
        s = {k.decode(): v for k, v in state.items()}
        current = _state(s["budget"], s["left"], s["episode"], s.get("pctr_sum"), s.get("pctr_n"))
        return Totals(
            current,
            int(s.get("outstanding", 0)),
            int(s.get("spent", 0)),
            int(reservations),
            {int(k): int(v) for k, v in spend.items()},
        )

    def clear(self) -> None:
        """Forget everything: the next bid starts episode 1 with the full budget."""
        self._guarded(self.client.delete, *self.keys)

    def close(self) -> None:
        self._wire.close()
        self.client.close()

    def _call(self, packed: list[bytes]) -> Any:
        return self._guarded(self._wire.call, packed)

    def _guarded(self, method: Any, *args: Any) -> Any:
        if self._open_until and time.monotonic() < self._open_until:
            raise BudgetUnavailable("the budget store is not asked while its breaker is open", got=self._last_reason)
        try:
            result = method(*args)
        except Exception as exc:  # redis-py's errors, socket errors: no spend without a budget
            reason = f"{type(exc).__name__}: {exc}"[:200]
            self._open_until = time.monotonic() + self.cooldown_s
            if reason != self._last_reason:
                log.warning("budget store failed, bidding 0 for %.1f s at a time: %s", self.cooldown_s, reason)
                self._last_reason = reason
            raise BudgetUnavailable("the budget store did not answer", got=reason) from exc
        if self._open_until:
            log.warning("budget store answers again")
            self._open_until = 0.0
            self._last_reason = None
        return result


def place_bid(store: BudgetStore, policy: Policy, pctr: float, auction: str | None) -> Placed:
    """Read the state, compute the bid there, reserve it; recompute from the script's state if refused.

    A store that does not answer gives a bid of 0 (reason ``budget_unavailable``), never an error.
    """
    try:
        state = store.state()
        for refused in range(ATTEMPTS):
            bid = policy.bid(pctr, state.left, state.budget, state.mean_pctr)
            placed, amount, after, expired = store.reserve(bid, pctr, auction)
            if placed == 1:
                return Placed(amount, after, _zero_reason(amount, state), expired, refused=refused)
            if placed == 2:
                return Placed(amount, after, None, expired, repeated=True, refused=refused)
            state = after  # another replica reserved in between: bid again from what the script saw
        placed, amount, after, expired = store.reserve(0, pctr, auction)
        return Placed(amount, after, "contention" if placed == 1 else None, expired, repeated=placed == 2,
                      refused=ATTEMPTS)  # fmt: skip
    except BudgetUnavailable:
        return Placed(0, None, "budget_unavailable")


def _zero_reason(bid: int, state: BudgetState) -> str | None:
    if bid:
        return None
    return "budget_exhausted" if state.budget <= 0 else "policy"


def _state(budget: Any, left: Any, episode: Any, pctr_sum: Any, pctr_n: Any) -> BudgetState:
    n = int(pctr_n or 0)
    return BudgetState(int(budget), int(left), int(episode), float(pctr_sum) / n if n else None)
