-- fetch.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- FETCH: ARGV = queue, count, lease ms, worker id, aging ms (0 = strict), tier count, tiers in preference order.
-- Leases up to `count` jobs; returns 5 items per job: id, fencing token, attempt number, tier, envelope.
-- Garbage entries are dead-lettered as `malformed` on the way; stale entries (cancelled jobs) are dropped.
local want = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local worker = ARGV[4]
local aging = tonumber(ARGV[5])
local nt = tonumber(ARGV[6])
local order = {}
if aging > 0 and nt > 1 then
  local rest = {ARGV[7]}
  for i = 2, nt do
    local tier = ARGV[6 + i]
    local oldest = redis.call('LINDEX', P .. 't:' .. tier, -1)
    local qt = oldest and redis.call('HGET', jobkey(oldest), 'qt')
    if qt and NOW - tonumber(qt) >= aging then order[#order + 1] = tier else rest[#rest + 1] = tier end
  end
  for _, tier in ipairs(rest) do order[#order + 1] = tier end
else
  for i = 1, nt do order[i] = ARGV[6 + i] end
end
local out, got, leased = {}, 0, {}
for _, tier in ipairs(order) do
  if got >= want then break end
  local lk = P .. 't:' .. tier
  while got < want do
    local items = redis.call('RPOP', lk, want - got)
    if not items then break end
    for _, item in ipairs(items) do
      local id, jk = item, jobkey(item)
      local r = redis.call('HMGET', jk, 'state', 'env', 'attempts', 'lease', 'tier')
      local state, env = r[1], r[2]
      if not state and string.sub(item, 1, 1) == '{' then
        -- An envelope pushed as it is by a foreign client: give it a job record, then lease it.
        local ok, obj = pcall(cjson.decode, item)
        if ok and type(obj) == 'table' and type(obj.id) == 'string' and type(obj.kind) == 'string'
           and #obj.id >= 1 and #obj.id <= 128 and not string.find(obj.id, '[^%w%-_%.:]') then
          id, jk = obj.id, jobkey(obj.id)
          if redis.call('EXISTS', jk) == 1 then
            raw_dead_letter(item, 'envelope id ' .. obj.id .. ' is already used by another job')
            state = 'skip'
          elseif type(obj.run_at) == 'number' and obj.run_at > NOW then
            local run_at = math.floor(obj.run_at)
            redis.call('HSET', jk, 'env', item, 'state', 'scheduled', 'tier', tier, 'qt', NOW, 'run_at', run_at)
            redis.call('ZADD', P .. 'scheduled', run_at, obj.id)
            redis.call('HINCRBY', P .. 'stats', 'enqueued', 1)
            state = 'skip'
          else
            redis.call('HSET', jk, 'env', item, 'state', 'queued', 'tier', tier, 'qt', NOW)
            redis.call('HINCRBY', P .. 'stats', 'enqueued', 1)
            state, env = 'queued', item
          end
        end
      end
      if state == 'queued' then
        local attempts = (tonumber(r[3]) or 0) + 1
        local token = (tonumber(r[4]) or 0) + 1
        if r[5] == tier then
          redis.call('HSET', jk, 'state', 'running', 'started', NOW, 'worker', worker, 'attempts', attempts, 'lease', token)
        else
          redis.call('HSET', jk, 'state', 'running', 'started', NOW, 'worker', worker, 'attempts', attempts, 'lease', token,
                     'tier', tier)
        end
        leased[#leased + 1] = NOW + lease
        leased[#leased + 1] = id
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = attempts
        out[#out + 1] = tier
        out[#out + 1] = env or ''
        got = got + 1
      elseif not state then
        raw_dead_letter(item, 'queue entry is neither the id of a job record nor a job envelope')
      end
    end
    -- Into `inflight` after each batch popped, so that nothing leased can miss the reaper.
    for s = 1, #leased, 1000 do
      redis.call('ZADD', P .. 'inflight', unpack(leased, s, math.min(s + 999, #leased)))
    end
    leased = {}
  end
end
if got >= want then
  for _, tier in ipairs(order) do
    if redis.call('LLEN', P .. 't:' .. tier) > 0 then wake(tier) end
  end
end
return out
