-- Shared by every slot-store script (prepended to each; see scripts.rs).
-- ARGV[1] is always the deployment's key prefix P; the last two ARGV are
-- always the caller's lease TTL (ms) and the generation it saw last (0:
-- none), read by `begin`. Keys:
--   P..'leases'          ZSET  fencing token -> lease expiry (ms, store clock)
--   P..'holders'         HASH  fencing token -> "user replica day quota_bytes f" (holder_record;
--                                f=1 if the charge is refunded when the lease expires unreleased)
--   P..'user:'..user     ZSET  fencing token -> lease expiry (that user's leases)
--   P..'fence'           INT   last fencing token handed out (seeded per generation, see below)
--   P..'gen'             STR   "start quarantine_end": this generation's start (store clock,
--                              ms), written by the first script run on a store that holds
--                              nothing under P, and until when nothing new is granted because
--                              a replica saw an earlier generation (0: never); see `begin`
--   P..'ticket'          INT   last waiter ticket handed out
--   P..'queue'           ZSET  ticket -> ticket (FIFO order)
--   P..'queue:user'      HASH  ticket -> user
--   P..'queue:deadline'  ZSET  ticket -> when the ticket is dropped unless polled (ms)
--   P..'quota:'..day..':'..user  INT  bytes charged that UTC day (expires after 2 days)
-- Channel P..'released': the release script publishes each released token
-- while anyone waits (a wake-up hint for waiters; wake.rs).
-- Every script's reply ends with the generation, so each replica notices a
-- store that lost its data (restart without persistence) at its next call.
-- Keys are derived from the prefix inside the scripts, so this needs a
-- standalone Redis (or a cluster with the prefix as one hash tag).

local MS_PER_DAY = 86400000

-- The store's clock, in ms since the Unix epoch (exact in a Lua double).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Fencing tokens per ms of a generation's life: a generation started at g
-- hands out tokens from g * FENCE_PER_MS up, and Redis runs far fewer than
-- FENCE_PER_MS scripts a ms (~100 here), so every token of an earlier
-- generation (started before g, lost at a restart after it) is below
-- the next one's first token: tokens increase across restarts too, as
-- long as the store's clock does not go back. now_ms * FENCE_PER_MS is
-- about 1.8e15, exact in a Lua double (2^53 = 9.0e15).
local FENCE_PER_MS = 1000

-- An integer as Redis stores it (Lua 5.1's tostring gives 1.8e+15).
local function int(n)
  return string.format('%d', n)
end

-- Every script begins here. Returns this generation's start and the end
-- of its quarantine (0: none), from one read of P..'gen'; `now` may be nil
-- (read from the clock only when a generation begins).
-- 1. A store that holds no generation (a new deployment, or one that lost
--    its data) begins one now, and seeds the fencing counter above every
--    earlier token.
-- 2. A caller that saw another generation (the last ARGV; 0: none yet)
--    tells the store it lost its data: nothing new is granted until one
--    lease TTL (the ARGV before it) after the generation began. By then
--    every holder has re-asserted its lease (renew.lua; it renews every
--    third of the TTL) or stopped trusting it (90 % of the TTL after its
--    last renewal, which was before the restart).
local function begin(p, now)
  local gen = redis.call('GET', p .. 'gen')
  local g, q
  if gen then
    local gs, qs = string.match(gen, '^(%d+) (%d+)$')
    g, q = tonumber(gs), tonumber(qs)
  else
    g, q = now or now_ms(), 0
    local fence = tonumber(redis.call('GET', p .. 'fence') or '0')
    if g * FENCE_PER_MS > fence then
      redis.call('SET', p .. 'fence', int(g * FENCE_PER_MS))
    end
    redis.call('SET', p .. 'gen', int(g) .. ' 0')
  end
  local known = tonumber(ARGV[#ARGV])
  if q == 0 and known ~= 0 and known ~= g then
    q = g + tonumber(ARGV[#ARGV - 1])
    redis.call('SET', p .. 'gen', int(g) .. ' ' .. int(q))
  end
  return g, q
end

-- A lease's holder record: "user replica day bytes refund" (user ids and
-- replica ids are [A-Za-z0-9._-], so a space separates them); cheaper
-- than cjson here, which matters on every grant and release.
local function holder_record(user, replica, day, bytes, refund_flag)
  return user .. ' ' .. replica .. ' ' .. int(day) .. ' ' .. int(bytes) .. ' ' .. int(refund_flag)
end

local function holder_of(rec)
  local u, r, d, b, f = string.match(rec, '^(%S+) (%S+) (%d+) (%d+) (%d)$')
  return {u = u, r = r, d = tonumber(d), b = tonumber(b), f = tonumber(f)}
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
      local holder = holder_of(rec)
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
