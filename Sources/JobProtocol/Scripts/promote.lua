-- promote.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- PROMOTE: ARGV = queue, limit. Moves due scheduled and retrying jobs to their tier lists.
-- Returns {moved, ms until the next due job or -1}.
local limit = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', P .. 'scheduled', '-inf', NOW, 'LIMIT', 0, limit)
local moved = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'scheduled', id)
  local jk = jobkey(id)
  local r = redis.call('HMGET', jk, 'state', 'tier')
  if not r[1] then
    raw_dead_letter(id, 'scheduled entry is not the id of a job record')
  elseif r[1] == 'scheduled' or r[1] == 'retrying' then
    redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
    redis.call('LPUSH', P .. 't:' .. (r[2] or 'standard'), id)
    wake(r[2])
    moved = moved + 1
  end
end
local next = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')
if next[2] then return {moved, math.max(0, tonumber(next[2]) - NOW)} end
return {moved, -1}
