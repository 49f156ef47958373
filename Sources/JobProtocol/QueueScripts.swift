/// Every state transition of a job as one Lua script: each runs atomically in Redis (docs/PROTOCOL.md).
///
/// Conventions: KEYS[1] is the queue prefix `ns:{queue}:` (every key a script touches starts with it, so all
/// share one hash slot); ARGV[1] is the queue name. Time is the server's (`TIME`), so workers on machines with
/// skewed clocks agree on lease deadlines.
public enum QueueScripts {
    /// Helpers shared by the scripts.
    static let prelude = #"""
        local P = KEYS[1]
        local Q = ARGV[1]
        local T = redis.call('TIME')
        local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
        local function jobkey(id) return P .. 'job:' .. id end
        -- One wake-up token per tier (a list of at most one element): idle workers block on the tiers they serve,
        -- so a worker that cannot take a job never swallows the token meant for one that can.
        local WOKEN = {}
        local function wake(tier)
          tier = tier or 'standard'
          if WOKEN[tier] then return end
          WOKEN[tier] = true
          redis.call('LPUSH', P .. 'signal:' .. tier, '1')
          redis.call('LTRIM', P .. 'signal:' .. tier, 0, 0)
        end
        -- Events go out only while someone listens (a waiter, the dispatcher): a PUBLISH per job is not free.
        local LISTENING = nil
        local function publish(id, what)
          if LISTENING == nil then
            LISTENING = redis.call('PUBSUB', 'NUMPAT') > 0 or redis.call('PUBSUB', 'NUMSUB', P .. 'events')[2] > 0
          end
          if LISTENING then redis.call('PUBLISH', P .. 'events', id .. ' ' .. what) end
        end
        local function add_history(jk, record)
          local h = redis.call('HGET', jk, 'history')
          if h then h = h .. '\n' .. record else h = record end
          redis.call('HSET', jk, 'history', h)
        end
        -- Moves a job (or a raw queue entry, when jk is nil) to the dead letters with a reason.
        local function dead_letter(id, jk, reason, err, raw, retention)
          local env, attempts, history, kind = raw, 0, nil, nil
          if jk then
            local r = redis.call('HMGET', jk, 'env', 'attempts', 'history')
            env = r[1] or raw or ''
            attempts = tonumber(r[2]) or 0
            history = r[3]
            redis.call('HSET', jk, 'state', 'dead', 'finished', NOW, 'error', err, 'reason', reason)
            redis.call('HDEL', jk, 'worker', 'cancel')
            if retention > 0 then redis.call('PEXPIRE', jk, retention) end
          end
          local ok, obj = pcall(cjson.decode, env)
          if ok and type(obj) == 'table' and type(obj.kind) == 'string' then kind = obj.kind end
          local meta = cjson.encode({id = id, queue = Q, reason = reason, error = err, dead_at = NOW,
                                     attempts = attempts, kind = kind})
          local lines = {}
          if history then for line in string.gmatch(history, '[^\n]+') do lines[#lines + 1] = line end end
          meta = string.sub(meta, 1, -2) .. ',"history":[' .. table.concat(lines, ',') .. ']}'
          redis.call('HSET', P .. 'dead:entries', id, meta)
          redis.call('HSET', P .. 'dead:env', id, env)
          redis.call('ZADD', P .. 'dead', NOW, id)
          redis.call('HINCRBY', P .. 'stats', 'dead', 1)
          publish(id, 'dead')
        end
        -- Ends a job as cancelled (keep = '2' keeps it as a dead letter, reason `cancelled`).
        local function finish_cancelled(id, jk, keep, retention)
          if keep == '2' then
            dead_letter(id, jk, 'cancelled', 'cancelled by request', nil, retention)
            return
          end
          redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW, 'error', 'cancelled by request')
          redis.call('HDEL', jk, 'worker', 'cancel')
          if retention > 0 then redis.call('PEXPIRE', jk, retention) end
          redis.call('HINCRBY', P .. 'stats', 'cancelled', 1)
          publish(id, 'cancelled')
        end
        local function raw_dead_letter(item, err)
          local id = 'malformed-' .. NOW .. '-' .. redis.call('HINCRBY', P .. 'stats', 'malformed', 1)
          dead_letter(id, nil, 'malformed', err, item, 0)
        end

