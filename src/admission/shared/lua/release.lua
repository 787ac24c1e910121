-- release: deletes the lease `token` if this replica holds it for this
-- user; never anyone else's. Refunds its quota charge if asked.
-- ARGV: 1 prefix, 2 token, 3 replica, 4 user, 5 refund (1/0), then common.lua's two
-- Replies: {1, refunded_bytes} released; {0, 0} not held (wrong token, another holder, or
-- expired and purged); each followed by the generation.
local p, token, replica, user, wants_refund = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local g = begin(p, nil)
local rec = redis.call('HGET', p .. 'holders', token)
if not rec then
  return {0, 0, g}
end
local holder = holder_of(rec)
if holder.r ~= replica or holder.u ~= user then
  return {0, 0, g}
end
drop_lease(p, token, holder)
-- Wakes the waiters of every replica, if any (a hint: they poll anyway;
-- wake.rs).
if redis.call('ZCARD', p .. 'queue') > 0 then
  redis.call('PUBLISH', p .. 'released', token)
end
local refunded = 0
if wants_refund == '1' then
  refunded = refund(p, holder)
end
return {1, refunded, g}
