-- cancel: a waiter that gives up (timeout, dropped request) leaves the queue.
-- ARGV: 1 prefix, 2 ticket, then common.lua's two.  Reply: {1} removed, {0} was not queued
-- (each followed by the generation).
local p, ticket = ARGV[1], ARGV[2]
local g = begin(p, nil)
local queued = redis.call('ZSCORE', p .. 'queue', ticket)
drop_ticket(p, ticket)
if queued then return {1, g} end
return {0, g}
