-- runAdvance.lua: run as prelude.lua, runs.lua, then this file; KEYS[1] = the run prefix `jf:{run:<r>}:`.
-- RUN ADVANCE: ARGV = run id, ended job id, step, item ('' = not a for_each item), end state (passed, not_passed,
-- failed, cancelled), result JSON ('' = none), reason ('' = none).
-- Records the end of a step's job (or of one item of a for_each step: when the last item ended, the step takes
-- their combined state and the list of their results), copies its result into `results`, applies the readiness rule
-- and claims the steps that became ready. A job that is not the step's current one, or a step (item) already ended,
-- changes nothing: the reply is the claims stored for that job, so a repeated notice gets the same answer.
-- An empty job id only applies the rule (the sweeper, the tests). A run that no longer exists answers {'gone'}.
-- Returns {claims, skipped, stopped_by, outcome} (runs.lua, apply_rule).
local job, step, item, state, result, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if redis.call('EXISTS', RUN) == 0 then return {'gone'} end
need(STEPS, 'hash')
need(RESULTS, 'hash')
need(CLAIMS, 'hash')
if job == '' then return apply_rule(nil) end
local base = RID .. '.' .. step
local expected = item ~= '' and (base .. '.' .. item) or base
local cur = redis.call('HMGET', STEPS, step, step .. ':job')
if job ~= expected or cur[2] ~= base or cur[1] ~= 'running' then return stored_claims(job) end
if item ~= '' then
  local key = step .. ':' .. item
  if redis.call('HEXISTS', STEPS, key) == 1 then return stored_claims(job) end
  redis.call('HSET', STEPS, key, state)
  if reason ~= '' then redis.call('HSET', STEPS, key .. ':reason', reason) end
  if result ~= '' then redis.call('HSET', RESULTS, key, result) end
  local ended = redis.call('HINCRBY', STEPS, step .. ':ended_items', 1)
  local count = tonumber(redis.call('HGET', STEPS, step .. ':items') or '-1')
  if count < 0 or ended < count then
    redis.call('HSET', CLAIMS, job, '[]')
    return {{}, {}, '', ''}
  end
  -- The last item: the step's state is the combined one (failed, cancelled, not_passed, skipped before passed).
  local keys, rkeys = {}, {}
  for i = 0, count - 1 do
    keys[#keys + 1] = step .. ':' .. i
    rkeys[#rkeys + 1] = step .. ':' .. i
  end
  local states, results = hmget_many(STEPS, keys), hmget_many(RESULTS, rkeys)
  local combined, first = 'passed', nil
  for _, candidate in ipairs({'failed', 'cancelled', 'not_passed', 'skipped'}) do
    for i = 1, count do
      if states[i] == candidate then combined = candidate; first = first or (i - 1) end
    end
    if combined ~= 'passed' then break end
  end
  local list = {}
  for i = 1, count do list[i] = results[i] or 'null' end
  redis.call('HSET', RESULTS, step, '[' .. table.concat(list, ',') .. ']')
  redis.call('HSET', STEPS, step, combined, step .. ':ended', NOW)
  if first then
    local why = redis.call('HGET', STEPS, step .. ':' .. first .. ':reason')
    redis.call('HSET', STEPS, step .. ':reason', 'item ' .. first .. ' ' .. combined .. (why and (': ' .. why) or ''))
  end
else
  redis.call('HSET', STEPS, step, state, step .. ':ended', NOW)
  if reason ~= '' then redis.call('HSET', STEPS, step .. ':reason', reason) end
  if result ~= '' then redis.call('HSET', RESULTS, step, result) end
end
return apply_rule(job)
