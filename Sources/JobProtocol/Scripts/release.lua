-- release.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- RELEASE: ARGV = queue, retention ms, then per job: id, fencing token. Hands leased jobs back (graceful shutdown):
-- to the front of their tier, the interrupted attempt not counted. Returns the number released.
local retention = tonumber(ARGV[2])
local released = 0
need(P .. 'inflight', 'zset')
need_dead_letters()
for b = 3, #ARGV, 2 do
  local id, token = ARGV[b], ARGV[b + 1]
  local jk = jobkey(id)
  local r = job_fields(jk, 'state', 'lease', 'tier', 'cancel', 'attempts') or {}
  local tier, bad = tier_field(r[3])
  bad = bad or select(2, int_field('attempts', r[5], MAX_COUNT))
  -- A tier list of the wrong type: the job is left leased (its lease expires and `reap` leaves it in `inflight`,
  -- reported, until the key is repaired) rather than failing the script halfway through the batch.
  local list_ok = true
  if r[1] == 'running' and r[2] == token and not bad and not r[4] then list_ok = usable(P .. 't:' .. tier, 'list') end
  if r[1] == 'running' and r[2] == token and list_ok and redis.call('ZREM', P .. 'inflight', id) == 1 then
    if bad then
      malformed_record(id, jk, bad, retention)
    elseif r[4] then
      finish_cancelled(id, jk, r[4], retention)
    else
      redis.call('HINCRBY', jk, 'attempts', -1)
      back_to_front(id, jk, tier)
      batch_back_in_line(jk)
      released = released + 1
    end
  end
end
return released
