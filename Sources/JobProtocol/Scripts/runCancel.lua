-- runCancel.lua: run as prelude.lua, runs.lua, then this file; KEYS[1] = the run prefix `jf:{run:<r>}:`.
-- RUN CANCEL: ARGV = run id. Sets `cancel` and applies the rule: every waiting step is skipped, nothing more is
-- claimed; a run with nothing running ends `cancelled` at once. Returns {'cancelling', running steps} with
-- {step, job id, queue, items (-1 = not a for_each step, or its items not known yet)} per running step (the caller
-- cancels their jobs; their ends reach the run as notices), or {'unknown'}, or {'final', state}.
if redis.call('EXISTS', RUN) == 0 then return {'unknown'} end
need(STEPS, 'hash')
need(CLAIMS, 'hash')
local r = redis.call('HMGET', RUN, 'state', 'graph', 'queues')
if r[1] ~= 'running' then return {'final', r[1] or ''} end
redis.call('HSET', RUN, 'cancel', '1')
apply_rule('cancel')
local graph, queues = cjson.decode(r[2]), cjson.decode(r[3])
local running = {}
for _, s in ipairs(graph) do
  local v = redis.call('HMGET', STEPS, s.id, s.id .. ':job', s.id .. ':items')
  if v[1] == 'running' then
    running[#running + 1] = {s.id, v[2] or '', queues[s.id] or 'default', tonumber(v[3] or '-1')}
  end
end
return {'cancelling', running}
