-- stats.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- STATS: ARGV = queue, tier count, tiers…, then (optional) how many scheduled jobs to look at one by one (default 10000).
-- Returns {now, {depth, oldest qt or -1} per tier, inflight, scheduled, dead, counters…, {retrying, due now, looked
-- at}}: of the scheduled jobs, those waiting for a retry (the rest are delayed), counted exactly when at most the
-- limit are scheduled, else estimated from that many drawn at random (`looked at` says how many were read).
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
-- Delayed or retrying: the job's state says which (a job record every scheduled job has).
local SK = P .. 'scheduled'
local scheduled = redis.call('ZCARD', SK)
local limit = tonumber(ARGV[3 + nt] or '') or 10000
local members
if scheduled <= limit then members = redis.call('ZRANGE', SK, 0, -1) else members = redis.call('ZRANDMEMBER', SK, limit) end
local retrying = 0
for _, id in ipairs(members) do
  local ok, state = pcall(redis.call, 'HGET', jobkey(id), 'state')
  if ok and state == 'retrying' then retrying = retrying + 1 end
end
if #members > 0 and #members < scheduled then retrying = math.floor(retrying * scheduled / #members + 0.5) end
return {NOW, tiers, redis.call('ZCARD', P .. 'inflight'), scheduled,
        redis.call('ZCARD', P .. 'dead'), redis.call('HGETALL', P .. 'stats'),
        {retrying, redis.call('ZCOUNT', SK, '-inf', NOW), #members}}