        """#

    /// ENQUEUE: ARGV = queue, count, idempotency TTL ms, then per job: id, tier, envelope, delay ms (0 = now), idempotency key ('' = none).
    /// Returns one id per job: the new id, or the id already stored under the same job id or idempotency key.
    public static let enqueue = script("enqueue", #"""
        local n = tonumber(ARGV[2])
        local idem_ttl = tonumber(ARGV[3])
        local out, ready, added = {}, {}, 0
        for i = 0, n - 1 do
          local b = 4 + i * 5
          local id, tier, env, delay, idem = ARGV[b], ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), ARGV[b + 4]
          local jk = jobkey(id)
          local existing = nil
          if idem ~= '' then
            local ik = P .. 'idem:' .. idem
            existing = redis.call('GET', ik)
            if not existing then redis.call('SET', ik, id, 'PX', idem_ttl) end
          end
          if existing then
            out[#out + 1] = existing
          elseif redis.call('EXISTS', jk) == 1 then
            out[#out + 1] = id
          else
            if delay > 0 then
              redis.call('HSET', jk, 'env', env, 'state', 'scheduled', 'tier', tier, 'qt', NOW, 'run_at', NOW + delay)
              redis.call('ZADD', P .. 'scheduled', NOW + delay, id)
            else
              redis.call('HSET', jk, 'env', env, 'state', 'queued', 'tier', tier, 'qt', NOW)
              local list = ready[tier]
              if not list then list = {}; ready[tier] = list end
              list[#list + 1] = id
            end
            added = added + 1
            out[#out + 1] = id
          end
        end
        for tier, ids in pairs(ready) do
          for s = 1, #ids, 1000 do
            redis.call('LPUSH', P .. 't:' .. tier, unpack(ids, s, math.min(s + 999, #ids)))
          end
          wake(tier)
        end
        if added > 0 then redis.call('HINCRBY', P .. 'stats', 'enqueued', added) end

        return out
        """#)

    /// FETCH: ARGV = queue, count, lease ms, worker id, aging ms (0 = strict), tier count, tiers in preference order.
    /// Leases up to `count` jobs; returns 5 items per job: id, fencing token, attempt number, tier, envelope.
    /// Garbage entries are dead-lettered as `malformed` on the way; stale entries (cancelled jobs) are dropped.
    public static let fetch = script("fetch", #"""
        local want = tonumber(ARGV[2])
        local lease = tonumber(ARGV[3])
        local worker = ARGV[4]
        local aging = tonumber(ARGV[5])
        local nt = tonumber(ARGV[6])
        local order = {}
        if aging > 0 and nt > 1 then
          local rest = {ARGV[7]}
          for i = 2, nt do
            local tier = ARGV[6 + i]
            local oldest = redis.call('LINDEX', P .. 't:' .. tier, -1)
            local qt = oldest and redis.call('HGET', jobkey(oldest), 'qt')
            if qt and NOW - tonumber(qt) >= aging then order[#order + 1] = tier else rest[#rest + 1] = tier end
          end
          for _, tier in ipairs(rest) do order[#order + 1] = tier end
        else
          for i = 1, nt do order[i] = ARGV[6 + i] end
        end
        local out, got, leased = {}, 0, {}
        for _, tier in ipairs(order) do
          if got >= want then break end
          local lk = P .. 't:' .. tier
          while got < want do
            local items = redis.call('RPOP', lk, want - got)
            if not items then break end
            for _, item in ipairs(items) do
              local id, jk = item, jobkey(item)
              local r = redis.call('HMGET', jk, 'state', 'env', 'attempts', 'lease', 'tier')
              local state, env = r[1], r[2]
              if not state and string.sub(item, 1, 1) == '{' then
                -- An envelope pushed as it is by a foreign client: give it a job record, then lease it.
                local ok, obj = pcall(cjson.decode, item)
                if ok and type(obj) == 'table' and type(obj.id) == 'string' and type(obj.kind) == 'string'
                   and #obj.id >= 1 and #obj.id <= 128 and not string.find(obj.id, '[^%w%-_%.:]') then
                  id, jk = obj.id, jobkey(obj.id)
                  if redis.call('EXISTS', jk) == 1 then
                    raw_dead_letter(item, 'envelope id ' .. obj.id .. ' is already used by another job')
                    state = 'skip'
                  elseif type(obj.run_at) == 'number' and obj.run_at > NOW then
                    local run_at = math.floor(obj.run_at)
                    redis.call('HSET', jk, 'env', item, 'state', 'scheduled', 'tier', tier, 'qt', NOW, 'run_at', run_at)
                    redis.call('ZADD', P .. 'scheduled', run_at, obj.id)
                    redis.call('HINCRBY', P .. 'stats', 'enqueued', 1)
                    state = 'skip'
                  else
                    redis.call('HSET', jk, 'env', item, 'state', 'queued', 'tier', tier, 'qt', NOW)
                    redis.call('HINCRBY', P .. 'stats', 'enqueued', 1)
                    state, env = 'queued', item
                  end
                end
              end
              if state == 'queued' then
                local attempts = (tonumber(r[3]) or 0) + 1
                local token = (tonumber(r[4]) or 0) + 1
                if r[5] == tier then
                  redis.call('HSET', jk, 'state', 'running', 'started', NOW, 'worker', worker, 'attempts', attempts, 'lease', token)
                else
                  redis.call('HSET', jk, 'state', 'running', 'started', NOW, 'worker', worker, 'attempts', attempts, 'lease', token,
                             'tier', tier)
                end
                leased[#leased + 1] = NOW + lease
                leased[#leased + 1] = id
                out[#out + 1] = id
                out[#out + 1] = token
                out[#out + 1] = attempts
                out[#out + 1] = tier
                out[#out + 1] = env or ''
                got = got + 1
              elseif not state then
                raw_dead_letter(item, 'queue entry is neither the id of a job record nor a job envelope')
              end
            end
            -- Into `inflight` after each batch popped, so that nothing leased can miss the reaper.
            for s = 1, #leased, 1000 do
              redis.call('ZADD', P .. 'inflight', unpack(leased, s, math.min(s + 999, #leased)))
            end
            leased = {}
          end
        end
        if got >= want then
          for _, tier in ipairs(order) do
            if redis.call('LLEN', P .. 't:' .. tier) > 0 then wake(tier) end
          end
        end
        return out
        """#)

    /// COMPLETE: ARGV = queue, retention ms, then per job: id, fencing token, result JSON.
    /// Returns 1 per job recorded as succeeded, 0 per job whose lease was lost (the result is refused).
    public static let complete = script("complete", #"""
        local retention = tonumber(ARGV[2])
        local out, done = {}, 0
        for b = 3, #ARGV, 3 do
          local id, token, result = ARGV[b], ARGV[b + 1], ARGV[b + 2]
          local jk = jobkey(id)
          local r = redis.call('HMGET', jk, 'state', 'lease', 'error', 'cancel')
          if r[1] == 'running' and r[2] == token and redis.call('ZREM', P .. 'inflight', id) == 1 then
            redis.call('HSET', jk, 'state', 'succeeded', 'finished', NOW, 'result', result)
            if r[3] or r[4] then redis.call('HDEL', jk, 'error', 'cancel') end
            if retention > 0 then redis.call('PEXPIRE', jk, retention) end
            publish(id, 'succeeded')
            done = done + 1
            out[#out + 1] = 1
          elseif r[1] == 'succeeded' and r[2] == token then
            out[#out + 1] = 1
          else
            out[#out + 1] = 0
          end
        end
        if done > 0 then redis.call('HINCRBY', P .. 'stats', 'succeeded', done) end
        return out
        """#)

    /// FAIL: ARGV = queue, retention ms, then per job: id, fencing token, outcome, error, retry delay ms.
    /// Outcome `retry` schedules another attempt; `cancelled` ends the job as cancelled; any dead-letter reason
    /// (`exhausted`, `non_retryable`, `malformed`, `timeout`, `cancelled_dead`) moves it to the dead letters.
    /// Returns 1 per job recorded, 0 per job whose lease was lost.
    public static let fail = script("fail", #"""
        local retention = tonumber(ARGV[2])
        local DEAD_REASONS = {exhausted = true, non_retryable = true, malformed = true, timeout = true, poison = true, cancelled_dead = true}
        local out = {}
        for b = 3, #ARGV, 5 do
          local id, token, outcome, err, delay = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
          local jk = jobkey(id)
          local r = redis.call('HMGET', jk, 'state', 'lease', 'attempts', 'worker', 'tier', 'cancel')
          if r[1] == 'running' and r[2] == token and redis.call('ZREM', P .. 'inflight', id) == 1 then
            if not DEAD_REASONS[outcome] and outcome ~= 'retry' and outcome ~= 'cancelled' then outcome = 'exhausted' end
            add_history(jk, cjson.encode({attempt = tonumber(r[3]), at = NOW, error = err, outcome = outcome, worker = r[4]}))
            if outcome == 'retry' and r[6] then
              -- Cancelled while its last attempt was failing: no further attempt.
              finish_cancelled(id, jk, r[6], retention)
            elseif outcome == 'retry' then
              redis.call('HSET', jk, 'state', 'retrying', 'error', err)
              redis.call('HDEL', jk, 'worker')
              if delay > 0 then
                redis.call('HSET', jk, 'run_at', NOW + delay)
                redis.call('ZADD', P .. 'scheduled', NOW + delay, id)
              else
                redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
                redis.call('LPUSH', P .. 't:' .. (r[5] or 'standard'), id)
                wake(r[5])
              end
              redis.call('HINCRBY', P .. 'stats', 'retried', 1)
              publish(id, 'retrying')
            elseif outcome == 'cancelled' then
              redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW, 'error', err)
              redis.call('HDEL', jk, 'worker', 'cancel')
              if retention > 0 then redis.call('PEXPIRE', jk, retention) end
              redis.call('HINCRBY', P .. 'stats', 'cancelled', 1)
              publish(id, 'cancelled')
            else
              if outcome == 'cancelled_dead' then outcome = 'cancelled' end
              dead_letter(id, jk, outcome, err, nil, retention)
            end
            out[#out + 1] = 1
          else
            out[#out + 1] = 0
          end
        end
        return out
        """#)

    /// HEARTBEAT: ARGV = queue, lease ms, then per job: id, fencing token.
    /// Extends each lease still held; returns per job 1 (held), 0 (lost), 2 (cancel requested), 3 (cancel into the dead letters).
    public static let heartbeat = script("heartbeat", #"""
        local lease = tonumber(ARGV[2])
        local out = {}
        for b = 3, #ARGV, 2 do
          local id, token = ARGV[b], ARGV[b + 1]
          local r = redis.call('HMGET', jobkey(id), 'state', 'lease', 'cancel')
          if r[1] == 'running' and r[2] == token and redis.call('ZSCORE', P .. 'inflight', id) then
            redis.call('ZADD', P .. 'inflight', 'XX', NOW + lease, id)
            if r[3] == '1' then out[#out + 1] = 2 elseif r[3] == '2' then out[#out + 1] = 3 else out[#out + 1] = 1 end
          else
            out[#out + 1] = 0
          end
        end
        return out
        """#)

    /// PROGRESS: ARGV = queue, id, fencing token, progress (0…1). Returns 1, or 0 when the lease is lost.
    public static let progress = script("progress", #"""
        local id, token, value = ARGV[2], ARGV[3], ARGV[4]
        local r = redis.call('HMGET', jobkey(id), 'state', 'lease')
        if r[1] ~= 'running' or r[2] ~= token or not redis.call('ZSCORE', P .. 'inflight', id) then return 0 end
        redis.call('HSET', jobkey(id), 'progress', value)
        publish(id, 'progress ' .. value)
        return 1
        """#)

    /// REAP: ARGV = queue, limit, lease losses before poison, retention ms, [grace ms, contact gap ms].
    /// Returns expired leases to the front of their tier, or dead-letters them as `poison`; returns {requeued, poisoned,
    /// grace ms left}. With the last two arguments, lease clocks stop while nobody reaches the queue: the step notes
    /// its call in `contact`, and when the previous call is more than the gap ago (Redis was down, or no worker could
    /// reach it) it reaps nothing for `grace` ms from now, so that cut-off workers renew or report first.
    public static let reap = script("reap", #"""
        local limit, max_lost, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
        local grace, gap = tonumber(ARGV[5]), tonumber(ARGV[6])
        if grace and gap and grace > 0 and gap > 0 then
          local ck = P .. 'contact'
          local kind = redis.call('TYPE', ck).ok
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
          redis.call('ZREM', P .. 'inflight', id)
          local jk = jobkey(id)
          local r = redis.call('HMGET', jk, 'state', 'tier', 'worker', 'attempts', 'cancel')
          if r[1] == 'running' and r[5] then
            -- Cancel was requested and the worker died before acting on it: the cancel wins.
            finish_cancelled(id, jk, r[5], retention)
          elseif r[1] == 'running' then
            local lost = redis.call('HINCRBY', jk, 'lost', 1)
            local why = 'lease expired: worker ' .. (r[3] or '?') .. ' stopped renewing it (crashed, hung or cut off)'
            add_history(jk, cjson.encode({attempt = tonumber(r[4]), at = NOW, error = why, outcome = 'lease_lost', worker = r[3]}))
            if lost >= max_lost then
              dead_letter(id, jk, 'poison', 'lost its lease ' .. lost .. ' times; last: ' .. why, nil, retention)
              poisoned = poisoned + 1
            else
              redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
              redis.call('HDEL', jk, 'worker')
              redis.call('RPUSH', P .. 't:' .. (r[2] or 'standard'), id)
              wake(r[2])
              requeued = requeued + 1
            end
          end
        end
        if requeued > 0 then redis.call('HINCRBY', P .. 'stats', 'reaped', requeued) end
        return {requeued, poisoned, 0}
        """#)

    /// PROMOTE: ARGV = queue, limit. Moves due scheduled and retrying jobs to their tier lists.
    /// Returns {moved, ms until the next due job or -1}.
    public static let promote = script("promote", #"""
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
        """#)

    /// CANCEL: ARGV = queue, id, retention ms, keep as dead letter (1/0).
    /// Returns `cancelled`, `cancelling` (running: the worker is told at its next heartbeat), `unknown`, or `final:<state>`.
    public static let cancel = script("cancel", #"""
        local id, retention, keep = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
        local jk = jobkey(id)
        local r = redis.call('HMGET', jk, 'state', 'tier')
        local state = r[1]
        if not state then return 'unknown' end
        if state == 'running' then
          redis.call('HSET', jk, 'cancel', keep and '2' or '1')
          publish(id, 'cancelling')
          return 'cancelling'
        end
        if state == 'queued' then
          redis.call('LREM', P .. 't:' .. (r[2] or 'standard'), -1, id)
        elseif state == 'scheduled' or state == 'retrying' then
          redis.call('ZREM', P .. 'scheduled', id)
        else
          return 'final:' .. state
        end
        if keep then
          dead_letter(id, jk, 'cancelled', 'cancelled by request', nil, retention)
        else
          redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW, 'error', 'cancelled by request')
          if retention > 0 then redis.call('PEXPIRE', jk, retention) end
          redis.call('HINCRBY', P .. 'stats', 'cancelled', 1)
          publish(id, 'cancelled')
        end
        return 'cancelled'
        """#)

    /// RELEASE: ARGV = queue, retention ms, then per job: id, fencing token. Hands leased jobs back (graceful shutdown):
    /// to the front of their tier, the interrupted attempt not counted. Returns the number released.
    public static let release = script("release", #"""
        local retention = tonumber(ARGV[2])
        local released = 0
        for b = 3, #ARGV, 2 do
          local id, token = ARGV[b], ARGV[b + 1]
          local jk = jobkey(id)
          local r = redis.call('HMGET', jk, 'state', 'lease', 'tier', 'cancel')
          if r[1] == 'running' and r[2] == token and redis.call('ZREM', P .. 'inflight', id) == 1 then
            if r[4] then
              finish_cancelled(id, jk, r[4], retention)
            else
              redis.call('HINCRBY', jk, 'attempts', -1)
              redis.call('HSET', jk, 'state', 'queued', 'qt', NOW)
              redis.call('HDEL', jk, 'worker')
              redis.call('RPUSH', P .. 't:' .. (r[3] or 'standard'), id)
              wake(r[3])
              released = released + 1
            end
          end
        end
        return released
        """#)

    /// REQUEUE (dead letter → queue): ARGV = queue, id, replacement envelope ('' keeps the stored one), tier ('' keeps it).
    /// Returns `requeued`, `unknown` (no such dead letter), `malformed` (no valid envelope to run; pass an edited one),
    /// or `conflict` (a live job now uses the id).
    public static let requeue = script("requeue", #"""
        local id, edited, tier = ARGV[2], ARGV[3], ARGV[4]
        if redis.call('ZSCORE', P .. 'dead', id) == false then return 'unknown' end
        local env = edited ~= '' and edited or redis.call('HGET', P .. 'dead:env', id)
        local ok, obj = pcall(cjson.decode, env or '')
        if not (ok and type(obj) == 'table' and type(obj.kind) == 'string' and obj.id == id) then return 'malformed' end
        local jk = jobkey(id)
        local current = redis.call('HMGET', jk, 'state', 'tier')
        if current[1] and current[1] ~= 'dead' and current[1] ~= 'cancelled' then return 'conflict' end
        if tier == '' then tier = current[2] or (type(obj.tier) == 'string' and obj.tier) or 'standard' end
        redis.call('PERSIST', jk)
        redis.call('HSET', jk, 'env', env, 'state', 'queued', 'tier', tier, 'qt', NOW, 'attempts', 0, 'lost', 0)
        redis.call('HDEL', jk, 'finished', 'error', 'reason', 'result', 'worker', 'cancel', 'progress')
        redis.call('LPUSH', P .. 't:' .. tier, id)
        redis.call('ZREM', P .. 'dead', id)
        redis.call('HDEL', P .. 'dead:entries', id)
        redis.call('HDEL', P .. 'dead:env', id)
        redis.call('HINCRBY', P .. 'stats', 'requeued', 1)
        wake(tier)
        return 'requeued'
        """#)

    /// PURGE: ARGV = queue, ids… Deletes dead letters (and their job records). Returns the number removed.
    public static let purge = script("purge", #"""
        local removed = 0
        for i = 2, #ARGV do
          local id = ARGV[i]
          if redis.call('ZREM', P .. 'dead', id) == 1 then
            redis.call('HDEL', P .. 'dead:entries', id)
            redis.call('HDEL', P .. 'dead:env', id)
            if redis.call('HGET', jobkey(id), 'state') == 'dead' then redis.call('DEL', jobkey(id)) end
            removed = removed + 1
          end
        end
        return removed
        """#)

    /// STATS: ARGV = queue, tier count, tiers… Returns {now, {depth, oldest qt or -1} per tier, inflight, scheduled, dead, counters…}.
    public static let stats = script("stats", #"""
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
        """#)

    /// Every script, for loading and for the protocol document.
    public static let all: [(name: String, source: String)] = [
        enqueue, fetch, complete, fail, heartbeat, progress, reap, promote, cancel, release, requeue, purge, stats,
    ].map { ($0.name, $0.source) }

    static func script(_ name: String, _ body: String) -> (name: String, source: String) {
        (name, prelude + body)
    }
}
