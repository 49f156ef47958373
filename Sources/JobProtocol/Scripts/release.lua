-- release.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- RELEASE: ARGV = queue, retention ms, then per job: id, fencing token. Hands leased jobs back (graceful shutdown):
-- to the front of their tier, the interrupted attempt not counted. Returns the number released.
local retention = tonumber(ARGV[2])
local released = 0
for b = 3, #ARGV, 2 do
  local id, token = ARGV[b], ARGV[b + 1]
  local jk = jobkey(id)
  local r = redis.call('HMGET', jk, 'state', 'lease', 'tier', 'cancel')
  if r[1] == 'running' and r[2] == token and redis.call('ZREM', P .. 'inflight', id) == 1 then
    if r[4] then
      finish_cancelled(id, jk, r[4], retention)
    else
      redis.call('HINCRBY', jk, 'attempts', -1)
      redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
      redis.call('HDEL', jk, 'worker')
      redis.call('RPUSH', P .. 't:' .. (r[3] or 'standard'), id)
      wake(r[3])
      released = released + 1
    end
  end
end
return released
