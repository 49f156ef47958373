-- prelude.lua: the helpers every script starts with (each script is sent as this file followed by the script's own file).
-- Time is the server's (TIME), so workers on machines with skewed clocks agree on lease deadlines.
local P = KEYS[1]
local Q = ARGV[1]
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local function jobkey(id) return P .. 'job:' .. id end

-- Valid values of the job-hash fields the scripts compute with or compare (docs/PROTOCOL.md §3, "Valid values").
-- A record with anything else is dead-lettered `malformed`, the field and its value named, and the queue goes on.
local MAX_COUNT = 1000000           -- attempts, lost
local MAX_TOKEN = 9007199254740992  -- lease (2^53: exact as a Lua number and as a JSON number)
local MAX_MS = 253402300799999      -- qt, run_at (9999-12-31 in ms)
local STATES = {queued = true, scheduled = true, running = true, retrying = true, succeeded = true, dead = true,
                cancelled = true}
local function show(raw) return '"' .. string.sub(tostring(raw), 1, 80) .. '"' end
-- An integer field (0..max; missing reads as 0): the number, or nil and what is wrong with it.
local function int_field(name, raw, max)
  if not raw then return 0 end
  if #raw <= 16 and string.find(raw, '^%d+$') then
    local v = tonumber(raw)
    if v <= max then return v end
  end
  return nil, 'field ' .. name .. ' is ' .. show(raw) .. ': expected an integer 0..' .. string.format('%.0f', max)
end
-- The tier a job goes back to (missing reads as `standard`): the name, or nil and what is wrong with it.
local function tier_field(raw)
  if not raw then return 'standard' end
  if #raw <= 64 and string.find(raw, '^[%w_%.%-]+$') then return raw end
  return nil, 'field tier is ' .. show(raw) .. ': expected 1-64 characters of A-Z a-z 0-9 _ - .'
end
-- nil when `state` is one of the protocol's states, else what is wrong with it.
local function bad_state(raw)
  if raw and STATES[raw] then return nil end
  return 'field state is ' .. show(raw) .. ': expected one of queued, scheduled, running, retrying, succeeded, dead, cancelled'
end

-- A job enqueued and not leased yet has no key of its own: the hash `pending` holds id → "<qt> <tier> <envelope>"
-- (qt in server ms, the tier whose list holds the id). Returns qt, tier, envelope, or, for an entry that is not
-- that, what is wrong with it as the fourth value (and whatever could be read of the rest).
local function parse_pending(v)
  local qt, tier, env = string.match(v, '^(%S+) (%S+) (.*)$')
  if not qt then return nil, nil, nil, 'pending entry is ' .. show(v) .. ': expected "<qt> <tier> <envelope>"' end
  local q, e1 = int_field('qt', qt, MAX_MS)
  local t, e2 = tier_field(tier)
  return q, t, env, e1 or e2
end
-- HMGET of many fields, 1,000 per call (Lua's unpack has a limit).
local function hmget_many(key, fields)
  local out = {}
  for s = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, s, math.min(s + 999, #fields)))
    for k = 1, #part do out[s + k - 1] = part[k] end
  end
  return out
end

-- Keys of the wrong type (a foreign client's mistake): a script checks (TYPE) every key it is about to write before
-- its first write, so it never leaves a half-written record. `need` fails the whole call with an error that names the
-- key; `usable` lets a script skip what it can do without (one tier's list) and lists it in its reply (PROBLEMS).
local PROBLEMS = {}
local function key_type(key) return redis.call('TYPE', key)['ok'] end
local function need(key, want)
  local found = key_type(key)
  if found ~= 'none' and found ~= want then
    error({err = 'JOBFARM_WRONGTYPE ' .. key .. ' is a ' .. found .. ', expected a ' .. want .. ': nothing was changed. '
      .. 'Look at it (redis-cli TYPE / DUMP), then DEL or RENAME it; the scripts that write it refuse to run until then'})
  end
end
local function usable(key, want)
  local found = key_type(key)
  if found == 'none' or found == want then return true end
  PROBLEMS[#PROBLEMS + 1] = key .. ' is a ' .. found .. ', expected a ' .. want
  return false
end
-- Every key a dead-lettering writes.
local function need_dead_letters()
  need(P .. 'dead', 'zset')
  need(P .. 'dead:entries', 'hash')
  need(P .. 'dead:env', 'hash')
  need(P .. 'stats', 'hash')
end
-- A job key's fields (HMGET), or nil when the key is not a hash (noted in PROBLEMS).
local function job_fields(jk, ...)
  local r = redis.pcall('HMGET', jk, ...)
  if r['err'] then
    PROBLEMS[#PROBLEMS + 1] = jk .. ' is a ' .. key_type(jk) .. ', expected a hash'
    return nil
  end
  return r
end

-- One wake-up token per tier (a list of at most one element): idle workers block on the tiers they serve,
-- so a worker that cannot take a job never swallows the token meant for one that can. A wake-up list of the wrong
-- type is skipped (listed in PROBLEMS): the job is still in line, and the workers' BLPOP reports the key.
local WOKEN = {}
local function wake(tier)
  tier = tier or 'standard'
  if WOKEN[tier] then return end
  WOKEN[tier] = true
  local sk = P .. 'signal:' .. tier
  if usable(sk, 'list') then
    redis.call('LPUSH', sk, '1')
    redis.call('LTRIM', sk, 0, 0)
  end
end
-- Puts a leased job back at the front of its tier's line (`reap`, `release`): queued again, no worker.
local function back_to_front(id, jk, tier)
  redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
  redis.call('HDEL', jk, 'worker')
  redis.call('RPUSH', P .. 't:' .. tier, id)
  wake(tier)
end
-- Events go out only while someone listens (a waiter, the dispatcher): a PUBLISH per job is not free. Classic
-- subscribers (PSUBSCRIBE/SUBSCRIBE, one server) get PUBLISH; sharded ones (SSUBSCRIBE, a cluster's waiters on the
-- queue's own master) get SPUBLISH, which a cluster delivers within the queue's shard only.
local LISTENING = nil
local SHARDED = nil
local function publish(id, what)
  if LISTENING == nil then
    LISTENING = redis.call('PUBSUB', 'NUMPAT') > 0 or redis.call('PUBSUB', 'NUMSUB', P .. 'events')[2] > 0
    SHARDED = redis.call('PUBSUB', 'SHARDNUMSUB', P .. 'events')[2] > 0
  end
  if LISTENING then redis.call('PUBLISH', P .. 'events', id .. ' ' .. what) end
  if SHARDED then redis.call('SPUBLISH', P .. 'events', id .. ' ' .. what) end
end
local function add_history(jk, record)
  local h = redis.call('HGET', jk, 'history')
  if h then h = h .. '\n' .. record else h = record end
  redis.call('HSET', jk, 'history', h)
end
-- A job of a batch (its hash has a `batch` field) is counted in this queue's part of the batch, `batch:<b>` (fields
-- `total`, `pending`, `running`, `succeeded`, `dead`, `cancelled`, `version`; docs/PROTOCOL.md §17). The job hash's
-- field `bc` says which counter holds the job now, so each move takes it from there: a repeated move changes nothing,
-- and a requeued dead job leaves `dead` and counts again. A job counted for the first time adds to `total`. When a move
-- to a final counter leaves the part with nothing pending or running, the part queues a check for the batch's checker
-- (`batch-checks`: batch id → the part's version). Returns true when it queued a check. Keys of the wrong type are
-- skipped (listed in PROBLEMS): the counts are then short, and `jobfarm batch status` says the part is unreadable.
local BATCH_KEEP = 7 * 86400000
local function batch_count(b, jk, to)
  local bk = P .. 'batch:' .. b
  if not usable(bk, 'hash') then return false end
  local from = redis.call('HGET', jk, 'bc')
  if from == to then return false end
  if from then redis.call('HINCRBY', bk, from, -1) else redis.call('HINCRBY', bk, 'total', 1) end
  redis.call('HINCRBY', bk, to, 1)
  local version = redis.call('HINCRBY', bk, 'version', 1)
  redis.call('HSET', jk, 'bc', to)
  redis.call('PEXPIRE', bk, BATCH_KEEP)
  if to == 'pending' or to == 'running' then return false end
  local c = redis.call('HMGET', bk, 'pending', 'running')
  if (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) > 0 then return false end
  if not usable(P .. 'batch-checks', 'zset') then return false end
  redis.call('ZADD', P .. 'batch-checks', version, b)
  return true
end
-- A job of a batch back in line (a retry, a lease reaped or released, a dead letter requeued): counted as pending.
local function batch_back_in_line(jk, b)
  b = b or redis.call('HGET', jk, 'batch')
  if b then batch_count(b, jk, 'pending') end
end

-- Every path that ends a job (succeeded, dead or cancelled) calls this, in the same script: a job of a pipeline run
-- (its hash has a `run` field) leaves a notice in this queue's slot, `run-ends` (id → when) and `run-ends:data`
-- (id → JSON {job, run, step, item, state, result, error, reason}), which the run's own script applies later
-- (docs/PIPELINES.md, "Engine design"); a job of a batch (field `batch`) moves to its final counter (`batch_count`).
-- Notice keys of the wrong type are skipped (listed in PROBLEMS); the run sweeper finds the ended job from its record
-- then. `links` is {run, step, item, batch} when the caller read them already. Returns true when a notice was written
-- or a batch check queued (NOTICES counts them): the caller's worker then applies them at once.
local NOTICES = 0
local function job_ended(id, jk, state, result, err, reason, links)
  local r = links or redis.call('HMGET', jk, 'run', 'step', 'item', 'batch')
  if r[4] and batch_count(r[4], jk, state) then
    NOTICES = NOTICES + 1
    if not r[1] then return true end
  end
  if not r[1] then return false end
  if not (usable(P .. 'run-ends', 'zset') and usable(P .. 'run-ends:data', 'hash')) then return false end
  redis.call('HSET', P .. 'run-ends:data', id, cjson.encode({job = id, run = r[1], step = r[2] or '', item = r[3] or '',
    state = state, result = result or '', error = err or '', reason = reason or ''}))
  redis.call('ZADD', P .. 'run-ends', NOW, id)
  NOTICES = NOTICES + 1
  return true
end
-- Moves a job (or a raw queue entry, when jk is nil) to the dead letters with a reason. The caller has checked the
-- dead-letter keys (need_dead_letters) before its first write.
local function dead_letter(id, jk, reason, err, raw, retention)
  local env, attempts, history, kind = raw, 0, nil, nil
  if jk then
    local r = redis.call('HMGET', jk, 'env', 'attempts', 'history')
    env = r[1] or raw or ''
    attempts = int_field('attempts', r[2], MAX_COUNT) or 0
    history = r[3]
    redis.call('HSET', jk, 'state', 'dead', 'finished', NOW, 'error', err, 'reason', reason)
    redis.call('HDEL', jk, 'worker', 'cancel')
    if retention > 0 then redis.call('PEXPIRE', jk, retention) end
    job_ended(id, jk, 'dead', nil, err, reason)
  end
  local ok, obj = pcall(cjson.decode, env)
  if ok and type(obj) == 'table' and type(obj.kind) == 'string' then kind = obj.kind end
  local meta = cjson.encode({id = id, queue = Q, reason = reason, error = err, dead_at = NOW,
                             attempts = attempts, kind = kind})
  local lines = {}
  if history then for line in string.gmatch(history, '[^\n]+') do lines[#lines + 1] = line end end
  meta = string.sub(meta, 1, -2) .. ',"history":[' .. table.concat(lines, ',') .. ']}'
  redis.call('HSET', P .. 'dead:entries', id, meta)
  redis.call('HSET', P .. 'dead:env', id, env)
  redis.call('ZADD', P .. 'dead', NOW, id)
  redis.call('HINCRBY', P .. 'stats', 'dead', 1)
  local dtier = jk and redis.call('HGET', jk, 'tier') or nil
  redis.pcall('HINCRBY', P .. 'outcomes', 'dead_lettered ' .. (dtier or 'standard') .. ' ' .. (kind or 'unknown'), 1)
  publish(id, 'dead')
end
-- Ends a job as cancelled (keep = '2' keeps it as a dead letter, reason `cancelled`).
local function finish_cancelled(id, jk, keep, retention)
  if keep == '2' then
    dead_letter(id, jk, 'cancelled', 'cancelled by request', nil, retention)
    return
  end
  redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW, 'error', 'cancelled by request')
  redis.call('HDEL', jk, 'worker', 'cancel')
  if retention > 0 then redis.call('PEXPIRE', jk, retention) end
  redis.call('HINCRBY', P .. 'stats', 'cancelled', 1)
  job_ended(id, jk, 'cancelled', nil, 'cancelled by request', 'cancelled')
  publish(id, 'cancelled')
end
local function raw_dead_letter(item, err)
  local id = 'malformed-' .. NOW .. '-' .. redis.call('HINCRBY', P .. 'stats', 'malformed', 1)
  dead_letter(id, nil, 'malformed', err, item, 0)
end
-- A job record found invalid (fields named in `err`): dead-lettered `malformed` under its own id, so whoever waits
-- for that id learns that it is dead; the job key must be a hash.
local function malformed_record(id, jk, err, retention)
  redis.call('HINCRBY', P .. 'stats', 'malformed', 1)
  dead_letter(id, jk, 'malformed', 'invalid job record: ' .. err, nil, retention)
end
-- Lifetime counters by tier and kind (hash `outcomes`, field `<outcome> <tier> <kind>`: succeeded, retried,
-- dead_lettered), for the exporter. `kind` is the job hash's field that `fetch` writes at each lease. Gathered per call
-- and written by `flush_outcomes`; best effort: an `outcomes` key of the wrong type is skipped, never fails a transition.
-- (Counted in nested tables, outcome → tier → kind, so that a job costs no new Lua string.)
local OUTCOMES = {}
local function count_outcome(outcome, tier, kind)
  local by_tier = OUTCOMES[outcome]
  if not by_tier then by_tier = {}; OUTCOMES[outcome] = by_tier end
  tier = tier or 'standard'
  local by_kind = by_tier[tier]
  if not by_kind then by_kind = {}; by_tier[tier] = by_kind end
  kind = kind or 'unknown'
  by_kind[kind] = (by_kind[kind] or 0) + 1
end
local function flush_outcomes()
  for outcome, by_tier in pairs(OUTCOMES) do
    for tier, by_kind in pairs(by_tier) do
      for kind, n in pairs(by_kind) do redis.pcall('HINCRBY', P .. 'outcomes', outcome .. ' ' .. tier .. ' ' .. kind, n) end
    end
  end
  OUTCOMES = {}
end
