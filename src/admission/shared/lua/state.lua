-- state: what the store holds now, valid leases only (expired ones are purged first).
-- ARGV: 1 prefix, 2 user ('' for none), then common.lua's two
-- Reply: {global_in_use, user_in_use, waiting, last_fencing_token, now_ms, quota_charged_today,
--         generation}
local p, user = ARGV[1], ARGV[2]
local now = now_ms()
local g = begin(p, now)
purge(p, now)
local user_used, charged = 0, 0
if user ~= '' then
  user_used = user_in_use(p, user)
  charged = tonumber(redis.call('GET', p .. 'quota:' .. math.floor(now / MS_PER_DAY) .. ':' .. user) or '0')
end
return {redis.call('ZCARD', p .. 'leases'), user_used, redis.call('ZCARD', p .. 'queue'),
  tonumber(redis.call('GET', p .. 'fence') or '0'), now, charged, g}
