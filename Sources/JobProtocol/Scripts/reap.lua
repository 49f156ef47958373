-- reap.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- REAP: ARGV = queue, limit, lease losses before poison, retention ms, [grace ms, contact gap ms].
-- Returns expired leases to the front of their tier, or dead-letters them as `poison`; returns {requeued, poisoned,
-- grace ms left}, plus an array of messages when a key of the wrong type made it leave a lease in `inflight`.
-- With the last two arguments, lease clocks stop while nobody reaches the queue: the step notes its call in `contact`,
-- and when the previous call is more than the gap ago (Redis was down, or no worker could reach it) it reaps nothing
-- for `grace` ms from now, so that cut-off workers renew or report first.
local limit, max_lost, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local grace, gap = tonumber(ARGV[5]), tonumber(ARGV[6])
need(P .. 'inflight', 'zset')
need_dead_letters()
if grace and gap and grace > 0 and gap > 0 then
  local ck = P .. 'contact'
  local kind = key_type(ck)
  if kind == 'hash' or kind == 'none' then
    local c = redis.call('HMGET', ck, 'at', 'grace_until')
    local last, grace_until = tonumber(c[1]), tonumber(c[2]) or 0
    if last and NOW - last > gap then
      grace_until = math.max(grace_until, NOW + grace)
      redis.call('HSET', ck, 'at', NOW, 'grace_until', grace_until)
    elseif not last or NOW - last >= gap / 4 then
      redis.call('HSET', ck, 'at', NOW)
    end
    if NOW < grace_until then return {0, 0, grace_until - NOW} end
  end
end
local ids = redis.call('ZRANGEBYSCORE', P .. 'inflight', '-inf', NOW, 'LIMIT', 0, limit)
local requeued, poisoned = 0, 0
for _, id in ipairs(ids) do
  local jk = jobkey(id)
  -- Checked before the first write: the record's fields (else `malformed`) and its tier's list (else left for later).
  local r = job_fields(jk, 'state', 'tier', 'worker', 'attempts', 'cancel', 'lost')
  local tier, bad = tier_field(r and r[2])
  if r and r[1] == 'running' and not r[5] then
    bad = bad or select(2, int_field('lost', r[6], MAX_COUNT)) or select(2, int_field('attempts', r[4], MAX_COUNT))
  end
  local go = not r or bad or r[1] ~= 'running' or r[5] or usable(P .. 't:' .. tier, 'list')
  if go then redis.call('ZREM', P .. 'inflight', id) end
  if not r then
    raw_dead_letter(id, 'inflight entry names ' .. jk .. ', which is a ' .. key_type(jk) .. ', not a job hash')
  elseif not go then
    -- its tier's list is of the wrong type: the lease stays expired in inflight until the key is repaired
  elseif r[1] == 'running' and bad then
    malformed_record(id, jk, bad, retention)
  elseif r[1] == 'running' and r[5] then
    -- Cancel was requested and the worker died before acting on it: the cancel wins.
    finish_cancelled(id, jk, r[5], retention)
  elseif r[1] == 'running' then
    local lost = redis.call('HINCRBY', jk, 'lost', 1)
    local why = 'lease expired: worker ' .. (r[3] or '?') .. ' stopped renewing it (crashed, hung or cut off)'
    add_history(jk, cjson.encode({attempt = int_field('attempts', r[4], MAX_COUNT), at = NOW, error = why, outcome = 'lease_lost', worker = r[3]}))
    if lost >= max_lost then
      dead_letter(id, jk, 'poison', 'lost its lease ' .. lost .. ' times; last: ' .. why, nil, retention)
      poisoned = poisoned + 1
    else
      back_to_front(id, jk, tier)
      batch_back_in_line(jk)
      requeued = requeued + 1
    end
  end
end
if requeued > 0 then redis.call('HINCRBY', P .. 'stats', 'reaped', requeued) end
if #PROBLEMS > 0 then return {requeued, poisoned, 0, PROBLEMS} end
return {requeued, poisoned, 0}
