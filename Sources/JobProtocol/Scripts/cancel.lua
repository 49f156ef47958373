-- cancel.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- CANCEL: ARGV = queue, id, retention ms, keep as dead letter (1/0).
-- Returns `cancelled`, `cancelling` (running: the worker is told at its next heartbeat), `unknown`, or `final:<state>`.
local id, retention, keep = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local jk = jobkey(id)
local r = redis.call('HMGET', jk, 'state', 'tier')
local state = r[1]
if not state then return 'unknown' end
if state == 'running' then
  redis.call('HSET', jk, 'cancel', keep and '2' or '1')
  publish(id, 'cancelling')
  return 'cancelling'
end
if state == 'queued' then
  redis.call('LREM', P .. 't:' .. (r[2] or 'standard'), -1, id)
elseif state == 'scheduled' or state == 'retrying' then
  redis.call('ZREM', P .. 'scheduled', id)
else
  return 'final:' .. state
end
if keep then
  dead_letter(id, jk, 'cancelled', 'cancelled by request', nil, retention)
else
  redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW, 'error', 'cancelled by request')
  if retention > 0 then redis.call('PEXPIRE', jk, retention) end
  redis.call('HINCRBY', P .. 'stats', 'cancelled', 1)
  publish(id, 'cancelled')
end
return 'cancelled'
