import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import Logging
import Synchronization
import Testing
@testable import JobWorker

/// A queue engine in memory with a line of jobs: `fetch` leases up to `count` of them (after a short round trip),
/// and every call is recorded.
final class LineDriver: WorkerDriver {
    let line = Mutex<[LeasedJob]>([])
    let fetchCounts = Mutex<[Int]>([])
    let released = Mutex<[String]>([])
    let renewed = Mutex<[[String]]>([])
    /// What a renewal answers per id (default: held).
    let leaseStates = Mutex<[String: JobFarm.LeaseState]>([:])
    let heartbeat: Duration

    init(jobs: Int = 0, heartbeat: Duration = .seconds(2)) {
        self.heartbeat = heartbeat
        line.withLock { $0 = (0..<jobs).map { leasedJob("j\($0)") } }
    }

    var leaseDuration: Duration { .seconds(10) }
    var heartbeatInterval: Duration { heartbeat }
    var maintenanceInterval: Duration { .milliseconds(500) }
    var endpointDescription: String { "line" }

    func queues() async throws -> [String] { ["default"] }
    func fetch(queue: String, count: Int, tiers: [String]?, worker: String) async throws -> [LeasedJob] {
        fetchCounts.withLock { $0.append(count) }
        try await Task.sleep(for: .microseconds(200))
        return line.withLock { line in
            let taken = Array(line.prefix(count))
            line.removeFirst(taken.count)
            return taken
        }
    }
    func awaitAndFetch(queues: [String], count: Int, tiers: [String: [String]], timeout: Duration, worker: String) async throws -> FetchRound {
        try await Task.sleep(for: .milliseconds(5))
        return FetchRound(jobs: try await fetch(queue: "default", count: count, tiers: nil, worker: worker))
    }
    func report(_ outcomes: [(job: LeasedJob, outcome: AttemptOutcome)], queue: String) async throws -> [String] { [] }
    func release(_ jobs: [LeasedJob], queue: String) async throws -> Int {
        released.withLock { $0 += jobs.map(\.id) }
        return jobs.count
    }
    func reportProgress(_ job: LeasedJob, fraction: Double) async throws -> Bool { true }
    func renewLeasesBlocking(_ jobs: [LeasedJob]) throws -> [String: JobFarm.LeaseState] {
        renewed.withLock { $0.append(jobs.map(\.id)) }
        let states = leaseStates.withLock { $0 }
        return Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, states[$0.id] ?? .held) })
    }
    func registerWorkerBlocking(id: String, info: [String: String]) throws {}
    func deregisterWorkerBlocking(id: String) throws {}
    func reapExpiredLeases(queue: String) async throws -> ReapResult { ReapResult() }
    func promoteDueJobs(queue: String) async throws -> (moved: Int, nextDue: Duration?) { (0, nil) }
    func isDrained(queues: [String]) async throws -> Bool { line.withLock { $0.isEmpty } }
    func settingsAdvice() async -> [String] { [] }
    func close() {}
}

private var quietLogger: Logger {
    var logger = Logger(label: "test.prefetch")
    logger.logLevel = .critical
    return logger
}

private let rules = AttemptRules(attempt: 1, maxAttempts: 3, retryPolicy: .standard, timeoutMilliseconds: 60_000)

@Suite("Prefetch buffer")
struct PrefetchBufferTests {
    @Test func theTargetCoversOneRoundTripOfShortJobsAndIsZeroForLongOnes() async throws {
        let buffer = PrefetchBuffer(concurrency: 10, limit: 100)
        #expect(buffer.target() == 0, "nothing measured yet: no prefetch")
        buffer.noteRoundTrip(.microseconds(200))
        buffer.noteRun(.microseconds(50))
        // 10 slots × 200 µs ÷ 50 µs = 40 jobs per round trip.
        #expect((30...40).contains(buffer.target()), "\(buffer.target())")
        buffer.noteRun(.nanoseconds(100))
        for _ in 0..<50 { buffer.noteRun(.nanoseconds(100)) }
        #expect(buffer.target() == 100, "capped by the fetch batch")

        let long = PrefetchBuffer(concurrency: 10, limit: 100)
        long.noteRoundTrip(.microseconds(200))
        long.noteRun(.seconds(2))
        #expect(long.target() == 0, "jobs of seconds are never leased ahead")

        // Nothing finished for a while (idle, or every slot busy with a long job): no prefetch.
        try await Task.sleep(for: .milliseconds(50))
        #expect(buffer.target() == 0)
    }

