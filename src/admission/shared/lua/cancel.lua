-- cancel: a waiter that gives up (timeout, dropped request) leaves the queue.
-- ARGV: 1 prefix, 2 ticket.  Reply: {1} removed, {0} was not queued.
local p, ticket = ARGV[1], ARGV[2]
local queued = redis.call('ZSCORE', p .. 'queue', ticket)
drop_ticket(p, ticket)
if queued then return {1} end
return {0}
