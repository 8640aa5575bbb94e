"""The budget store's Lua scripts (``bidflow.bidding.budget`` says what they guarantee and why).

Each runs atomically in Redis over the four keys of one (model, campaign): ``state``, ``reservations``,
``deadlines`` and ``spend``, in that order. Times are Redis's own clock (``TIME``), so replicas whose
clocks differ agree on when a reservation expires.
"""

from __future__ import annotations

from typing import Final

KEEP_EPISODES: Final = 256  # episodes whose settled spend is kept in the ``spend`` hash
SWEEP: Final = 32  # expired reservations settled per script call at most

# Settles expired reservations as spent; shared by both scripts. Returns count, amount.
SWEEP_LUA: Final = """
local function reply(...)
  local parts = {...}
  for i = 1, #parts do parts[i] = tostring(parts[i]) end
  return table.concat(parts, ' ')
end
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
# Reply (one string of space-separated numbers, as every script here answers: one bulk reply
# parses in a fraction of the time of an array of nine): placed (1 reserved, 0 refused, 2 repeated
# auction id), bid, budget, left, episode, pctr_sum, pctr_n, expired count, expired amount.
RESERVE_LUA: Final = (
    SWEEP_LUA
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
    return reply(2, reserved, budget, left, episode, psum, pn, expired, expired_amount)
  end
end
if bid > budget then
  return reply(0, bid, budget, left, episode, psum, pn, expired, expired_amount)
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
return reply(1, bid, budget, left, episode, psum, pn, expired, expired_amount)
""".replace("KEEP_EPISODES", str(KEEP_EPISODES))
)

# KEYS: state, reservations, deadlines, spend. ARGV: auction, price (-1: lost).
# Reply: status (1 won, 2 lost, 0 unknown), charged, refunded, episode of the reservation,
#        expired count, expired amount.
SETTLE_LUA: Final = (
    SWEEP_LUA
    + """
local current = tonumber(redis.call('HGET', KEYS[1], 'episode')) or 1
local expired, expired_amount = sweep(now_ms(), current)
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then return reply(0, 0, 0, 0, expired, expired_amount) end
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
return reply(status, charged, refunded, episode, expired, expired_amount)
"""
)

# KEYS as above. Reply: expired count, expired amount.
SWEEP_ONLY_LUA: Final = (
    SWEEP_LUA
    + """
local current = tonumber(redis.call('HGET', KEYS[1], 'episode')) or 1
local expired, amount = sweep(now_ms(), current)
return reply(expired, amount)
"""
)
