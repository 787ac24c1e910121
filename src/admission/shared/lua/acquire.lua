-- acquire: a global and a user slot together, or neither, plus the day's
-- quota charge, in one step.
-- ARGV: 1 prefix, 2 user, 3 replica, 4 ticket (0: a new request),
--       5 global limit, 6 user limit, 7 lease ttl ms, 8 quota bytes,
--       9 daily limit bytes (-1: limits off, charged but never refused),
--       10 waiters max, 11 waiter ttl ms (a ticket not polled in that time is dropped),
--       12 refund on expiry (1/0: the profile refunds failed uploads); then common.lua's two
-- Replies (each followed by the generation, common.lua):
--   {1, token, expiry_ms, day, charged_after}        granted
--   {2, ticket, global_in_use, user_in_use, ahead}   waiting (ticket kept alive until now + waiter ttl)
--   {3, charged, daily_limit, day}                   quota exceeded (the ticket, if any, is dropped)
--   {4, waiting, waiters_max}                        queue full
--   {5, ticket}                                      the ticket is gone (not polled in time)
local p, user, replica = ARGV[1], ARGV[2], ARGV[3]
local ticket = tonumber(ARGV[4])
local global_limit, user_limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, quota_bytes, daily_limit = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local waiters_max, waiter_ttl = tonumber(ARGV[10]), tonumber(ARGV[11])
local refund_on_expiry = tonumber(ARGV[12])

local now = now_ms()
local g, quarantine_end = begin(p, now)
purge(p, now)
if ticket ~= 0 and not redis.call('ZSCORE', p .. 'queue', ticket) then
  return {5, ticket, g}
end
local day = math.floor(now / MS_PER_DAY)
local quota_key = p .. 'quota:' .. day .. ':' .. user
if daily_limit >= 0 then
  local charged = tonumber(redis.call('GET', quota_key) or '0')
  if charged + quota_bytes > daily_limit then
    if ticket ~= 0 then drop_ticket(p, ticket) end
    return {3, charged, daily_limit, day, g}
  end
end

local global_used = redis.call('ZCARD', p .. 'leases')
local user_used = user_in_use(p, user)
local bound = before(ticket)
-- The scan runs only when both slots are free (short-circuit). In
-- quarantine only holders re-asserting their leases (renew.lua) get slots.
if global_used < global_limit and user_used < user_limit
    and now >= quarantine_end
    and not entitled_ahead(p, bound, user_limit) then
  local token = redis.call('INCR', p .. 'fence')
  local expiry = now + ttl
  redis.call('ZADD', p .. 'leases', expiry, token)
  redis.call('ZADD', p .. 'user:' .. user, expiry, token)
  redis.call('HSET', p .. 'holders', token,
    holder_record(user, replica, day, quota_bytes, refund_on_expiry))
  local charged_after = redis.call('INCRBY', quota_key, ARGV[8])
  if charged_after == quota_bytes then
    -- A new key (or one still at 0): give it its lifetime.
    redis.call('PEXPIRE', quota_key, 2 * MS_PER_DAY)
  end
  if ticket ~= 0 then drop_ticket(p, ticket) end
  return {1, token, expiry, day, charged_after, g}
end

if ticket == 0 then
  local waiting = redis.call('ZCARD', p .. 'queue')
  if waiting >= waiters_max then
    return {4, waiting, waiters_max, g}
  end
  ticket = redis.call('INCR', p .. 'ticket')
  redis.call('ZADD', p .. 'queue', ticket, ticket)
  redis.call('HSET', p .. 'queue:user', ticket, user)
end
redis.call('ZADD', p .. 'queue:deadline', now + waiter_ttl, ticket)
local ahead = redis.call('ZCOUNT', p .. 'queue', '-inf', before(ticket))
return {2, ticket, global_used, user_used, ahead, g}
