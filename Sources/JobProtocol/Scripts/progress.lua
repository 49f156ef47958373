-- progress.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- PROGRESS: ARGV = queue, id, fencing token, progress (0…1). Returns 1, or 0 when the lease is lost.
local id, token, value = ARGV[2], ARGV[3], ARGV[4]
need(P .. 'inflight', 'zset')
local r = job_fields(jobkey(id), 'state', 'lease') or {}
if r[1] ~= 'running' or r[2] ~= token or not redis.call('ZSCORE', P .. 'inflight', id) then return 0 end
redis.call('HSET', jobkey(id), 'progress', value)
publish(id, 'progress ' .. value)
return 1
