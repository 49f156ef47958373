-- fetch.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- FETCH: ARGV = queue, count, lease ms, worker id, aging ms (0 = strict), tier count, tiers in preference order,
-- then (optional) aged share N: at most one job of an aged tier per N jobs fetched (default 10), then (optional) `1`
-- to have each job's times in the reply.
-- Leases up to `count` jobs; returns 5 items per job: id, fencing token, attempt number, tier, envelope (7 with the
-- times: then also the job's qt and the server's NOW, ms); when something was skipped (a key of the wrong type), one
-- more item: an array of messages naming the keys.
-- A paused queue (`*` in the hash `paused`) leases nothing; a paused tier is left out of the order.
-- Garbage entries and invalid job records are dead-lettered as `malformed` on the way; stale entries (cancelled jobs)
-- are dropped. A job enqueued without a key of its own (its envelope in the hash `pending`) gets its job record here,
-- when it is leased.
local want = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local worker = ARGV[4]
local aging = tonumber(ARGV[5])
local nt = tonumber(ARGV[6])
local every = math.max(1, tonumber(ARGV[7 + nt] or '') or 10)
local times = ARGV[8 + nt] == '1'
local PK = P .. 'pending'
-- Pause (one read of a hash that is usually missing): `*` pauses the queue, a tier name that tier.
local paused = {}
local pr = redis.pcall('HGETALL', P .. 'paused')
if pr['err'] then
  PROBLEMS[#PROBLEMS + 1] = P .. 'paused is a ' .. key_type(P .. 'paused') .. ', expected a hash (pause ignored)'
else
  for i = 1, #pr, 2 do paused[pr[i]] = true end
end
if paused['*'] then
  if #PROBLEMS > 0 then return {PROBLEMS} end
  return {}
end
-- Every key this call may write is checked before its first write (the first RPOP of a non-empty list, so that an
-- empty fetch, the idle worker's, costs nothing more); tier lists are checked as they are popped, job keys as read.
local CHECKED = false
local function check_keys()
  need(P .. 'inflight', 'zset')
  need(P .. 'scheduled', 'zset')
  need(P .. 'aging', 'hash')
  need(PK, 'hash')
  need_dead_letters()
  CHECKED = true
end

local order, aged = {}, {}
for i = 1, nt do
  if not paused[ARGV[6 + i]] then order[#order + 1] = ARGV[6 + i] end
end
if aging > 0 and nt > 1 then
  -- Aged tiers: below the first, whose next job has waited `aging` or more. They get a bounded share of the jobs
  -- fetched (one per `every`, taken in turn), counted in the hash `aging` across all workers; the strict order
  -- serves the rest.
  for i = 2, nt do
    local tier = ARGV[6 + i]
    local ok, oldest = pcall(redis.call, 'LINDEX', P .. 't:' .. tier, -1)
    if ok and oldest and not paused[tier] then
      local r = string.sub(oldest, 1, 1) ~= '{' and job_fields(jobkey(oldest), 'qt')
      if r and not r[1] then
        -- No job record: a pending job's qt is the first word of its entry.
        local v = redis.pcall('HGET', PK, oldest)
        if type(v) == 'string' then r = {string.match(v, '^(%S*)')} end
      end
      local qt = r and int_field('qt', r[1], MAX_MS)
      -- An invalid qt counts as aged, so the record reaches the loop below and is dead-lettered soon.
      if r and (not qt or (r[1] and NOW - qt >= aging)) then aged[#aged + 1] = tier end
    end
  end
end
local since, quota, any_aged, last = 0, 0, #aged > 0, nil
if any_aged then
  check_keys()
  local a = redis.call('HMGET', P .. 'aging', 'since', 'last')
  since = int_field('since', a[1], MAX_COUNT) or 0
  quota = math.floor((since + want) / every)
  -- In turn: the aged tiers after the one served last come first (tier order, wrapping around).
  last = a[2]
  local pos = {}
  for j = 2, nt do pos[ARGV[6 + j]] = j end
  local after = pos[last] or 0
  local first, rest = {}, {}
  for _, t in ipairs(aged) do
    if pos[t] > after then first[#first + 1] = t else rest[#rest + 1] = t end
  end
  for _, t in ipairs(rest) do first[#first + 1] = t end
  aged = first
end

local out, got, leased, skipped = {}, 0, {}, {}
-- The job's kind, kept in its hash (field `kind`) for the counters by kind of the scripts that end it.
local function kind_of(env)
  return env and string.match(env, '"kind"%s*:%s*"([^"\\]+)"') or 'unknown'
end
local function lease_out(id, token, attempts, tier, env, qt)
  leased[#leased + 1] = NOW + lease
  leased[#leased + 1] = id
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = attempts
  out[#out + 1] = tier
  out[#out + 1] = env or ''
  if times then
    out[#out + 1] = qt or NOW
    out[#out + 1] = NOW
  end
  got = got + 1
end
-- Pops up to `n` entries of one tier and leases the jobs among them; returns how many it leased.
local function take(tier, n)
  local lk = P .. 't:' .. tier
  local taken = 0
  while taken < n do
    if skipped[tier] or redis.call('EXISTS', lk) == 0 then return taken end
    if not CHECKED then check_keys() end
    local items = redis.pcall('RPOP', lk, n - taken)
    if type(items) == 'table' and items['err'] then
      PROBLEMS[#PROBLEMS + 1] = lk .. ' is a ' .. key_type(lk) .. ', expected a list (tier skipped)'
      skipped[tier] = true
      return taken
    end
    if not items then break end
    -- Pending jobs among the entries: one HMGET of `pending` for all of them, one EXISTS of their job keys (a job key
    -- beside a pending entry is a foreign client's doing: only then is each looked at on its own).
    local names, pend, clash, done = {}, {}, {}, {}
    for _, item in ipairs(items) do
      if string.byte(item, 1) ~= 123 then names[#names + 1] = item end
    end
    if #names > 0 then
      local values, jks = hmget_many(PK, names), {}
      for k = 1, #names do
        if values[k] then pend[names[k]] = values[k]; jks[#jks + 1] = jobkey(names[k]) end
      end
      local any_key = false
      for s = 1, #jks, 1000 do
        if redis.call('EXISTS', unpack(jks, s, math.min(s + 999, #jks))) > 0 then any_key = true end
      end
      if any_key then
        for name in pairs(pend) do
          if redis.call('EXISTS', jobkey(name)) == 1 then clash[name] = true end
        end
      end
    end
    for _, item in ipairs(items) do
      local id, jk = item, jobkey(item)
      local v = pend[item]
      local r, state, env
      if v then
        pend[item] = nil  -- a second copy of the id in this batch finds the record made now: stale, dropped
        done[#done + 1] = item
      end
      if v and not clash[item] then
        local qt, _, penv, err = parse_pending(v)
        if err then
          if qt then
            redis.call('HSET', jk, 'env', penv or v, 'state', 'queued', 'tier', tier, 'qt', qt)
          else
            redis.call('HSET', jk, 'env', penv or v, 'state', 'queued', 'tier', tier)
          end
          malformed_record(id, jk, err, 0)
        else
          redis.call('HSET', jk, 'env', penv, 'state', 'running', 'tier', tier, 'qt', qt, 'started', NOW, 'worker', worker,
                     'attempts', 1, 'lease', 1, 'kind', kind_of(penv))
          lease_out(id, 1, 1, tier, penv, qt)
          taken = taken + 1
        end
        state = 'skip'
      else
        if v then
          raw_dead_letter(v, 'pending entry of ' .. show(id) .. ' beside a job record of the same id (the record is kept)')
        end
        r = job_fields(jk, 'state', 'env', 'attempts', 'lease', 'tier', 'qt', 'batch')
        state, env = r and r[1], r and r[2]
      end
      if state == 'skip' then
        -- handled above
      elseif not r then
        raw_dead_letter(item, 'queue entry ' .. show(item) .. ' names ' .. jk .. ', which is a ' .. key_type(jk)
          .. ', not a job hash')
        state = 'skip'
      elseif not state and string.sub(item, 1, 1) == '{' then
        -- An envelope pushed as it is by a foreign client: give it a job record, then lease it.
        local ok, obj = pcall(cjson.decode, item)
        local eid = ok and type(obj) == 'table' and obj.id
        if not ok then
          -- Not JSON: keep the producer's id when it can be read, so that a waiter on it learns the job is dead.
          eid = string.match(item, '"id"%s*:%s*"([%w%-_%.:]+)"')
        end
        local valid_id = type(eid) == 'string' and #eid >= 1 and #eid <= 128 and not string.find(eid, '[^%w%-_%.:]')
        local why = nil
        if not ok then
          why = 'inline envelope is not valid JSON'
        elseif type(obj) ~= 'table' then
          why = 'inline envelope is not a JSON object'
        elseif not valid_id then
          why = 'inline envelope has no valid id (1-128 characters of A-Z a-z 0-9 - _ . :)'
        elseif type(obj.kind) ~= 'string' then
          why = 'inline envelope has no string kind'
        elseif type(obj.run_at) == 'number' and (obj.run_at ~= obj.run_at or obj.run_at < 0 or obj.run_at > MAX_MS) then
          why = 'inline envelope field run_at is ' .. show(obj.run_at) .. ': expected ms 0..' .. string.format('%.0f', MAX_MS)
        end
        if valid_id and (key_type(jobkey(eid)) ~= 'none' or redis.call('HEXISTS', PK, eid) == 1) then
          raw_dead_letter(item, (why and (why .. '; ') or '') .. 'envelope id ' .. eid .. ' is already used by another job')
          state = 'skip'
        elseif why and valid_id then
          id, jk = eid, jobkey(eid)
          redis.call('HSET', jk, 'env', item, 'state', 'queued', 'tier', tier, 'qt', NOW)
          malformed_record(id, jk, why, 0)
          state = 'skip'
        elseif why then
          raw_dead_letter(item, why)
          state = 'skip'
        else
          id, jk = eid, jobkey(eid)
          if type(obj.run_at) == 'number' and obj.run_at > NOW then
            local run_at = math.floor(obj.run_at)
            redis.call('HSET', jk, 'env', item, 'state', 'scheduled', 'tier', tier, 'qt', NOW, 'run_at', run_at)
            redis.call('ZADD', P .. 'scheduled', run_at, id)
            redis.call('HINCRBY', P .. 'stats', 'enqueued', 1)
            redis.pcall('HINCRBY', P .. 'outcomes', 'enqueued ' .. tier .. ' ' .. obj.kind, 1)
            state = 'skip'
          else
            redis.call('HSET', jk, 'env', item, 'state', 'queued', 'tier', tier, 'qt', NOW)
            redis.call('HINCRBY', P .. 'stats', 'enqueued', 1)
            redis.pcall('HINCRBY', P .. 'outcomes', 'enqueued ' .. tier .. ' ' .. obj.kind, 1)
            state, env = 'queued', item
            r = {nil, nil, nil, nil, nil, tostring(NOW)}
          end
        end
      end
      if state == 'queued' then
        local attempts, e1 = int_field('attempts', r[3], MAX_COUNT)
        local token, e2 = int_field('lease', r[4], MAX_TOKEN - 1)
        local _, e3 = tier_field(r[5])
        local qt, e4 = int_field('qt', r[6], MAX_MS)
        local err = e1 or e2 or e3 or e4
        if err then
          malformed_record(id, jk, err, 0)
        else
          attempts, token = attempts + 1, token + 1
          if r[5] == tier then
            redis.call('HSET', jk, 'state', 'running', 'started', NOW, 'worker', worker, 'attempts', attempts, 'lease', token,
                       'kind', kind_of(env))
          else
            redis.call('HSET', jk, 'state', 'running', 'started', NOW, 'worker', worker, 'attempts', attempts, 'lease', token,
                       'tier', tier, 'kind', kind_of(env))
          end
          lease_out(id, token, attempts, tier, env, qt)
          taken = taken + 1
          if r[7] then batch_count(r[7], jk, 'running') end
        end
      elseif not state then
        raw_dead_letter(item, 'queue entry is neither the id of a job record nor a job envelope')
      elseif state ~= 'skip' then
        local err = bad_state(state)
        if err then malformed_record(id, jk, err, 0) end
      end
    end
    for s = 1, #done, 1000 do
      redis.call('HDEL', PK, unpack(done, s, math.min(s + 999, #done)))
    end
    -- Into `inflight` after each batch popped, so that nothing leased can miss the reaper.
    for s = 1, #leased, 1000 do
      redis.call('ZADD', P .. 'inflight', unpack(leased, s, math.min(s + 999, #leased)))
    end
    leased = {}
  end
  return taken
end

-- The aged tiers' share first (oldest first, one job each in turn), then the strict order for the rest.
local aged_taken = 0
while aged_taken < quota and got < want and #aged > 0 do
  local still = {}
  for _, tier in ipairs(aged) do
    if aged_taken < quota and got < want then
      local n = take(tier, 1)
      aged_taken = aged_taken + n
      if n > 0 then
        still[#still + 1] = tier
        last = tier
      end
    end
  end
  aged = still
end
for _, tier in ipairs(order) do
  if got >= want then break end
  take(tier, want - got)
end
if any_aged then
  since = math.min(every - 1, math.max(0, since + got - aged_taken * every))
  redis.call('HSET', P .. 'aging', 'since', since, 'last', last or '')
end
if got >= want then
  for _, tier in ipairs(order) do
    if not skipped[tier] and redis.call('LLEN', P .. 't:' .. tier) > 0 then wake(tier) end
  end
end
if #PROBLEMS > 0 then out[#out + 1] = PROBLEMS end
return out
