-- complete.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- COMPLETE: ARGV = queue, retention ms, then per job: id, fencing token, result JSON.
-- Returns 1 per job recorded as succeeded (2 when it left a notice for its pipeline run or queued a check of its batch), 0 per job whose lease was
-- lost (the result is refused).
-- The run time of each job recorded (now - `started`, in ms) is added to the queue's `run_ms` counter and the job to
-- `run_count`: an autoscaler's observed service time is the change of one over the change of the other.
local retention = tonumber(ARGV[2])
local out, done = {}, 0
local run_ms, run_count = 0, 0
need(P .. 'inflight', 'zset')
need(P .. 'stats', 'hash')
for b = 3, #ARGV, 3 do
  local id, token, result = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local jk = jobkey(id)
  local r = job_fields(jk, 'state', 'lease', 'error', 'cancel', 'started', 'tier', 'kind', 'run', 'batch') or {}
  if r[1] == 'running' and r[2] == token and redis.call('ZREM', P .. 'inflight', id) == 1 then
    redis.call('HSET', jk, 'state', 'succeeded', 'finished', NOW, 'result', result)
    if r[3] or r[4] then redis.call('HDEL', jk, 'error', 'cancel') end
    if retention > 0 then redis.call('PEXPIRE', jk, retention) end
    publish(id, 'succeeded')
    count_outcome('succeeded', r[6], r[7])
    local started = int_field('started', r[5], MAX_MS)
    if started and started > 0 and started <= NOW then
      run_ms, run_count = run_ms + (NOW - started), run_count + 1
    end
    done = done + 1
    -- Only a job of a pipeline run (field `run`) or of a batch leaves a notice or moves a counter; job_ended reads
    -- its step, item and batch then.
    out[#out + 1] = (r[8] or r[9]) and job_ended(id, jk, 'succeeded', result) and 2 or 1
  elseif r[1] == 'succeeded' and r[2] == token then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if done > 0 then redis.call('HINCRBY', P .. 'stats', 'succeeded', done) end
flush_outcomes()
if run_count > 0 then
  redis.call('HINCRBY', P .. 'stats', 'run_ms', run_ms)
  redis.call('HINCRBY', P .. 'stats', 'run_count', run_count)
end
return out
