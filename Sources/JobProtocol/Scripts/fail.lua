-- fail.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- FAIL: ARGV = queue, retention ms, then per job: id, fencing token, outcome, error, retry delay ms.
-- Outcome `retry` schedules another attempt; `cancelled` ends the job as cancelled; any dead-letter reason
-- (`exhausted`, `non_retryable`, `malformed`, `timeout`, `cancelled_dead`) moves it to the dead letters.
-- Returns 1 per job recorded (2 when it ended and left a notice for its pipeline run), 0 per job whose lease was lost.
local retention = tonumber(ARGV[2])
local DEAD_REASONS = {exhausted = true, non_retryable = true, malformed = true, timeout = true, poison = true, cancelled_dead = true}
local out = {}
need(P .. 'inflight', 'zset')
need(P .. 'scheduled', 'zset')
need_dead_letters()
for b = 3, #ARGV, 5 do
  local id, token, outcome, err, delay = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  local jk = jobkey(id)
  local r = job_fields(jk, 'state', 'lease', 'attempts', 'worker', 'tier', 'cancel') or {}
  local tier, bad = tier_field(r[5])
  -- A retry at once goes to its tier's list; a list of the wrong type would fail the script halfway through the
  -- batch (the jobs before it recorded, the rest not), so the retry goes through `scheduled` instead, where `promote`
  -- leaves it (reported) until the key is repaired.
  local list_ok = true
  if not bad and r[1] == 'running' and r[2] == token and outcome == 'retry' and delay <= 0 and not r[6] then
    list_ok = usable(P .. 't:' .. tier, 'list')
  end
  if r[1] == 'running' and r[2] == token and bad and redis.call('ZREM', P .. 'inflight', id) == 1 then
    malformed_record(id, jk, bad, retention)
    out[#out + 1] = 1
  elseif r[1] == 'running' and r[2] == token and redis.call('ZREM', P .. 'inflight', id) == 1 then
    local noticed = NOTICES
    if not DEAD_REASONS[outcome] and outcome ~= 'retry' and outcome ~= 'cancelled' then outcome = 'exhausted' end
    add_history(jk, cjson.encode({attempt = int_field('attempts', r[3], MAX_COUNT), at = NOW, error = err, outcome = outcome, worker = r[4]}))
    if outcome == 'retry' and r[6] then
      -- Cancelled while its last attempt was failing: no further attempt.
      finish_cancelled(id, jk, r[6], retention)
    elseif outcome == 'retry' then
      redis.call('HSET', jk, 'state', 'retrying', 'error', err)
      redis.call('HDEL', jk, 'worker')
      if delay > 0 or not list_ok then
        delay = math.max(delay, 1000)
        redis.call('HSET', jk, 'run_at', NOW + delay)
        redis.call('ZADD', P .. 'scheduled', NOW + delay, id)
      else
        redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
        redis.call('LPUSH', P .. 't:' .. tier, id)
        wake(tier)
      end
      redis.call('HINCRBY', P .. 'stats', 'retried', 1)
      batch_back_in_line(jk)
      count_outcome('retried', tier, redis.call('HGET', jk, 'kind'))
      publish(id, 'retrying')
    elseif outcome == 'cancelled' then
      redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW, 'error', err)
      redis.call('HDEL', jk, 'worker', 'cancel')
      if retention > 0 then redis.call('PEXPIRE', jk, retention) end
      redis.call('HINCRBY', P .. 'stats', 'cancelled', 1)
      job_ended(id, jk, 'cancelled', nil, err, 'cancelled')
      publish(id, 'cancelled')
    else
      if outcome == 'cancelled_dead' then outcome = 'cancelled' end
      dead_letter(id, jk, outcome, err, nil, retention)
    end
    out[#out + 1] = NOTICES > noticed and 2 or 1
  else
    out[#out + 1] = 0
  end
end
flush_outcomes()
return out
