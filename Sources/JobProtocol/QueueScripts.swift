/// Every state transition of a job as one Lua script: each runs atomically in Redis (docs/PROTOCOL.md).
///
/// The scripts are the files in `Sources/JobProtocol/Scripts/` (`prelude.lua` plus one file per script), embedded
/// into the binary at build time (the `EmbedLuaScripts` plugin), so a client in another language loads the very same
/// text. Conventions: KEYS[1] is the queue prefix `ns:{queue}:` (every key a script touches starts with it, so all
/// share one hash slot); ARGV[1] is the queue name. Time is the server's (`TIME`), so workers on machines with
/// skewed clocks agree on lease deadlines.
public enum QueueScripts {
    /// Helpers shared by the scripts (`prelude.lua`); every script is sent as the prelude followed by its own file.
    public static let prelude = EmbeddedLuaScripts.prelude

    /// ENQUEUE: ARGV = queue, count, idempotency TTL ms, then per job: id, tier, envelope, delay ms (0 = now), idempotency key ('' = none).
    /// Returns one id per job: the new id, or the id already stored under the same job id or idempotency key.
    /// A job to run now gets no key of its own: its envelope goes into the queue's `pending` hash and its id onto
    /// its tier's list; `fetch` creates its job hash when it leases it.
    public static let enqueue = script("enqueue", EmbeddedLuaScripts.enqueue)

    /// ENQUEUE NOW: ARGV = queue, count, qt, tier, then per job: id, its `pending` entry "<qt> <tier> <envelope>".
    /// The bulk path for jobs that run now, in one tier, without idempotency keys: the entries are written as sent.
    /// Returns the number of jobs created (an id in use is a no-op, as in `enqueue`).
    public static let enqueueNow = script("enqueueNow", EmbeddedLuaScripts.enqueueNow)

    /// FETCH: ARGV = queue, count, lease ms, worker id, aging ms (0 = strict), tier count, tiers in preference order,
    /// then (optional) the aged share N: at most one job of an aged tier per N jobs fetched (default 10).
    /// Leases up to `count` jobs; returns 5 items per job: id, fencing token, attempt number, tier, envelope; when
    /// something was skipped (a key of the wrong type), one more item: an array of messages naming the keys.
    /// Garbage entries and invalid job records are dead-lettered as `malformed` on the way; stale entries (cancelled
    /// jobs) are dropped.
    public static let fetch = script("fetch", EmbeddedLuaScripts.fetch)

    /// COMPLETE: ARGV = queue, retention ms, then per job: id, fencing token, result JSON.
    /// Returns 1 per job recorded as succeeded, 0 per job whose lease was lost (the result is refused).
    public static let complete = script("complete", EmbeddedLuaScripts.complete)

    /// FAIL: ARGV = queue, retention ms, then per job: id, fencing token, outcome, error, retry delay ms.
    /// Outcome `retry` schedules another attempt; `cancelled` ends the job as cancelled; any dead-letter reason
    /// (`exhausted`, `non_retryable`, `malformed`, `timeout`, `cancelled_dead`) moves it to the dead letters.
    /// Returns 1 per job recorded, 0 per job whose lease was lost.
    public static let fail = script("fail", EmbeddedLuaScripts.fail)

    /// HEARTBEAT: ARGV = queue, lease ms, then per job: id, fencing token.
    /// Extends each lease still held; returns per job 1 (held), 0 (lost), 2 (cancel requested), 3 (cancel into the dead letters).
    public static let heartbeat = script("heartbeat", EmbeddedLuaScripts.heartbeat)

    /// PROGRESS: ARGV = queue, id, fencing token, progress (0…1). Returns 1, or 0 when the lease is lost.
    public static let progress = script("progress", EmbeddedLuaScripts.progress)

    /// REAP: ARGV = queue, limit, lease losses before poison, retention ms, [grace ms, contact gap ms].
    /// Returns expired leases to the front of their tier, or dead-letters them as `poison`; returns {requeued, poisoned,
    /// grace ms left} (plus an array of messages when a key of the wrong type made it leave a lease). With the last two
    /// arguments, lease clocks stop while nobody reaches the queue: the step notes its call in `contact`, and when the
    /// previous call is more than the gap ago (Redis was down, or no worker could reach it) it reaps nothing for
    /// `grace` ms from now, so that cut-off workers renew or report first.
    public static let reap = script("reap", EmbeddedLuaScripts.reap)

    /// PROMOTE: ARGV = queue, limit. Moves due scheduled and retrying jobs to their tier lists.
    /// Returns {moved, ms until the next due job or -1}, plus an array of messages when a key of the wrong type made
    /// it leave a job in `scheduled`.
    public static let promote = script("promote", EmbeddedLuaScripts.promote)

    /// CANCEL: ARGV = queue, id, retention ms, keep as dead letter (1/0).
    /// Returns `cancelled`, `cancelling` (running: the worker is told at its next heartbeat), `unknown`, or `final:<state>`.
    public static let cancel = script("cancel", EmbeddedLuaScripts.cancel)

    /// RELEASE: ARGV = queue, retention ms, then per job: id, fencing token. Hands leased jobs back (graceful shutdown):
    /// to the front of their tier, the interrupted attempt not counted. Returns the number released.
    public static let release = script("release", EmbeddedLuaScripts.release)

    /// REQUEUE (dead letter → queue): ARGV = queue, id, replacement envelope ('' keeps the stored one), tier ('' keeps it).
    /// Returns `requeued`, `unknown` (no such dead letter), `malformed` (no valid envelope to run; pass an edited one),
    /// or `conflict` (a live job now uses the id).
    public static let requeue = script("requeue", EmbeddedLuaScripts.requeue)

    /// PURGE: ARGV = queue, ids… Deletes dead letters (and their job records). Returns the number removed.
    public static let purge = script("purge", EmbeddedLuaScripts.purge)

    /// STATS: ARGV = queue, tier count, tiers… Returns {now, {depth, oldest qt or -1} per tier, inflight, scheduled, dead, counters…}.
    public static let stats = script("stats", EmbeddedLuaScripts.stats)

    /// BATCH CREATE (on the batch's slot, `KEYS[1]` = `ns:{batch:<b>}:`): ARGV = batch id, completion callback JSON,
    /// success callback JSON. Returns {'created'} or {'duplicate', sealed}.
    public static let batchCreate = script("batchCreate", EmbeddedLuaScripts.batchCreate)

    /// BATCH CHECK DONE: ARGV = queue, batch id, score read. Removes a batch check unless a later change queued it again.
    public static let batchCheckDone = script("batchCheckDone", EmbeddedLuaScripts.batchCheckDone)

    /// Every script, for loading and for the protocol document.
    public static let all: [(name: String, source: String)] = [
        enqueue, enqueueNow, fetch, complete, fail, heartbeat, progress, reap, promote, cancel, release, requeue, purge, stats,
        batchCreate, batchCheckDone,
    ].map { ($0.name, $0.source) }

    static func script(_ name: String, _ body: String) -> (name: String, source: String) {
        (name, prelude + body)
    }
}
