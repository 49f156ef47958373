-- enqueue.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- ENQUEUE: ARGV = queue, count, default idempotency window ms, then per job: id, tier, envelope, delay ms (0 = now),
-- idempotency ('' = none, else "<window ms> <key>": the key is kept that long, `SET … PX <window> NX`; a window of 0
-- takes the default),
-- then, optionally, per job: its links ('' = none), a JSON object of `run`, `step`, `item`, `batch` written as fields
-- of its job hash (a job with links gets its job hash at once, state `queued`, even when it runs now, so that the
-- scripts that end it read them).
-- Returns the number of jobs created when every job of the call was created; else one answer per job: the id for a
-- job created, and for a duplicate (its id already in use, or its idempotency key seen within the window) a
-- one-element array holding the original id. A reply of 1,000 ids costs Redis and the client more than the rest of
-- the call's bookkeeping, hence the count.
-- A job ready now gets no key of its own: its envelope goes into the hash `pending` (id → "<qt> <tier> <envelope>")
-- and its id onto its tier's list; `fetch` creates the job record when it leases it. A delayed job gets its job hash
-- (state `scheduled`) and its `scheduled` entry at once, as before. An id already used (pending, or with a job key
-- of any type) is answered and nothing is written for it: a repeated enqueue is a no-op.
local n = tonumber(ARGV[2])
local idem_ttl = tonumber(ARGV[3])
local PK = P .. 'pending'
local LINKS_AT = 4 + n * 5  -- the optional per-job links, after the per-job arguments
local any_links = ARGV[LINKS_AT] ~= nil
-- Key types, checked before the first write; the ids and job keys gathered for the duplicate check on the way.
need(P .. 'stats', 'hash')
need(PK, 'hash')
local tiers_checked, delayed_checked, any_idem = {}, false, false
local ids, jks = {}, {}
for i = 0, n - 1 do
  local b = 4 + i * 5
  local id = ARGV[b]
  ids[i + 1] = id
  jks[i + 1] = P .. 'job:' .. id
  if ARGV[b + 3] ~= '0' and tonumber(ARGV[b + 3]) > 0 then
    if not delayed_checked then need(P .. 'scheduled', 'zset'); delayed_checked = true end
  else
    local tier = ARGV[b + 1]
    if not tiers_checked[tier] then need(P .. 't:' .. tier, 'list'); tiers_checked[tier] = true end
  end
  local ikey = ARGV[b + 4]
  if ikey ~= '' then
    local window, key = string.match(ikey, '^(%d+) (.+)$')
    if not key then return redis.error_reply('JOBFARM_ARGUMENT idempotency of ' .. id .. ' is not "<window ms> <key>": nothing was enqueued') end
    need(P .. 'idem:' .. key, 'string'); any_idem = true
  end
end
-- Ids already in use, 1,000 at a time: one HMGET of `pending`, one EXISTS of the job keys (a key of another type
-- counts as taken); only when that finds some does each job key get a look of its own.
local taken = {}
for s = 1, n, 1000 do
  local e = math.min(s + 999, n)
  local found = redis.call('HMGET', PK, unpack(ids, s, e))
  local any_key = redis.call('EXISTS', unpack(jks, s, e)) > 0
  for k = s, e do
    if found[k - s + 1] or (any_key and redis.call('EXISTS', jks[k]) == 1) then taken[ids[k]] = true end
  end
end
-- Then per job: an idempotency key seen before answers the id stored under it; an id in use answers itself; the
-- rest are written.
local out, ready, fields, prefix, added = {}, {}, {}, {}, 0
-- Created jobs by tier and kind (the envelope's `kind`), for the `enqueued <tier> <kind>` counters of `outcomes`.
local created = {}
for i = 0, n - 1 do
  local b = 4 + i * 5
  local id = ids[i + 1]
  local existing = nil
  if any_idem and ARGV[b + 4] ~= '' then
    local window, key = string.match(ARGV[b + 4], '^(%d+) (.+)$')
    window = tonumber(window)
    if window <= 0 then window = idem_ttl end
    local ik = P .. 'idem:' .. key
    if not redis.call('SET', ik, id, 'PX', window, 'NX') then existing = redis.call('GET', ik) end
  end
  if existing or taken[id] then
    out[i + 1] = {existing or id}  -- a duplicate: the original id
  else
    out[i + 1] = id
  end
  if not existing and not taken[id] then
    taken[id] = true  -- the same id twice in one call: the second is a repeat
    local tier, delay = ARGV[b + 1], tonumber(ARGV[b + 3])
    local links = any_links and ARGV[LINKS_AT + i] or ''
    if links ~= '' then
      local hash, batch = {'env', ARGV[b + 2], 'tier', tier, 'qt', NOW}, nil
      for k, v in pairs(cjson.decode(links)) do
        hash[#hash + 1] = k; hash[#hash + 1] = tostring(v)
        if k == 'batch' then batch = tostring(v) end
      end
      if delay > 0 then
        redis.call('HSET', jks[i + 1], 'state', 'scheduled', 'run_at', NOW + delay, unpack(hash))
        redis.call('ZADD', P .. 'scheduled', NOW + delay, id)
      else
        redis.call('HSET', jks[i + 1], 'state', 'queued', unpack(hash))
        local list = ready[tier]
        if not list then list = {}; ready[tier] = list end
        list[#list + 1] = id
      end
      if batch then batch_count(batch, jks[i + 1], 'pending') end
    elseif delay > 0 then
      redis.call('HSET', jks[i + 1], 'env', ARGV[b + 2], 'state', 'scheduled', 'tier', tier, 'qt', NOW, 'run_at', NOW + delay)
      redis.call('ZADD', P .. 'scheduled', NOW + delay, id)
    else
      local pre = prefix[tier]
      if not pre then pre = NOW .. ' ' .. tier .. ' '; prefix[tier] = pre end
      fields[#fields + 1] = id
      fields[#fields + 1] = pre .. ARGV[b + 2]
      local list = ready[tier]
      if not list then list = {}; ready[tier] = list end
      list[#list + 1] = id
    end
    added = added + 1
    local kinds = created[tier]
    if not kinds then kinds = {}; created[tier] = kinds end
    local kind = string.match(ARGV[b + 2], '"kind"%s*:%s*"([^"\\]+)"') or 'unknown'
    kinds[kind] = (kinds[kind] or 0) + 1
  end
end
for s = 1, #fields, 1000 do
  redis.call('HSET', PK, unpack(fields, s, math.min(s + 999, #fields)))
end
for tier, list in pairs(ready) do
  for s = 1, #list, 1000 do
    redis.call('LPUSH', P .. 't:' .. tier, unpack(list, s, math.min(s + 999, #list)))
  end
  wake(tier)
end
if added > 0 then redis.call('HINCRBY', P .. 'stats', 'enqueued', added) end
for tier, kinds in pairs(created) do
  for kind, c in pairs(kinds) do redis.pcall('HINCRBY', P .. 'outcomes', 'enqueued ' .. tier .. ' ' .. kind, c) end
end

if added == n then return added end
return out
