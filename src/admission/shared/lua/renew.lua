-- renew: the holder of `token` extends its own lease, if it is still valid;
-- or, if the store lost its data (a generation other than the lease's) and
-- is in quarantine (common.lua), re-asserts it as it was.
-- ARGV: 1 prefix, 2 token, 3 replica, 4 lease ttl ms, 5 user, 6 day the quota was charged to,
--       7 quota bytes, 8 refund on expiry (1/0), 9 the generation the lease belongs to;
--       then common.lua's two
-- Replies (each followed by the generation): {1, new_expiry_ms} renewed;
--   {2, new_expiry_ms} re-asserted in a new generation; {0, now_ms} expired, gone or
--   not this replica's.
local p, token, replica, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local user, day, bytes, refund_flag = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local held_in = tonumber(ARGV[9])
local now = now_ms()
-- A replica's first call in a new generation sets its quarantine (begin),
-- since it saw the one this lease belongs to.
local g, quarantine_end = begin(p, now)
local expiry = redis.call('ZSCORE', p .. 'leases', token)
local rec = redis.call('HGET', p .. 'holders', token)
local new_expiry = now + ttl
if expiry and rec and tonumber(expiry) > now then
  local holder = holder_of(rec)
  if holder.r ~= replica then
    return {0, now, g}
  end
  redis.call('ZADD', p .. 'leases', 'XX', new_expiry, token)
  redis.call('ZADD', p .. 'user:' .. holder.u, 'XX', new_expiry, token)
  return {1, new_expiry, g}
end
if not rec and held_in ~= g and now < quarantine_end then
  -- The store forgot this lease with everything else: put it back as it
  -- was (slots, holder, quota charge) and keep the fencing counter above
  -- its token (it is already, by the generation's seed: belt and braces).
  if tonumber(token) > tonumber(redis.call('GET', p .. 'fence') or '0') then
    redis.call('SET', p .. 'fence', token)
  end
  redis.call('ZADD', p .. 'leases', new_expiry, token)
  redis.call('ZADD', p .. 'user:' .. user, new_expiry, token)
  redis.call('HSET', p .. 'holders', token, holder_record(user, replica, day, bytes, refund_flag))
  local quota_key = p .. 'quota:' .. day .. ':' .. user
  redis.call('INCRBY', quota_key, ARGV[7])
  redis.call('PEXPIRE', quota_key, 2 * MS_PER_DAY)
  return {2, new_expiry, g}
end
purge(p, now)
return {0, now, g}