    @Test func theBufferHandsOutInOrderAndCountsJobsBeingStarted() {
        let buffer = PrefetchBuffer(concurrency: 2, limit: 10)
        buffer.append((0..<5).map { leasedJob("b\($0)") })
        let taken = buffer.takeToStart(2)
        #expect(taken.map(\.id) == ["b0", "b1"])
        #expect(buffer.count == 5, "jobs being started still count until they are running")
        buffer.started(2)
        #expect(buffer.count == 3)
        #expect(buffer.take(["b3", "zz"]).map(\.id) == ["b3"])
        #expect(buffer.leased().map(\.id) == ["b2", "b4"])
        #expect(buffer.removeAll().map(\.id) == ["b2", "b4"])
        #expect(buffer.isEmpty)
    }

    @Test func shortJobsAreLeasedAheadButNeverMoreRunThanTheConcurrency() async throws {
        let driver = LineDriver(jobs: 400)
        let attempts = RunningAttempts()
        let buffer = PrefetchBuffer(concurrency: 2, limit: 50)
        buffer.noteRoundTrip(.microseconds(200))
        let stopping = Mutex(false)
        let started = Mutex<(count: Int, mostAtOnce: Int)>((0, 0))
        let loop = FetchLoop(
            driver: driver, configuration: WorkerConfiguration(queues: ["default"], concurrency: 2, fetchBatch: 50, idleWait: .milliseconds(20)),
            attempts: attempts, logger: quietLogger, buffer: buffer,
            isStopping: { stopping.withLock { $0 } }, beginShutdown: {},
            start: { job in
                let race = OutcomeRace()
                attempts.insert(job, rules: rules, deadline: .now + .seconds(60), race: race)
                let running = attempts.count
                started.withLock { $0 = ($0.count + 1, max($0.mostAtOnce, running)) }
                // A job of microseconds.
                Task {
                    await Task.yield()
                    buffer.noteRun(.microseconds(5))
                    attempts.remove(job.id, race: race)
                }
            })
        let task = Task { await loop.run() }
        try await eventually(timeout: .seconds(20), "400 jobs started") { started.withLock { $0.count } == 400 }
        stopping.withLock { $0 = true }
        attempts.slotFreed.fire()
        buffer.drained.fire()
        await task.value
        #expect(started.withLock { $0.mostAtOnce } <= 2)
        let counts = driver.fetchCounts.withLock { $0 }
        #expect(counts.contains { $0 > 2 }, "leased ahead of the 2 slots: \(counts.prefix(20))")
        #expect(counts.count < 200, "\(counts.count) fetches for 400 jobs: one round trip per free slot or two")
        #expect(driver.released.withLock { $0 }.isEmpty)
    }

    @Test func jobsBufferedAtShutdownAreHandedBackNotStarted() async throws {
        let driver = LineDriver(jobs: 100)
        let attempts = RunningAttempts()
        let buffer = PrefetchBuffer(concurrency: 1, limit: 20)
        buffer.noteRoundTrip(.milliseconds(1))
        buffer.noteRun(.microseconds(1))
        let stopping = Mutex(false)
        let started = Mutex<[String]>([])
        let loop = FetchLoop(
            driver: driver, configuration: WorkerConfiguration(queues: ["default"], concurrency: 1, fetchBatch: 20, idleWait: .milliseconds(20)),
            attempts: attempts, logger: quietLogger, buffer: buffer,
            isStopping: { stopping.withLock { $0 } }, beginShutdown: {},
            start: { job in
                // A job that runs until the end of the test.
                attempts.insert(job, rules: rules, deadline: .now + .seconds(60), race: OutcomeRace())
                started.withLock { $0.append(job.id) }
            })
        let task = Task { await loop.run() }
        try await eventually(timeout: .seconds(10), "one job running, others buffered") { started.withLock { $0.count } == 1 && buffer.count >= 1 }
        try await Task.sleep(for: .milliseconds(50))
        let buffered = buffer.leased().map(\.id)
        stopping.withLock { $0 = true }
        attempts.slotFreed.fire()
        buffer.drained.fire()
        await task.value
        #expect(started.withLock { $0 } == ["j0"], "one slot: one job running")
        #expect(driver.released.withLock { $0 } == buffered, "the buffered jobs are handed back")
        #expect(buffered.count <= 20, "at most the fetch batch ahead")
        #expect(started.withLock { $0.count } + buffered.count + driver.line.withLock { $0.count } == 100, "every leased job is started or handed back")
        #expect(buffer.isEmpty)
    }

