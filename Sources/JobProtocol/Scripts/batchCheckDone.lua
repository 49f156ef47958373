-- batchCheckDone.lua: run as EVAL/EVALSHA of prelude.lua followed by this file; KEYS[1] = the queue prefix `jf:{<queue>}:`, ARGV[1] = the queue name.
-- BATCH CHECK DONE: ARGV = queue, batch id, the check's score as the checker read it (the part's version then).
-- Removes the check only if no change of the part queued it again since (its score is still the one read), so a
-- check is never lost to a checker that looked before the part's last change. Returns 1 if removed, else 0.
local ck = P .. 'batch-checks'
need(ck, 'zset')
local score = redis.call('ZSCORE', ck, ARGV[2])
if score and tonumber(score) == tonumber(ARGV[3]) then
  redis.call('ZREM', ck, ARGV[2])
  return 1
end
return 0
