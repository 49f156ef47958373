-- promote.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- PROMOTE: ARGV = queue, limit. Moves due scheduled and retrying jobs to their tier lists.
-- Returns {moved, ms until the next due job or -1}, plus an array of messages when a key of the wrong type made it
-- leave a job in `scheduled`.
local limit = tonumber(ARGV[2])
need(P .. 'scheduled', 'zset')
need_dead_letters()
local ids = redis.call('ZRANGEBYSCORE', P .. 'scheduled', '-inf', NOW, 'LIMIT', 0, limit)
local moved = 0
for _, id in ipairs(ids) do
  local jk = jobkey(id)
  local r = job_fields(jk, 'state', 'tier')
  local tier, bad = tier_field(r and r[2])
  if r and r[1] then bad = bad_state(r[1]) or bad end
  local due = r and r[1] and not bad and (r[1] == 'scheduled' or r[1] == 'retrying')
  local blocked = due and not usable(P .. 't:' .. tier, 'list')
  if blocked then
    -- Its tier's list is of the wrong type: tried again in a second (listed in the reply meanwhile).
    redis.call('ZADD', P .. 'scheduled', 'XX', NOW + 1000, id)
  else
    redis.call('ZREM', P .. 'scheduled', id)
  end
  if blocked then
    -- left in scheduled
  elseif not r then
    raw_dead_letter(id, 'scheduled entry names ' .. jk .. ', which is a ' .. key_type(jk) .. ', not a job hash')
  elseif not r[1] then
    raw_dead_letter(id, 'scheduled entry is not the id of a job record')
  elseif bad then
    malformed_record(id, jk, bad, 0)
  elseif r[1] == 'scheduled' or r[1] == 'retrying' then
    redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
    redis.call('LPUSH', P .. 't:' .. tier, id)
    wake(tier)
    moved = moved + 1
  end
end
local next = redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')
local wait = -1
if next[2] then wait = math.max(0, tonumber(next[2]) - NOW) end
if #PROBLEMS > 0 then return {moved, wait, PROBLEMS} end
return {moved, wait}
