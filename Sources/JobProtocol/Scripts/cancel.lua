-- cancel.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- CANCEL: ARGV = queue, id, retention ms, keep as dead letter (1/0).
-- Returns `cancelled`, `cancelling` (running: the worker is told at its next heartbeat), `unknown`, or `final:<state>`.
-- A pending job (no job key yet, its envelope in `pending`) gets its job record here, in its final state.
local id, retention, keep = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local jk = jobkey(id)
local PK = P .. 'pending'
need(jk, 'hash')
local r = redis.call('HMGET', jk, 'state', 'tier')
local state = r[1]
local pending = nil
if not state then
  need(PK, 'hash')
  pending = redis.call('HGET', PK, id)
  if not pending then return 'unknown' end
end
if pending then
  local qt, tier, env, bad = parse_pending(pending)
  if keep or bad then need_dead_letters() else need(P .. 'stats', 'hash') end
  if not bad then need(P .. 't:' .. tier, 'list') end
  -- The record the job would have had, in its final state from here on.
  redis.call('HDEL', PK, id)
  if bad then
    -- Its id may remain in a list, where fetch drops it (the record is dead).
    redis.call('HSET', jk, 'env', env or pending, 'state', 'queued', 'tier', tier or 'standard')
    malformed_record(id, jk, bad, retention)
    return 'final:dead'
  end
  redis.call('LREM', P .. 't:' .. tier, -1, id)
  redis.call('HSET', jk, 'env', env, 'state', 'queued', 'tier', tier, 'qt', qt)
  state = 'queued'
else
  local tier, bad = tier_field(r[2])
  bad = bad_state(state) or bad
  if keep or bad then need_dead_letters() else need(P .. 'stats', 'hash') end
  if bad then
    -- An invalid record: dead-lettered `malformed` (it could not have run); its id may remain in a list, where fetch drops it.
    if state == 'scheduled' or state == 'retrying' then need(P .. 'scheduled', 'zset'); redis.call('ZREM', P .. 'scheduled', id) end
    malformed_record(id, jk, bad, retention)
    return 'final:dead'
  end
  if state == 'running' then
    redis.call('HSET', jk, 'cancel', keep and '2' or '1')
    publish(id, 'cancelling')
    return 'cancelling'
  end
  if state == 'queued' then
    need(P .. 't:' .. tier, 'list')
    redis.call('LREM', P .. 't:' .. tier, -1, id)
  elseif state == 'scheduled' or state == 'retrying' then
    need(P .. 'scheduled', 'zset')
    redis.call('ZREM', P .. 'scheduled', id)
  else
    return 'final:' .. state
  end
end
if keep then
  dead_letter(id, jk, 'cancelled', 'cancelled by request', nil, retention)
else
  redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW, 'error', 'cancelled by request')
  if retention > 0 then redis.call('PEXPIRE', jk, retention) end
  redis.call('HINCRBY', P .. 'stats', 'cancelled', 1)
  job_ended(id, jk, 'cancelled', nil, 'cancelled by request', 'cancelled')
  publish(id, 'cancelled')
end
return 'cancelled'
