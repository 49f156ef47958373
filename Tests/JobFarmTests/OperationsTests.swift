import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import Logging
import RedisClient
import Synchronization
import Testing

/// Pause and resume, the scheduled split of `stats`, the worker registry (live, stopped, gone) and the fetch's times.
@Suite("Operations", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct OperationsTests {
    @Test(.timeLimit(.minutes(1))) func pauseStopsFetchingAtTheNextFetchAndResumeRestartsIt() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: try TestRedis.configuration, name: "test")
        defer { client.close() }
        _ = try await farm.enqueue((0..<4).map { _ in EnqueueRequest(kind: "noop", queue: "q") })
        try await farm.pause(queue: "q")
        #expect(try await farm.fetch(queue: "q", count: 10, worker: "w", on: client).isEmpty, "the very next fetch leases nothing")
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "q"))
        #expect(try await farm.stats(queues: ["q"])[0].depth == 5, "enqueue is accepted while paused")
        #expect(try await farm.pauses(queues: ["q"]).map(\.tier) == [nil])
        #expect(try await farm.resume(queue: "q"))
        #expect(try await farm.resume(queue: "q") == false, "resuming twice: not paused any more")
        #expect(try await farm.fetch(queue: "q", count: 10, worker: "w", on: client).count == 5)
        #expect(try await farm.pauses(queues: ["q"]).isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func aPausedTierIsSkippedAndTheOthersServed() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: try TestRedis.configuration, name: "test")
        defer { client.close() }
        _ = try await farm.enqueue((0..<2).map { _ in EnqueueRequest(kind: "noop", queue: "q", tier: "premium") })
        _ = try await farm.enqueue((0..<2).map { _ in EnqueueRequest(kind: "noop", queue: "q", tier: "free") })
        try await farm.pause(queue: "q", tier: "premium")
        let first = try await farm.fetch(queue: "q", count: 10, worker: "w", on: client)
        #expect(first.map(\.tier) == ["free", "free"])
        #expect(try await farm.resume(queue: "q") == false, "the whole-queue pause is not there")
        #expect(try await farm.fetch(queue: "q", count: 10, worker: "w", on: client).isEmpty, "premium is still paused")
        #expect(try await farm.resume(queue: "q", tier: "premium"))
        #expect(try await farm.fetch(queue: "q", count: 10, worker: "w", on: client).map(\.tier) == ["premium", "premium"])
    }

    /// A worker blocked on a paused queue with jobs waits (no spin: a handful of fetches in 1.5 s) and starts them
    /// as soon as the queue is resumed, well before its idle wait (5 s) would have made it look again.
    @Test(.timeLimit(.minutes(1))) func aWorkerDoesNotSpinOnAPausedQueueAndResumeWakesIt() async throws {
        let farm = try TestRedis.farm()
        try await farm.pause(queue: "q")
        let driver = CountingDriver(RedisWorkerDriver(farm: farm))
        defer { driver.close() }
        var logger = Logger(label: "test.worker")
        logger.logLevel = .error
        let worker = Worker(
            driver: driver, registry: .builtins(),
            configuration: WorkerConfiguration(queues: ["q"], concurrency: 4, shutdownGrace: .seconds(5), idleWait: .seconds(5)),
            logger: logger)
        let task = Task { try await worker.run() }
        defer { worker.beginShutdown() }
        let ids = try await farm.enqueue((0..<3).map { _ in EnqueueRequest(kind: "noop", queue: "q") })
        try await Task.sleep(for: .milliseconds(1500))
        let calls = driver.calls
        #expect(calls <= 8, "fetch calls in 1.5 s on a paused queue with jobs: \(calls)")
        #expect(try await farm.stats(queues: ["q"])[0].depth == 3)
        let clock = ContinuousClock()
        let resumed = clock.now
        try await farm.resume(queue: "q")
        for id in ids { #expect(try await farm.wait(for: id, timeout: .seconds(10)).state == .succeeded) }
        #expect(clock.now - resumed < .seconds(3), "woken by the resume, not by the 5 s idle wait")
        worker.beginShutdown()
        try await task.value
    }

    @Test(.timeLimit(.minutes(1))) func statsSplitsScheduledIntoDelayedAndRetryingAndCountsTheDue() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: try TestRedis.configuration, name: "test")
        defer { client.close() }
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "s", delay: .seconds(60)))
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "s", delay: .milliseconds(1)))
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "s"))
        let leased = try await farm.fetch(queue: "s", count: 1, worker: "w", on: client)
        try #require(leased.count == 1)
        _ = try await farm.report([(leased[0], .retry(error: "again", delay: .seconds(60)))], queue: "s", on: client)
        try await Task.sleep(for: .milliseconds(20))
        let stats = try await farm.stats(queues: ["s"])[0]
        #expect(stats.scheduled == 3)
        #expect(stats.retrying == 1 && stats.delayed == 2 && stats.retryingIsExact)
        #expect(stats.dueNow == 1, "the 1 ms delay is due; nothing promoted it (no worker runs)")
        // The retry is counted by tier and kind (the kind kept in the job hash by fetch).
        let counts = try await farm.outcomeCounts(queues: ["s"])
        #expect(counts.filter { $0.outcome != "enqueued" } == [OutcomeCount(queue: "s", outcome: "retried", tier: "standard", kind: "noop", count: 1)])
        #expect(counts.first { $0.outcome == "enqueued" }?.count == stats.counters["enqueued"], "enqueues by tier and kind")
    }

    @Test(.timeLimit(.minutes(1))) func fetchReturnsTheServerTimesOfTheWait() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: try TestRedis.configuration, name: "test")
        defer { client.close() }
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "t"))
        try await Task.sleep(for: .milliseconds(60))
        let job = try #require(try await farm.fetch(queue: "t", count: 1, worker: "w", on: client).first)
        let wait = try #require(job.queueWait)
        #expect(wait >= .milliseconds(50) && wait < .seconds(30), "\(wait)")
        #expect(job.queuedAt != nil && job.leasedAt != nil)
    }

    @Test(.timeLimit(.minutes(1))) func theRegistryShowsLiveStoppedAndGoneWorkers() async throws {
        let farm = try TestRedis.farm()
        var logger = Logger(label: "test.worker")
        logger.logLevel = .error
        var configuration = WorkerConfiguration(
            queues: ["r"], tiersByQueue: ["r": ["premium"]], concurrency: 2, shutdownGrace: .seconds(5), idleWait: .milliseconds(200))
        configuration.pool = "ops"
        let worker = Worker(farm: farm, registry: .builtins(), configuration: configuration, logger: logger)
        let task = Task { try await worker.run() }
        let ok = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "r", tier: "premium"))
        let bad = try await farm.enqueue(EnqueueRequest(kind: "fail", queue: "r", tier: "premium", payload: .object(["retryable": .bool(false)])))
        _ = try await farm.wait(for: ok, timeout: .seconds(10))
        _ = try await farm.wait(for: bad, timeout: .seconds(10))
        try await eventually(timeout: .seconds(10), "the heartbeat to carry the counts") {
            try await farm.workerRegistry().first?.processed == 2
        }
        let live = try #require(try await farm.workerRegistry().first)
        #expect(live.state == "live" && live.pool == "ops" && live.version == JobFarmVersion.current)
        #expect(live.fields["tiers"] == "r:premium" && live.failed == 1 && live.startedAt != nil)
        worker.beginShutdown()
        try await task.value
        let stopped = try #require(try await farm.workerRegistry().first { $0.id == worker.configuration.id })
        #expect(stopped.state == "stopped" && stopped.goneAt != nil && stopped.processed == 2)
        #expect(try await farm.workers().isEmpty, "a stopped worker is not live")

        // A worker that stopped heartbeating two minutes ago: gone, with its last heartbeat as when.
        let client = RedisClient(configuration: try TestRedis.configuration, name: "test")
        defer { client.close() }
        try farm.registerWorkerBlocking(id: "ghost", info: ["pool": "ops", "busy": "1"], ttl: .seconds(30), on: client)
        let old = WallClock.nowMilliseconds() - 120_000
        _ = try await client.execute(RedisCommand("ZADD", QueueKeys.workers(namespace: farm.configuration.namespace), String(old), "ghost"))
        let all = try await farm.workerRegistry()
        let ghost = try #require(all.first { $0.id == "ghost" })
        #expect(ghost.state == "gone" && ghost.goneAt == old)
        #expect(try await farm.workers().allSatisfy { $0.id != "ghost" })
    }
}

