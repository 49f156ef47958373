-- prelude.lua: the helpers every script starts with (each script is sent as this file followed by the script's own file).
-- Time is the server's (TIME), so workers on machines with skewed clocks agree on lease deadlines.
local P = KEYS[1]
local Q = ARGV[1]
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local function jobkey(id) return P .. 'job:' .. id end
-- One wake-up token per tier (a list of at most one element): idle workers block on the tiers they serve,
-- so a worker that cannot take a job never swallows the token meant for one that can.
local WOKEN = {}
local function wake(tier)
  tier = tier or 'standard'
  if WOKEN[tier] then return end
  WOKEN[tier] = true
  redis.call('LPUSH', P .. 'signal:' .. tier, '1')
  redis.call('LTRIM', P .. 'signal:' .. tier, 0, 0)
end
-- Events go out only while someone listens (a waiter, the dispatcher): a PUBLISH per job is not free.
local LISTENING = nil
local function publish(id, what)
  if LISTENING == nil then
    LISTENING = redis.call('PUBSUB', 'NUMPAT') > 0 or redis.call('PUBSUB', 'NUMSUB', P .. 'events')[2] > 0
  end
  if LISTENING then redis.call('PUBLISH', P .. 'events', id .. ' ' .. what) end
end
local function add_history(jk, record)
  local h = redis.call('HGET', jk, 'history')
  if h then h = h .. '\n' .. record else h = record end
  redis.call('HSET', jk, 'history', h)
end
-- Moves a job (or a raw queue entry, when jk is nil) to the dead letters with a reason.
local function dead_letter(id, jk, reason, err, raw, retention)
  local env, attempts, history, kind = raw, 0, nil, nil
  if jk then
    local r = redis.call('HMGET', jk, 'env', 'attempts', 'history')
    env = r[1] or raw or ''
    attempts = tonumber(r[2]) or 0
    history = r[3]
    redis.call('HSET', jk, 'state', 'dead', 'finished', NOW, 'error', err, 'reason', reason)
    redis.call('HDEL', jk, 'worker', 'cancel')
    if retention > 0 then redis.call('PEXPIRE', jk, retention) end
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
  publish(id, 'cancelled')
end
local function raw_dead_letter(item, err)
  local id = 'malformed-' .. NOW .. '-' .. redis.call('HINCRBY', P .. 'stats', 'malformed', 1)
  dead_letter(id, nil, 'malformed', err, item, 0)
end