    @Test func theLeaseKeeperRenewsBufferedJobsAndAppliesCancelsLostLeasesAndStaleness() async throws {
        let driver = LineDriver(heartbeat: .milliseconds(100))
        let attempts = RunningAttempts()
        let buffer = PrefetchBuffer(concurrency: 1, limit: 10)
        buffer.append([leasedJob("stale")])
        try await Task.sleep(for: .milliseconds(150))
        buffer.append(["held", "cancelled", "lost"].map { leasedJob($0) })
        driver.leaseStates.withLock { $0 = ["cancelled": .cancelRequested(keepAsDeadLetter: true), "lost": .lost] }
        let cancelled = Mutex<[(String, Bool)]>([])
        let handedBack = Mutex<[String]>([])
        let keeper = LeaseKeeper(
            driver: driver, attempts: attempts, workerID: "w", info: [:], logger: quietLogger,
            unreported: { [] }, processed: { 0 }, waiting: buffer,
            cancelWaiting: { job, keep in cancelled.withLock { $0.append((job.id, keep)) } },
            handBack: { job in handedBack.withLock { $0.append(job.id) } })
        try keeper.beat()
        #expect(driver.renewed.withLock { $0 } == [["held", "cancelled", "lost"]], "buffered jobs hold leases: renewed")
        #expect(handedBack.withLock { $0 } == ["stale"], "a job waiting longer than a heartbeat goes back to the line")
        #expect(cancelled.withLock { $0.map(\.0) } == ["cancelled"])
        #expect(cancelled.withLock { $0.first?.1 } == true)
        #expect(buffer.leased().map(\.id) == ["held"], "the cancelled and the lost leave the buffer")
    }
}

@Suite("Prefetch against a real Redis", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct PrefetchRedisTests {
    private func startWorker(_ farm: JobFarm, concurrency: Int, fetchBatch: Int = 100, grace: Duration = .seconds(5)) -> (Worker, Task<Void, any Error>) {
        let worker = Worker(
            farm: farm, registry: .builtins(),
            configuration: WorkerConfiguration(
                queues: ["default"], concurrency: concurrency, fetchBatch: fetchBatch, shutdownGrace: grace, idleWait: .milliseconds(200)),
            logger: quietLogger)
        return (worker, Task { try await worker.run() })
    }

    /// Short jobs first, so that the worker leases ahead, then long ones: some of those wait in the buffer.
    private func enqueueShortThenLong(_ farm: JobFarm, short: Int, long: Int, seconds: Double) async throws -> [String] {
        let requests = (0..<short).map { _ in EnqueueRequest(kind: "noop") }
            + (0..<long).map { _ in EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(seconds)])) }
        return Array(try await farm.enqueue(requests).suffix(long))
    }

    @Test(.timeLimit(.minutes(1)))
    func bufferedJobsAreRenewedCancelledAndHandedBackAtShutdownWithoutCountingAnAttempt() async throws {
        let farm = try TestRedis.farm(heartbeat: .seconds(1))
        let ids = try await enqueueShortThenLong(farm, short: 300, long: 5, seconds: 20)
        let (worker, task) = startWorker(farm, concurrency: 1, grace: .milliseconds(200))
        try await eventually(timeout: .seconds(20), "a long job running and others buffered") {
            // Only long jobs left in the buffer: mid-drain, a short job may run with short ones buffered behind it.
            worker.attempts.count == 1 && worker.buffer.count >= 2 && Set(worker.buffer.leased().map(\.id)).isSubset(of: Set(ids))
        }
        let buffered = worker.buffer.leased().map(\.id)
        #expect(Set(buffered).isSubset(of: Set(ids)))
        // A cancel request reaches a buffered job at the next heartbeat: recorded as cancelled, never run.
        let target = try #require(buffered.first)
        _ = try await farm.cancel(id: target)
        try await eventually(timeout: .seconds(5), "the buffered job cancelled") { try await farm.status(id: target)?.state == .cancelled }
        let waiting = worker.buffer.leased().map(\.id)
        #expect(!waiting.contains(target))
        // Shutdown: the running job is cancelled and handed back; the buffered ones are handed back unstarted.
        worker.beginShutdown()
        try await task.value
        for id in ids where id != target {
            let status = try #require(try await farm.status(id: id))
            #expect(status.state == .queued, "\(id): \(status.state)")
            #expect(status.attempts == 0, "\(id): a handed-back attempt is not counted (\(status.attempts))")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func twoWorkersShareFourLongJobsTwoAndTwo() async throws {
        let farm = try TestRedis.farm(heartbeat: .milliseconds(500))
        let ids = try await enqueueShortThenLong(farm, short: 300, long: 4, seconds: 2)
        let (first, firstTask) = startWorker(farm, concurrency: 2)
        let (second, secondTask) = startWorker(farm, concurrency: 2)
        try await eventually(timeout: .seconds(30), "the long jobs done") {
            var done = 0
            for id in ids where try await farm.status(id: id)?.state == .succeeded { done += 1 }
            return done == 4
        }
        var byWorker: [String: Int] = [:]
        for id in ids { byWorker[try await farm.status(id: id)?.worker ?? "?", default: 0] += 1 }
        #expect(byWorker == [first.configuration.id: 2, second.configuration.id: 2], "\(byWorker)")
        first.beginShutdown()
        second.beginShutdown()
        try await firstTask.value
        try await secondTask.value
    }
}