/// A `WorkerDriver` that counts the worker's fetch calls (plain and blocking) and passes everything on.
final class CountingDriver: WorkerDriver {
    let base: RedisWorkerDriver
    private let count = Mutex(0)
    init(_ base: RedisWorkerDriver) { self.base = base }
    var calls: Int { count.withLock { $0 } }

    var leaseDuration: Duration { base.leaseDuration }
    var heartbeatInterval: Duration { base.heartbeatInterval }
    var maintenanceInterval: Duration { base.maintenanceInterval }
    var endpointDescription: String { base.endpointDescription }
    func queues() async throws -> [String] { try await base.queues() }
    func fetch(queue: String, count: Int, tiers: [String]?, worker: String) async throws -> [LeasedJob] {
        self.count.withLock { $0 += 1 }
        return try await base.fetch(queue: queue, count: count, tiers: tiers, worker: worker)
    }
    func awaitAndFetch(queues: [String], count: Int, tiers: [String: [String]], timeout: Duration, worker: String) async throws -> FetchRound {
        self.count.withLock { $0 += 1 }
        return try await base.awaitAndFetch(queues: queues, count: count, tiers: tiers, timeout: timeout, worker: worker)
    }
    func report(_ outcomes: [(job: LeasedJob, outcome: AttemptOutcome)], queue: String) async throws -> [String] {
        try await base.report(outcomes, queue: queue)
    }
    func release(_ jobs: [LeasedJob], queue: String) async throws -> Int { try await base.release(jobs, queue: queue) }
    func reportProgress(_ job: LeasedJob, fraction: Double) async throws -> Bool { try await base.reportProgress(job, fraction: fraction) }
    func renewLeasesBlocking(_ jobs: [LeasedJob]) throws -> [String: JobFarm.LeaseState] { try base.renewLeasesBlocking(jobs) }
    func registerWorkerBlocking(id: String, info: [String: String]) throws { try base.registerWorkerBlocking(id: id, info: info) }
    func deregisterWorkerBlocking(id: String) throws { try base.deregisterWorkerBlocking(id: id) }
    func reapExpiredLeases(queue: String) async throws -> ReapResult { try await base.reapExpiredLeases(queue: queue) }
    func promoteDueJobs(queue: String) async throws -> (moved: Int, nextDue: Duration?) { try await base.promoteDueJobs(queue: queue) }
    func isDrained(queues: [String]) async throws -> Bool { try await base.isDrained(queues: queues) }
    func settingsAdvice() async -> [String] { await base.settingsAdvice() }
    func close() { base.close() }
}
