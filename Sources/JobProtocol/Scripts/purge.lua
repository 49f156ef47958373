-- purge.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- PURGE: ARGV = queue, ids… Deletes dead letters (and their job records). Returns the number removed.
local removed = 0
need_dead_letters()
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', P .. 'dead', id) == 1 then
    redis.call('HDEL', P .. 'dead:entries', id)
    redis.call('HDEL', P .. 'dead:env', id)
    local r = job_fields(jobkey(id), 'state')
    if r and r[1] == 'dead' then redis.call('DEL', jobkey(id)) end
    removed = removed + 1
  end
end
return removed
