-- runCreate.lua: run as prelude.lua, runs.lua, then this file; KEYS[1] = the run prefix `jf:{run:<r>}:`.
-- RUN CREATE: ARGV = run id, pipeline name, graph JSON, queues JSON (step → queue), for_each JSON (step → true),
-- definition (the pipeline file's text), file name, params JSON, run.date, run.time, retention ms (after the end).
-- Refuses a run id that exists: returns {'duplicate', its state}. Else writes the run (`state` running, every step
-- waiting), applies the readiness rule (the roots become running with their job ids) and returns
-- {'created', claims, skipped, stopped_by, outcome} (runs.lua, apply_rule).
need(RUN, 'hash')
need(STEPS, 'hash')
need(RESULTS, 'hash')
need(CLAIMS, 'hash')
if redis.call('EXISTS', RUN) == 1 then
  return {'duplicate', redis.call('HGET', RUN, 'state') or ''}
end
redis.call('HSET', RUN, 'pipeline', ARGV[2], 'graph', ARGV[3], 'queues', ARGV[4], 'for_each', ARGV[5],
  'definition', ARGV[6], 'file', ARGV[7], 'params', ARGV[8], 'date', ARGV[9], 'time', ARGV[10],
  'retention', ARGV[11], 'state', 'running', 'created', NOW, 'cancel', '0')
local graph = cjson.decode(ARGV[3])
local queues = cjson.decode(ARGV[4])
local fields = {}
for _, s in ipairs(graph) do
  fields[#fields + 1] = s.id
  fields[#fields + 1] = 'waiting'
  fields[#fields + 1] = s.id .. ':queue'
  fields[#fields + 1] = queues[s.id] or 'default'
end
redis.call('HSET', STEPS, unpack(fields))
local reply = apply_rule('')
return {'created', reply[1], reply[2], reply[3], reply[4]}
