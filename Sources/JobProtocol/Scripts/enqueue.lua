-- enqueue.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- ENQUEUE: ARGV = queue, count, idempotency TTL ms, then per job: id, tier, envelope, delay ms (0 = now), idempotency key ('' = none).
-- Returns one id per job: the new id, or the id already stored under the same job id or idempotency key.
local n = tonumber(ARGV[2])
local idem_ttl = tonumber(ARGV[3])
local out, ready, added = {}, {}, 0
local checked = {}
local function check(key, want)
  if not checked[key] then need(key, want); checked[key] = true end
end
check(P .. 'stats', 'hash')
for i = 0, n - 1 do
  local b = 4 + i * 5
  if tonumber(ARGV[b + 3]) > 0 then check(P .. 'scheduled', 'zset') else check(P .. 't:' .. ARGV[b + 1], 'list') end
  if ARGV[b + 4] ~= '' then check(P .. 'idem:' .. ARGV[b + 4], 'string') end
end
for i = 0, n - 1 do
  local b = 4 + i * 5
  local id, tier, env, delay, idem = ARGV[b], ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), ARGV[b + 4]
  local jk = jobkey(id)
  local existing = nil
  if idem ~= '' then
    local ik = P .. 'idem:' .. idem
    existing = redis.call('GET', ik)
    if not existing then redis.call('SET', ik, id, 'PX', idem_ttl) end
  end
  if existing then
    out[#out + 1] = existing
  elseif redis.call('EXISTS', jk) == 1 then
    -- (a key of another type under the id counts as taken: nothing is written to it)
    out[#out + 1] = id
  else
    if delay > 0 then
      redis.call('HSET', jk, 'env', env, 'state', 'scheduled', 'tier', tier, 'qt', NOW, 'run_at', NOW + delay)
      redis.call('ZADD', P .. 'scheduled', NOW + delay, id)
    else
      redis.call('HSET', jk, 'env', env, 'state', 'queued', 'tier', tier, 'qt', NOW)
      local list = ready[tier]
      if not list then list = {}; ready[tier] = list end
      list[#list + 1] = id
    end
    added = added + 1
    out[#out + 1] = id
  end
end
for tier, ids in pairs(ready) do
  for s = 1, #ids, 1000 do
    redis.call('LPUSH', P .. 't:' .. tier, unpack(ids, s, math.min(s + 999, #ids)))
  end
  wake(tier)
end
if added > 0 then redis.call('HINCRBY', P .. 'stats', 'enqueued', added) end

return out
