-- renew: the holder of `token` extends its own lease, if it is still valid.
-- ARGV: 1 prefix, 2 token, 3 replica, 4 lease ttl ms
-- Replies: {1, new_expiry_ms} renewed; {0, now_ms} expired, gone or not this replica's.
local p, token, replica, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local expiry = redis.call('ZSCORE', p .. 'leases', token)
local rec = redis.call('HGET', p .. 'holders', token)
if not expiry or not rec or tonumber(expiry) <= now then
  purge(p, now)
  return {0, now}
end
local holder = cjson.decode(rec)
if holder.r ~= replica then
  return {0, now}
end
local new_expiry = now + ttl
redis.call('ZADD', p .. 'leases', 'XX', new_expiry, token)
redis.call('ZADD', p .. 'user:' .. holder.u, 'XX', new_expiry, token)
return {1, new_expiry}
