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
    episode -> settled spend of that episode (the last ``KEEP_EPISODES`` episodes).

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
  for ``cooldown_s`` (a breaker), so that each request does not pay the timeout.

Two replicas serving different versions of one bidder may disagree on ``B`` or ``T``: a new
episode starts with the plan of the replica that counted the last auction of the previous one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from bidflow.errors import BiddingError

if TYPE_CHECKING:
    import redis

    from bidflow.bidding.policies import Policy

log = logging.getLogger(__name__)

ATTEMPTS: Final = 3  # bids computed from a fresh state before the auction is counted with a bid of 0
KEEP_EPISODES: Final = 256  # episodes whose settled spend is kept in the ``spend`` hash
SWEEP: Final = 32  # expired reservations settled per script call at most
DEFAULT_TIMEOUT_S: Final = 0.02
DEFAULT_COOLDOWN_S: Final = 1.0

# Settles expired reservations as spent; shared by both scripts. Returns count, amount.
_SWEEP_LUA = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function charge(episode, amount, current)
  if amount > 0 then
    redis.call('HINCRBY', KEYS[1], 'spent', amount)
    if episode > current - KEEP_EPISODES then redis.call('HINCRBY', KEYS[4], episode, amount) end
  end
end
local function sweep(now, current)
  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, SWEEP)
  local amount = 0
  for _, id in ipairs(due) do
    local held = redis.call('HGET', KEYS[2], id)
    if held then
      local sep = string.find(held, ':', 1, true)
      local reserved = tonumber(string.sub(held, 1, sep - 1))
      charge(tonumber(string.sub(held, sep + 1)), reserved, current)
      amount = amount + reserved
      redis.call('HDEL', KEYS[2], id)
    end
    redis.call('ZREM', KEYS[3], id)
  end
  if amount > 0 then redis.call('HINCRBY', KEYS[1], 'outstanding', -amount) end
  return #due, amount
end
""".replace("KEEP_EPISODES", str(KEEP_EPISODES)).replace("SWEEP", str(SWEEP))

# KEYS: state, reservations, deadlines, spend.
# ARGV: bid, pctr, auction ('' for none), B, T, ttl in ms.
# Reply: placed (1 reserved, 0 refused, 2 repeated auction id), bid, budget, left, episode,
#        pctr_sum (string), pctr_n, expired count, expired amount.
_RESERVE_LUA = (
    _SWEEP_LUA
    + """
local s = redis.call('HMGET', KEYS[1], 'budget', 'left', 'episode', 'pctr_sum', 'pctr_n')
local budget, left, episode = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
local psum, pn = tonumber(s[4]) or 0, tonumber(s[5]) or 0
if not budget then budget, left, episode = tonumber(ARGV[4]), tonumber(ARGV[5]), 1 end
local now = now_ms()
local expired, expired_amount = sweep(now, episode)
local bid, auction = tonumber(ARGV[1]), ARGV[3]
if auction ~= '' then
  local held = redis.call('HGET', KEYS[2], auction)
  if held then
    local reserved = tonumber(string.sub(held, 1, string.find(held, ':', 1, true) - 1))
    return {2, reserved, budget, left, episode, tostring(psum), pn, expired, expired_amount}
  end
end
if bid > budget + 100000 then
  return {0, bid, budget, left, episode, tostring(psum), pn, expired, expired_amount}
end
budget = budget - bid
left = left - 1
psum = psum + tonumber(ARGV[2])
pn = pn + 1
if bid > 0 then
  if auction ~= '' then
    redis.call('HSET', KEYS[2], auction, bid .. ':' .. episode)
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), auction)
    redis.call('HINCRBY', KEYS[1], 'outstanding', bid)
  else
    charge(episode, bid, episode)
  end
end
if left <= 0 then
  episode = episode + 1
  budget, left = tonumber(ARGV[4]), tonumber(ARGV[5])
  redis.call('HDEL', KEYS[4], episode - KEEP_EPISODES)
end
redis.call('HSET', KEYS[1], 'budget', budget, 'left', left, 'episode', episode,
           'pctr_sum', tostring(psum), 'pctr_n', pn)
return {1, bid, budget, left, episode, tostring(psum), pn, expired, expired_amount}
""".replace("KEEP_EPISODES", str(KEEP_EPISODES))
)

# KEYS: state, reservations, deadlines, spend. ARGV: auction, price (-1: lost).
# Reply: status (1 won, 2 lost, 0 unknown), charged, refunded, episode of the reservation,
#        expired count, expired amount.
_SETTLE_LUA = (
    _SWEEP_LUA
    + """
