-- batchCreate.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the batch prefix `jf:{batch:<b>}:`, ARGV[1] = the batch id.
-- BATCH CREATE: ARGV = batch id, completion callback (job spec JSON, '' = none), success callback ('' = none).
-- Writes the batch record `batch` (`created`, `sealed` 0, `on_complete`, `on_success`), kept 7 days, unless it
-- exists. Returns {'created'} or, for an id in use, {'duplicate', sealed}.
local rk = P .. 'batch'
need(rk, 'hash')
local r = redis.call('HMGET', rk, 'created', 'sealed')
if r[1] then return {'duplicate', r[2] or '0'} end
redis.call('HSET', rk, 'created', NOW, 'sealed', 0, 'on_complete', ARGV[2], 'on_success', ARGV[3])
redis.call('PEXPIRE', rk, BATCH_KEEP)
return {'created'}
