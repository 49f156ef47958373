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

/// Counts the runs of each job (a handler in the test process, so the test can read it).
final class RunCounter: Sendable {
    private let runs = Mutex<[String: Int]>([:])
    func count(_ id: String) { runs.withLock { $0[id, default: 0] += 1 } }
    var byJob: [String: Int] { runs.withLock { $0 } }
}

/// Sleeps, counting each run.
struct CountedSleepJob: JobHandler {
    struct Parameters: Codable, Sendable { var seconds: Double }
    static let kind = "counted_sleep"
    let counter: RunCounter
    func run(_ parameters: Parameters, context: JobContext) async throws -> JSONValue {
        counter.count(context.id)
        try await Task.sleep(for: .milliseconds(Int64(parameters.seconds * 1000)))
        return .bool(true)
    }
}

/// Redis going away and keys broken under a running worker.
@Suite("Outages and broken keys", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct OutageTests {
    func startWorker(_ farm: JobFarm, registry: HandlerRegistry, queues: [String], concurrency: Int, idleWait: Duration = .milliseconds(200)) -> (Worker, Task<Void, Error>) {
        var logger = Logger(label: "test.worker")
        logger.logLevel = .critical
        let worker = Worker(
            farm: farm, registry: registry,
            configuration: WorkerConfiguration(queues: queues, concurrency: concurrency, shutdownGrace: .seconds(5), idleWait: idleWait),
            logger: logger)
        return (worker, Task { try await worker.run() })
    }

    /// Jobs that finish while Redis is down for longer than the lease are recorded once when it is back: neither
    /// worker's reaper takes the leases of work that was merely cut off, and nothing runs twice.
    @Test(.timeLimit(.minutes(1))) func jobsFinishedDuringAnOutageLongerThanTheLeaseAreRecordedOnce() async throws {
        let clock = ContinuousClock()
        let began = clock.now
        let server = try OwnRedisServer(extraArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        let farm = try TestRedis.farm(
            leaseDuration: .seconds(2), heartbeat: .milliseconds(400), redis: try RedisConfiguration(url: server.url),
            maintenance: .milliseconds(100))
        let counter = RunCounter()
        var registry = HandlerRegistry()
        registry.register(CountedSleepJob(counter: counter))
        let ids = try await farm.enqueue((0..<8).map { _ in
            EnqueueRequest(kind: CountedSleepJob.kind, payload: .object(["seconds": .number(1.5)]))
        })
        let workers = [
            startWorker(farm, registry: registry, queues: ["default"], concurrency: 4),
            startWorker(farm, registry: registry, queues: ["default"], concurrency: 4),
        ]
        try await eventually(timeout: .seconds(10), "all eight jobs to run") { counter.byJob.count == 8 }
        server.stop()
        try await Task.sleep(for: .seconds(5))  // the jobs end 1.5 s in; the 2 s leases run out meanwhile
        try server.start()
        try await eventually(timeout: .seconds(15), "every job to be recorded") {
            let stats = try await farm.stats(queues: ["default"])[0]
            return (stats.counters["succeeded"] ?? 0) == 8 && stats.inflight == 0
        }
        for (worker, task) in workers {
            worker.beginShutdown()
            try await task.value
        }
        #expect(counter.byJob.values.allSatisfy { $0 == 1 }, "runs per job: \(counter.byJob.values.sorted())")
        for id in ids {
            let status = try #require(try await farm.status(id: id))
            #expect(status.state == .succeeded)
            #expect(status.attempts == 1)
            #expect(status.leaseLosses == 0)
            #expect(!status.history.contains { $0.outcome == "lease_lost" }, "\(id): \(status.history)")
        }
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["reaped"] == nil)
        #expect(clock.now - began < .seconds(30))
    }

    /// The reaper's side alone, as seen by a worker that reconnects first: after a silence longer than the gap, the
    /// leases of a worker that has not reconnected yet are left alone for the grace, then reaped as usual.
    @Test func afterASilenceTheReaperLeavesOtherWorkersLeasesAloneForTheGrace() async throws {
        let farm = try TestRedis.farm(leaseDuration: .milliseconds(300), heartbeat: .milliseconds(100))
        #expect(farm.configuration.leaseClockGap == .seconds(1))
        #expect(farm.configuration.leaseGrace == .milliseconds(2400))
        let client = RedisClient(configuration: farm.configuration.redis)
        defer { client.close() }
        let id = try await farm.enqueue(EnqueueRequest(kind: "noop"))
        #expect(try await farm.reapExpiredLeases(queue: "default", on: client).requeued == 0)  // contact noted
        _ = try #require(try await farm.fetch(queue: "default", count: 1, worker: "not-back-yet", on: client).first)
        try await Task.sleep(for: .milliseconds(1300))  // nobody reaches the queue for longer than the gap
        let silenceEnded = ContinuousClock.now
        #expect(try await farm.reapExpiredLeases(queue: "default", on: client).requeued == 0, "the expired lease waits for the grace")
        #expect(try await farm.status(id: id)?.state == .running)
        let contact = QueueKeys(namespace: farm.configuration.namespace, queue: "default").contact
        #expect(try await redis(farm, "HEXISTS", contact, "grace_until") == .integer(1))
        // The worker never comes back: once the grace is over, the lease is reaped as after a crash.
        try await eventually(timeout: .seconds(5), "the reap after the grace") {
            try await farm.reapExpiredLeases(queue: "default", on: client).requeued == 1
        }
        #expect(ContinuousClock.now - silenceEnded >= .milliseconds(2000))
        let status = try #require(try await farm.status(id: id))
        #expect(status.state == .queued)
        #expect(status.leaseLosses == 1)
    }

    /// A wake-up list of the wrong type (a foreign `SET`) makes the BLPOP fail at once: the worker sets that queue
    /// aside with a growing pause instead of spinning, and keeps serving the other queue.
    @Test func aWrongTypeWakeUpListDoesNotSpinTheWorkerOrStopOtherQueues() async throws {
        let farm = try TestRedis.farm()
        let broken = QueueKeys(namespace: farm.configuration.namespace, queue: "broken").signal(tier: "standard")
        _ = try await redis(farm, "SET", broken, "x")
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "healthy"))  // registers the queue
        func blpopCalls() async throws -> Int {
            let info = try await redis(farm, "INFO", "commandstats").string ?? ""
            guard let line = info.split(separator: "\r\n").first(where: { $0.hasPrefix("cmdstat_blpop:") }),
                let calls = line.split(separator: "calls=").last?.split(separator: ",").first
            else { return 0 }
            return Int(calls) ?? 0
        }
        var registry = HandlerRegistry()
        registry.register(NoopJob())
        let before = try await blpopCalls()
        let (worker, task) = startWorker(farm, registry: registry, queues: ["broken", "healthy"], concurrency: 4)
        try await Task.sleep(for: .seconds(2))
        let id = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "healthy"))
        let status = try await farm.wait(for: id, timeout: .seconds(5))
        let calls = try await blpopCalls() - before
        worker.beginShutdown()
        try await task.value
        #expect(status.state == .succeeded, "the healthy queue is served")
        // Idle waits of 200 ms on the healthy queue: about 12 in 2.5 s; a spin made thousands.
        #expect(calls < 60, "\(calls) BLPOPs in about 2.5 s")
        _ = try await redis(farm, "DEL", broken)
    }
}
