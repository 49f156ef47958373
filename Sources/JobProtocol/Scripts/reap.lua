-- reap.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- REAP: ARGV = queue, limit, lease losses before poison, retention ms.
-- Returns expired leases to the front of their tier, or dead-letters them as `poison`; returns {requeued, poisoned}.
local limit, max_lost, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', P .. 'inflight', '-inf', NOW, 'LIMIT', 0, limit)
local requeued, poisoned = 0, 0
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'inflight', id)
  local jk = jobkey(id)
  local r = redis.call('HMGET', jk, 'state', 'tier', 'worker', 'attempts', 'cancel')
  if r[1] == 'running' and r[5] then
    -- Cancel was requested and the worker died before acting on it: the cancel wins.
    finish_cancelled(id, jk, r[5], retention)
  elseif r[1] == 'running' then
    local lost = redis.call('HINCRBY', jk, 'lost', 1)
    local why = 'lease expired: worker ' .. (r[3] or '?') .. ' stopped renewing it (crashed, hung or cut off)'
    add_history(jk, cjson.encode({attempt = tonumber(r[4]), at = NOW, error = why, outcome = 'lease_lost', worker = r[3]}))
    if lost >= max_lost then
      dead_letter(id, jk, 'poison', 'lost its lease ' .. lost .. ' times; last: ' .. why, nil, retention)
      poisoned = poisoned + 1
    else
      redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
      redis.call('HDEL', jk, 'worker')
      redis.call('RPUSH', P .. 't:' .. (r[2] or 'standard'), id)
      wake(r[2])
      requeued = requeued + 1
    end
  end
end
if requeued > 0 then redis.call('HINCRBY', P .. 'stats', 'reaped', requeued) end
return {requeued, poisoned}