local current = tonumber(redis.call('HGET', KEYS[1], 'episode')) or 1
local expired, expired_amount = sweep(now_ms(), current)
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then return {0, 0, 0, 0, expired, expired_amount} end
local sep = string.find(held, ':', 1, true)
local reserved, episode = tonumber(string.sub(held, 1, sep - 1)), tonumber(string.sub(held, sep + 1))
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'outstanding', -reserved)
local price = tonumber(ARGV[2])
local charged = 0
if price >= 0 then charged = math.min(price, reserved) end
charge(episode, charged, current)
local refunded = 0
if episode == current then
  refunded = reserved - charged
  if refunded > 0 then redis.call('HINCRBY', KEYS[1], 'budget', refunded) end
end
local status = 2
if price >= 0 then status = 1 end
return {status, charged, refunded, episode, expired, expired_amount}
"""
)

# KEYS as above. Reply: expired count, expired amount.
_SWEEP_ONLY_LUA = (
    _SWEEP_LUA
    + """
local current = tonumber(redis.call('HGET', KEYS[1], 'episode')) or 1
local expired, amount = sweep(now_ms(), current)
return {expired, amount}
"""
)

Status = Literal["won", "lost", "unknown"]
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
    """

    bid: int
    state: BudgetState | None
    reason: str | None = None
    expired: int = 0
    repeated: bool = False


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
    ) -> None:
        if plan.budget < 0 or plan.episode < 1:
            raise BiddingError("a budget plan needs B >= 0 and T >= 1", got=f"B={plan.budget}, T={plan.episode}")
        self.client = client
        self.plan = plan
        self.cooldown_s = cooldown_s
        tag = f"bidflow:bidder:{{{model}:{campaign}}}"
        self.keys: tuple[str, str, str, str] = (f"{tag}:state", f"{tag}:reservations", f"{tag}:deadlines",
                                                f"{tag}:spend")  # fmt: skip
        self._ttl_ms = str(max(1, math.ceil(ttl_s * 1000)))
        self._budget, self._episode = str(plan.budget), str(plan.episode)
        self._reserve = client.register_script(_RESERVE_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._sweep = client.register_script(_SWEEP_ONLY_LUA)
        self._open_until = 0.0
        self._last_reason: str | None = None

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
        return cls(client, model, campaign, plan, ttl_s=ttl_s, cooldown_s=cooldown_s)

    def state(self) -> BudgetState:
        """The state a bid is computed from (a fresh episode when the store holds none yet)."""
        values = self._call(self.client.hmget, self.keys[0], ("budget", "left", "episode", "pctr_sum", "pctr_n"))
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
        args = (bid, repr(pctr), auction or "", self._budget, self._episode, self._ttl_ms)
        r = self._call(self._reserve, self.keys, args)
        return int(r[0]), int(r[1]), _state(r[2], r[3], r[4], r[5], r[6]), int(r[7])

    def settle(self, auction: str, price: int | None) -> Settlement:
        """Settle the reservation of ``auction``: won at ``price``, or lost (``price`` None)."""
        r = self._call(self._settle, self.keys, (auction, -1 if price is None else price))
        status = _STATUS[int(r[0])]
        if status == "unknown":
            return Settlement(status, expired=int(r[4]))
        return Settlement(status, int(r[1]), int(r[2]), int(r[3]), int(r[4]))

    def sweep(self) -> tuple[int, int]:
        """Count the reservations past their deadline as spent (at most ``SWEEP``); (count, amount)."""
        r = self._call(self._sweep, self.keys, ())
        return int(r[0]), int(r[1])

    def totals(self) -> Totals:
        """The store's whole accounting, read in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys[0])
        pipe.hlen(self.keys[1])
        pipe.hgetall(self.keys[3])
        state, reservations, spend = self._call(pipe.execute)
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
        self._call(self.client.delete, *self.keys)

    def close(self) -> None:
        self.client.close()

    def _call(self, method: Any, *args: Any) -> Any:
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
        for _ in range(ATTEMPTS):
            bid = policy.bid(pctr, state.left, state.budget, state.mean_pctr)
            placed, amount, after, expired = store.reserve(bid, pctr, auction)
            if placed == 1:
                return Placed(amount, after, _zero_reason(amount, state), expired)
            if placed == 2:
                return Placed(amount, after, None, expired, repeated=True)
            state = after  # another replica reserved in between: bid again from what the script saw
        placed, amount, after, expired = store.reserve(0, pctr, auction)
        return Placed(amount, after, "contention" if placed == 1 else None, expired, repeated=placed == 2)
    except BudgetUnavailable:
        return Placed(0, None, "budget_unavailable")


def _zero_reason(bid: int, state: BudgetState) -> str | None:
    if bid:
        return None
    return "budget_exhausted" if state.budget <= 0 else "policy"


def _state(budget: Any, left: Any, episode: Any, pctr_sum: Any, pctr_n: Any) -> BudgetState:
    n = int(pctr_n or 0)
    return BudgetState(int(budget), int(left), int(episode), float(pctr_sum) / n if n else None)
