-- stats.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- STATS: ARGV = queue, tier count, tiers… Returns {now, {depth, oldest qt or -1} per tier, inflight, scheduled, dead, counters…}.
local nt = tonumber(ARGV[2])
local tiers = {}
for i = 1, nt do
  local lk = P .. 't:' .. ARGV[2 + i]
  local oldest = redis.call('LINDEX', lk, -1)
  local qt = oldest and redis.call('HGET', jobkey(oldest), 'qt')
  tiers[i] = {redis.call('LLEN', lk), tonumber(qt) or -1}
end
return {NOW, tiers, redis.call('ZCARD', P .. 'inflight'), redis.call('ZCARD', P .. 'scheduled'),
        redis.call('ZCARD', P .. 'dead'), redis.call('HGETALL', P .. 'stats')}
