-- Shared by every slot-store script (prepended to each; see scripts.rs).
-- ARGV[1] is always the deployment's key prefix P. Keys:
--   P..'leases'          ZSET  fencing token -> lease expiry (ms, store clock)
--   P..'holders'         HASH  fencing token -> cjson {u=user, r=replica, d=day, b=quota bytes,
--                                f=1 if the charge is refunded when the lease expires unreleased}
--   P..'user:'..user     ZSET  fencing token -> lease expiry (that user's leases)
--   P..'fence'           INT   last fencing token handed out (never reset)
--   P..'ticket'          INT   last waiter ticket handed out
--   P..'queue'           ZSET  ticket -> ticket (FIFO order)
--   P..'queue:user'      HASH  ticket -> user
--   P..'queue:deadline'  ZSET  ticket -> when the ticket is dropped unless polled (ms)
--   P..'quota:'..day..':'..user  INT  bytes charged that UTC day (expires after 2 days)
-- Keys are derived from the prefix inside the scripts, so this needs a
-- standalone Redis (or a cluster with the prefix as one hash tag).

local MS_PER_DAY = 86400000

-- The store's clock, in ms since the Unix epoch (exact in a Lua double).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function drop_ticket(p, ticket)
  redis.call('ZREM', p .. 'queue', ticket)
  redis.call('ZREM', p .. 'queue:deadline', ticket)
  redis.call('HDEL', p .. 'queue:user', ticket)
end

local function drop_lease(p, token, holder)
  redis.call('ZREM', p .. 'leases', token)
  redis.call('ZREM', p .. 'user:' .. holder.u, token)
  redis.call('HDEL', p .. 'holders', token)
end

-- Gives back a lease's quota charge (never below zero); the bytes refunded.
local function refund(p, holder)
  if holder.b <= 0 then return 0 end
  local quota_key = p .. 'quota:' .. holder.d .. ':' .. holder.u
  local charged = tonumber(redis.call('GET', quota_key) or '0')
  local refunded = math.min(charged, holder.b)
  if refunded > 0 then
    redis.call('DECRBY', quota_key, refunded)
  end
  return refunded
end

-- Expired leases (expiry <= now) and waiters not polled in time go first,
-- so every decision counts only valid leases and live waiters.
local function purge(p, now)
  local expired = redis.call('ZRANGEBYSCORE', p .. 'leases', '-inf', now)
  for _, token in ipairs(expired) do
    local rec = redis.call('HGET', p .. 'holders', token)
    if rec then
      -- An expired lease's upload ended without a release (its replica
      -- died or lost the store): a failure, refunded if the profile says so.
      local holder = cjson.decode(rec)
      drop_lease(p, token, holder)
      if holder.f == 1 then refund(p, holder) end
    else
      redis.call('ZREM', p .. 'leases', token)
    end
  end
  local gone = redis.call('ZRANGEBYSCORE', p .. 'queue:deadline', '-inf', now)
  for _, ticket in ipairs(gone) do
    drop_ticket(p, ticket)
  end
end

local function user_in_use(p, user)
  return redis.call('ZCARD', p .. 'user:' .. user)
end

-- The score bound of the waiters queued before `ticket` (0: a newcomer,
-- behind everyone).
local function before(ticket)
  if ticket == 0 then return '+inf' end
  return '(' .. ticket
end

-- Whether a waiter queued before `bound` is entitled to go first: it waits
-- for a user that has a free slot. A waiter whose own user is at its limit
-- competes only with that user and is passed over, as in the ledger's scan.
-- Stops at the first entitled waiter, so the usual cost is one batch.
local function entitled_ahead(p, bound, user_limit)
  local offset = 0
  while true do
    local batch = redis.call('ZRANGEBYSCORE', p .. 'queue', '-inf', bound, 'LIMIT', offset, 64)
    if #batch == 0 then return false end
    for _, t in ipairs(batch) do
      local u = redis.call('HGET', p .. 'queue:user', t)
      if u and user_in_use(p, u) < user_limit then return true end
    end
    offset = offset + #batch
  end
end
