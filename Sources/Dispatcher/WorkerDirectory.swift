import JobQueue
import Logging
import Synchronization

/// How many live workers serve each queue, from the worker registry the library exposes (`JobFarm.workers`),
/// read at most once per `ttl` so submissions do not each cost a registry scan.
///
/// A worker counts while its registry hash exists (its lease keeper refreshes it; it expires 3 leases after the
/// last heartbeat). A worker started without `--queues` (`*`) serves every queue. The count does not look at the
/// `kinds` the registry also records (`JobFarm.coverage(ofKind:queue:)` does): the routing table is what ties a kind
/// to the queue whose workers run it.
final class WorkerDirectory: Sendable {
    private struct Snapshot {
        var takenAt: ContinuousClock.Instant
        var byQueue: [String: Int]
        var everyQueue: Int
    }

    private let farm: JobFarm
    private let ttl: Duration
    private let logger: Logger
    private let snapshot = Mutex<Snapshot?>(nil)
    /// The registry read under way, shared by every caller that finds the count stale.
    private let refreshing = Mutex<Task<Void, Never>?>(nil)

    init(farm: JobFarm, ttl: Duration, logger: Logger) {
        self.farm = farm
        self.ttl = ttl
        self.logger = logger
    }

    /// The last count read for `queue`, without asking Redis (for answers given while Redis is away).
    func lastKnownServing(_ queue: String) -> Int {
        let cached = snapshot.withLock { $0 }
        return (cached?.byQueue[queue] ?? 0) + (cached?.everyQueue ?? 0)
    }

    /// Live workers serving `queue` (0 when the registry cannot be read: the job is accepted all the same).
    /// Concurrent callers that find the count stale share one read of the registry.
    func serving(_ queue: String) async -> Int {
        let now = ContinuousClock.now
        if let cached = snapshot.withLock({ $0 }), now - cached.takenAt < ttl {
            return cached.byQueue[queue, default: 0] + cached.everyQueue
        }
        let read: Task<Void, Never> = refreshing.withLock { refreshing in
            if let running = refreshing { return running }
            let task = Task { await self.refresh() }
            refreshing = task
            return task
        }
        await read.value
        return lastKnownServing(queue)
    }

    private func refresh() async {
        defer { refreshing.withLock { $0 = nil } }
        let now = ContinuousClock.now
        do {
            var byQueue: [String: Int] = [:]
            var everyQueue = 0
            for worker in try await farm.workers() where !worker.fields.isEmpty {
                if let queues = worker.servedQueues {
                    for name in queues { byQueue[name, default: 0] += 1 }
                } else {
                    everyQueue += 1
                }
            }
            let fresh = Snapshot(takenAt: now, byQueue: byQueue, everyQueue: everyQueue)
            snapshot.withLock { $0 = fresh }
        } catch {
            logger.warning("cannot read the worker registry", metadata: ["error": "\(error)"])
        }
    }
}
