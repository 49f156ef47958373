-- stats.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- STATS: ARGV = queue, tier count, tiers… Returns {now, {depth, oldest qt or -1} per tier, inflight, scheduled, dead, counters…}.
local nt = tonumber(ARGV[2])
local tiers = {}
need(P .. 'inflight', 'zset')
need(P .. 'scheduled', 'zset')
need(P .. 'dead', 'zset')
need(P .. 'stats', 'hash')
need(P .. 'pending', 'hash')
for i = 1, nt do
  local lk = P .. 't:' .. ARGV[2 + i]
  need(lk, 'list')
  local oldest = redis.call('LINDEX', lk, -1)
  local r = oldest and job_fields(jobkey(oldest), 'qt')
  if r and not r[1] then
    -- No job record: a pending job's qt is the first word of its entry.
    local v = redis.call('HGET', P .. 'pending', oldest)
    if v then r = {string.match(v, '^(%S*)')} end
  end
  -- An invalid qt reads as unknown (-1); fetch dead-letters the record when it gets there.
  local qt = r and r[1] and int_field('qt', r[1], MAX_MS)
  tiers[i] = {redis.call('LLEN', lk), qt or -1}
end
return {NOW, tiers, redis.call('ZCARD', P .. 'inflight'), redis.call('ZCARD', P .. 'scheduled'),
        redis.call('ZCARD', P .. 'dead'), redis.call('HGETALL', P .. 'stats')}
