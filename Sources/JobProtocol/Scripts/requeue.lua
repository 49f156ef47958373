-- requeue.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- REQUEUE (dead letter → queue): ARGV = queue, id, replacement envelope ('' keeps the stored one), tier ('' keeps it).
-- Returns `requeued`, `unknown` (no such dead letter), `malformed` (no valid envelope to run; pass an edited one),
-- or `conflict` (a live job now uses the id).
local id, edited, tier = ARGV[2], ARGV[3], ARGV[4]
need_dead_letters()
need(jobkey(id), 'hash')
need(P .. 'pending', 'hash')
if redis.call('ZSCORE', P .. 'dead', id) == false then return 'unknown' end
local env = edited ~= '' and edited or redis.call('HGET', P .. 'dead:env', id)
local ok, obj = pcall(cjson.decode, env or '')
if not (ok and type(obj) == 'table' and type(obj.kind) == 'string' and obj.id == id) then return 'malformed' end
local jk = jobkey(id)
local current = redis.call('HMGET', jk, 'state', 'tier')
if current[1] and current[1] ~= 'dead' and current[1] ~= 'cancelled' then return 'conflict' end
-- A job enqueued under the id since (no record of its own yet) uses it too.
if not current[1] and redis.call('HEXISTS', P .. 'pending', id) == 1 then return 'conflict' end
if tier == '' then tier = current[2] or (type(obj.tier) == 'string' and obj.tier) or 'standard' end
local _, bad = tier_field(tier)
if bad then return 'malformed' end
need(P .. 't:' .. tier, 'list')
redis.call('PERSIST', jk)
redis.call('HSET', jk, 'env', env, 'state', 'queued', 'tier', tier, 'qt', NOW, 'attempts', 0, 'lost', 0)
redis.call('HDEL', jk, 'finished', 'error', 'reason', 'result', 'worker', 'cancel', 'progress')
redis.call('LPUSH', P .. 't:' .. tier, id)
redis.call('ZREM', P .. 'dead', id)
redis.call('HDEL', P .. 'dead:entries', id)
redis.call('HDEL', P .. 'dead:env', id)
redis.call('HINCRBY', P .. 'stats', 'requeued', 1)
batch_back_in_line(jk)
wake(tier)
return 'requeued'
