-- heartbeat.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- HEARTBEAT: ARGV = queue, lease ms, then per job: id, fencing token.
-- Extends each lease still held; returns per job 1 (held), 0 (lost), 2 (cancel requested), 3 (cancel into the dead letters).
local lease = tonumber(ARGV[2])
local out = {}
need(P .. 'inflight', 'zset')
for b = 3, #ARGV, 2 do
  local id, token = ARGV[b], ARGV[b + 1]
  local r = redis.call('HMGET', jobkey(id), 'state', 'lease', 'cancel')
  if r[1] == 'running' and r[2] == token and redis.call('ZSCORE', P .. 'inflight', id) then
    redis.call('ZADD', P .. 'inflight', 'XX', NOW + lease, id)
    if r[3] == '1' then out[#out + 1] = 2 elseif r[3] == '2' then out[#out + 1] = 3 else out[#out + 1] = 1 end
  else
    out[#out + 1] = 0
  end
end
return out
