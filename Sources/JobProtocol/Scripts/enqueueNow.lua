-- enqueueNow.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- ENQUEUE NOW: ARGV = queue, count, qt, tier, then per job: id, entry. Every job of the call runs now, in that one
-- tier, with no idempotency key; `entry` is the job's `pending` value already built by the caller:
-- "<qt> <tier> <envelope>", with the call's `qt` and `tier` (the caller's estimate of the server's clock).
-- The bulk path of `enqueue`, for the usual bulk: the entries are written as sent (one HSET of the arguments
-- themselves), without a Lua string made per job. Returns the number of jobs created when every job was; else, as
-- `enqueue`, one answer per job: its id when created, a one-element array holding it for a duplicate (in use).
-- Falls back to building each entry again, as `enqueue` does, when an id is already in use (pending, or a job key of
-- any type: the repeat is a no-op), when the same id comes twice, or when `qt` is more than 250 ms from the server's
-- clock (the entry then gets the server's time). An entry that does not start with "<qt> <tier> " is refused.
local n = tonumber(ARGV[2])
local qt, tier = ARGV[3], ARGV[4]
local PK, TK = P .. 'pending', P .. 't:' .. tier
need(P .. 'stats', 'hash')
need(PK, 'hash')
need(TK, 'list')
local head = qt .. ' ' .. tier .. ' '
-- Enqueued counters by tier and kind (hash `outcomes`, field `enqueued <tier> <kind>`, best effort as in prelude's
-- count_outcome): after the jobs the caller may send each kind of the call and its count (`kind, count, …`). All
-- created: one HINCRBY per kind. Some duplicates: with one kind, its count of created; with several, the kind of each
-- created entry read from its envelope. Nothing is counted there without the pairs.
local function count_enqueued(created, fields)
  local K = 5 + 2 * n
  if ARGV[K] == nil then return end
  if created == n or ARGV[K + 2] == nil then
    for i = K, #ARGV - 1, 2 do
      redis.pcall('HINCRBY', P .. 'outcomes', 'enqueued ' .. tier .. ' ' .. ARGV[i], created == n and tonumber(ARGV[i + 1]) or created)
    end
    return
  end
  local by = {}
  for k = 2, #fields, 2 do
    local kind = string.match(fields[k], '"kind"%s*:%s*"([^"\\]+)"') or 'unknown'
    by[kind] = (by[kind] or 0) + 1
  end
  for kind, c in pairs(by) do redis.pcall('HINCRBY', P .. 'outcomes', 'enqueued ' .. tier .. ' ' .. kind, c) end
end
local ids, jks, seen, twice = {}, {}, {}, false
for k = 1, n do
  local id = ARGV[3 + 2 * k]
  ids[k] = id
  jks[k] = P .. 'job:' .. id
  if seen[id] then twice = true end
  seen[id] = true
end
for k = 1, n do
  if string.sub(ARGV[4 + 2 * k], 1, #head) ~= head then
    return redis.error_reply('JOBFARM_ARGUMENT entry of ' .. ids[k] .. ' does not start with "' .. head .. '": nothing was enqueued')
  end
end
-- Ids in use: one HMGET of `pending`, one EXISTS of the job keys; a look per job only when those find some.
local found = redis.call('HMGET', PK, unpack(ids))
local any_key = redis.call('EXISTS', unpack(jks)) > 0
local any_found = false
for k = 1, n do if found[k] then any_found = true; break end end
local skewed = math.abs((tonumber(qt) or 0) - NOW) > 250
if not (any_found or any_key or twice or skewed) then
  redis.call('HSET', PK, unpack(ARGV, 5, 4 + 2 * n))
  redis.call('LPUSH', TK, unpack(ids))
  wake(tier)
  redis.call('HINCRBY', P .. 'stats', 'enqueued', n)
  count_enqueued(n)
  return n
end
local fields, list, taken, out = {}, {}, {}, {}
local pre = skewed and (NOW .. ' ' .. tier .. ' ') or nil
for k = 1, n do
  local id = ids[k]
  if not taken[id] and not found[k] and not (any_key and redis.call('EXISTS', jks[k]) == 1) then
    taken[id] = true
    fields[#fields + 1] = id
    fields[#fields + 1] = pre and (pre .. string.sub(ARGV[4 + 2 * k], #head + 1)) or ARGV[4 + 2 * k]
    list[#list + 1] = id
    out[k] = id
  else
    out[k] = {id}  -- a duplicate: the id in use
  end
end
if #list > 0 then
  redis.call('HSET', PK, unpack(fields))
  redis.call('LPUSH', TK, unpack(list))
  wake(tier)
  redis.call('HINCRBY', P .. 'stats', 'enqueued', #list)
  count_enqueued(#list, fields)
end
if #list == n then return n end
return out
