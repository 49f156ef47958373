import JobProtocol
import RedisClient

/// The protocol's Lua scripts as `RedisScript`s (loaded once per connection, run by SHA).
enum Scripts {
    static let enqueue = make(QueueScripts.enqueue)
    static let enqueueNow = make(QueueScripts.enqueueNow)
    static let fetch = make(QueueScripts.fetch)
    static let complete = make(QueueScripts.complete)
    static let fail = make(QueueScripts.fail)
    static let heartbeat = make(QueueScripts.heartbeat)
    static let progress = make(QueueScripts.progress)
    static let reap = make(QueueScripts.reap)
    static let promote = make(QueueScripts.promote)
    static let cancel = make(QueueScripts.cancel)
    static let release = make(QueueScripts.release)
    static let requeue = make(QueueScripts.requeue)
    static let purge = make(QueueScripts.purge)
    static let stats = make(QueueScripts.stats)
    static let batchCreate = make(QueueScripts.batchCreate)
    static let batchCheckDone = make(QueueScripts.batchCheckDone)

    static let runCreate = make(RunScripts.create)
    static let runAdvance = make(RunScripts.advance)
    static let runItems = make(RunScripts.items)
    static let runCancel = make(RunScripts.cancel)

    /// Every script, for loading them all at once.
    static let all = [enqueue, enqueueNow, fetch, complete, fail, heartbeat, progress, reap, promote, cancel, release, requeue, purge, stats]

    private static func make(_ script: (name: String, source: String)) -> RedisScript {
        RedisScript(name: script.name, source: script.source)
    }
}
