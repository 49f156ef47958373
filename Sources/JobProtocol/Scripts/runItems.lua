-- runItems.lua: run as prelude.lua, runs.lua, then this file; KEYS[1] = the run prefix `jf:{run:<r>}:`.
-- RUN ITEMS: ARGV = run id, step, count. Records how many items a running for_each step has (only the first call
-- counts: a repeat changes nothing). A count of 0 ends the step `passed` with the result [] and applies the rule.
-- Returns {claims, skipped, stopped_by, outcome} (runs.lua, apply_rule), or {'gone'} for a run that no longer exists.
local step, count = ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', RUN) == 0 then return {'gone'} end
need(STEPS, 'hash')
need(RESULTS, 'hash')
need(CLAIMS, 'hash')
local key = 'items:' .. step
local cur = redis.call('HMGET', STEPS, step, step .. ':items')
if cur[1] ~= 'running' or cur[2] then return stored_claims(key) end
redis.call('HSET', STEPS, step .. ':items', count, step .. ':ended_items', 0)
if count > 0 then
  redis.call('HSET', CLAIMS, key, '[]')
  return {{}, {}, '', ''}
end
redis.call('HSET', STEPS, step, 'passed', step .. ':ended', NOW)
redis.call('HSET', RESULTS, step, '[]')
return apply_rule(key)
