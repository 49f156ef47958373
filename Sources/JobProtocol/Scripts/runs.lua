-- runs.lua: the helpers of the run scripts (runCreate, runAdvance, runItems, runCancel); each is sent as prelude.lua,
-- this file, then its own file. KEYS[1] = the run prefix `jf:{run:<r>}:`, ARGV[1] = the run id (docs/PIPELINES.md,
-- "Engine design"). Every key of a run shares the hash tag {run:<r>}, so each script touches one slot.
local RUN, STEPS, RESULTS, CLAIMS = P .. 'run', P .. 'steps', P .. 'results', P .. 'claims'
local RID = Q

local function is_final(s) return s ~= 'waiting' and s ~= 'running' end
local function not_passed(s) return is_final(s) and s ~= 'passed' end

-- The readiness rule, the mirror of `PipelineGraph.advance` (Sources/Pipelines/Readiness.swift; both are checked
-- against Tests/Fixtures/readiness-cases.json). graph: the steps in topological order, each {id, parents,
-- on_failure, trigger}; state: id → state, changed in place. Returns {enqueue, skip, stopped_by, outcome, doomed}
-- (doomed: the steps skipped because of their parents rather than because the run stopped).
local function advance(graph, state, cancelled)
  local function cur(id) return state[id] or 'waiting' end
  local stopped_by = nil
  for _, s in ipairs(graph) do
    if s.on_failure == 'stop' and not_passed(cur(s.id)) then stopped_by = s.id; break end
  end
  local stopped = cancelled or stopped_by ~= nil
  local skipped, doomed_by_parents, enqueue = {}, {}, {}
  for _, s in ipairs(graph) do
    if cur(s.id) == 'waiting' then
      local doomed = false
      if s.trigger == 'all_passed' then
        for _, p in ipairs(s.parents) do if not_passed(cur(p)) then doomed = true end end
      elseif s.trigger == 'any_passed' then
        local all_final, any = true, false
        for _, p in ipairs(s.parents) do
          local ps = cur(p)
          if not is_final(ps) then all_final = false end
          if ps == 'passed' then any = true end
        end
        doomed = #s.parents > 0 and all_final and not any
      end
      if stopped or doomed then
        state[s.id] = 'skipped'
        skipped[s.id] = true
        if doomed then doomed_by_parents[s.id] = true end
        if s.on_failure == 'stop' then
          if stopped_by == nil and not cancelled then stopped_by = s.id end
          stopped = true
        end
      end
    end
  end
  for _, s in ipairs(graph) do
    if cur(s.id) == 'waiting' then
      if stopped then
        state[s.id] = 'skipped'
        skipped[s.id] = true
      else
        local all_passed, all_final, any = true, true, false
        for _, p in ipairs(s.parents) do
          local ps = cur(p)
          if ps ~= 'passed' then all_passed = false end
          if not is_final(ps) then all_final = false end
          if ps == 'passed' then any = true end
        end
        local ready
        if s.trigger == 'any_passed' then ready = #s.parents == 0 or (all_final and any)
        elseif s.trigger == 'all_ended' then ready = all_final
        else ready = all_passed end
        if ready then
          state[s.id] = 'running'
          enqueue[#enqueue + 1] = s.id
        end
      end
    end
  end
  local skip, all_final = {}, true
  for _, s in ipairs(graph) do
    if skipped[s.id] then skip[#skip + 1] = s.id end
    if not is_final(cur(s.id)) then all_final = false end
  end
  local outcome = nil
  if all_final then
    if cancelled then outcome = 'cancelled'
    elseif stopped_by then outcome = 'failed:' .. stopped_by
    else outcome = 'succeeded' end
  end
  return {enqueue = enqueue, skip = skip, stopped_by = stopped_by, outcome = outcome, doomed = doomed_by_parents}
end

-- The states of the run's steps (a step without one is waiting).
local function load_states(graph)
  local ids = {}
  for i, s in ipairs(graph) do ids[i] = s.id end
  local values = hmget_many(STEPS, ids)
  local state = {}
  for i, id in ipairs(ids) do state[id] = values[i] or 'waiting' end
  return state
end

-- Why a step was skipped: its parents, the cancel, or the step that stopped the run (with that step's reason).
local function skip_reason(s, state, res, cancelled)
  if cancelled then return 'run cancelled' end
  if res.doomed[s.id] then
    if s.trigger == 'any_passed' then
      local parts = {}
      for _, p in ipairs(s.parents) do parts[#parts + 1] = p .. ' ' .. state[p] end
      return 'no parent passed (' .. table.concat(parts, ', ') .. ')'
    end
    -- A parent that ended without passing names the cause; a parent skipped in turn names it only when no stopping
    -- step says more.
    for _, p in ipairs(s.parents) do
      if not_passed(state[p]) and state[p] ~= 'skipped' then return 'parent ' .. p .. ' ' .. state[p] end
    end
    if not res.stopped_by or res.stopped_by == s.id then
      for _, p in ipairs(s.parents) do
        if state[p] == 'skipped' then return 'parent ' .. p .. ' skipped' end
      end
    end
  end
  local by = res.stopped_by
  if not by or by == s.id then return 'run stopped' end
  local why = redis.call('HGET', STEPS, by .. ':reason')
  return 'run stopped by ' .. by .. ' (' .. state[by] .. (why and (': ' .. why) or '') .. ')'
end

-- Applies the rule to the run as it is and writes what it decided: skipped steps (state, reason, ended), ready steps
-- `running` with their deterministic job ids `<r>.<step>`, the claims stored under `claim_key` (the ended job's id),
-- and, when nothing is waiting or running any more, the run's end (state, ended, stopped_by, every key expiring
-- `retention` later). Returns the reply of the run scripts: {claims, skipped, stopped_by, outcome}, claims being
-- {step, job id, queue, for_each (1/0)} per step.
local function apply_rule(claim_key)
  local r = redis.call('HMGET', RUN, 'graph', 'cancel', 'state', 'queues', 'for_each', 'retention')
  local graph = cjson.decode(r[1])
  local cancelled = r[2] == '1'
  local queues, fanout = cjson.decode(r[4]), cjson.decode(r[5])
  local state = load_states(graph)
  local res = advance(graph, state, cancelled)
  local claims = {}
  if r[3] == 'running' then
    local byid = {}
    for _, s in ipairs(graph) do byid[s.id] = s end
    for _, id in ipairs(res.skip) do
      redis.call('HSET', STEPS, id, 'skipped', id .. ':ended', NOW, id .. ':reason', skip_reason(byid[id], state, res, cancelled))
    end
    for _, id in ipairs(res.enqueue) do
      local job = RID .. '.' .. id
      redis.call('HSET', STEPS, id, 'running', id .. ':job', job, id .. ':started', NOW)
      claims[#claims + 1] = {id, job, queues[id] or 'default', fanout[id] and 1 or 0}
    end
    if claim_key then redis.call('HSET', CLAIMS, claim_key, cjson.encode(claims)) end
    if res.outcome then
      local final = string.match(res.outcome, '^(%a+)')
      redis.call('HSET', RUN, 'state', final, 'ended', NOW, 'stopped_by', res.stopped_by or '')
      local keep = tonumber(r[6]) or 0
      if keep > 0 then
        for _, k in ipairs({RUN, STEPS, RESULTS, CLAIMS}) do redis.call('PEXPIRE', k, keep) end
      end
    end
  end
  return {claims, res.skip, res.stopped_by or '', res.outcome or ''}
end

-- The claims stored under a key (a repeated notice gets the same answer), as the reply of the run scripts.
local function stored_claims(key)
  local text = redis.call('HGET', CLAIMS, key)
  local claims = text and cjson.decode(text) or {}
  local r = redis.call('HMGET', RUN, 'state', 'stopped_by')
  local outcome = ''
  if r[1] and r[1] ~= 'running' then outcome = r[1] .. ((r[1] == 'failed' and r[2]) and (':' .. r[2]) or '') end
  return {claims, {}, r[2] or '', outcome}
end
