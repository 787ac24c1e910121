-- release: deletes the lease `token` if this replica holds it for this
-- user; never anyone else's. Refunds its quota charge if asked.
-- ARGV: 1 prefix, 2 token, 3 replica, 4 user, 5 refund (1/0)
-- Replies: {1, refunded_bytes} released; {0, 0} not held (wrong token, another holder, or expired and purged).
local p, token, replica, user, wants_refund = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rec = redis.call('HGET', p .. 'holders', token)
if not rec then
  return {0, 0}
end
local holder = cjson.decode(rec)
if holder.r ~= replica or holder.u ~= user then
  return {0, 0}
end
drop_lease(p, token, holder)
local refunded = 0
if wants_refund == '1' then
  refunded = refund(p, holder)
end
return {1, refunded}
