import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import Logging
import RedisClient
import Synchronization
import Testing
@testable import JobWorker

private var quietLogger: Logger {
    var logger = Logger(label: "test.faults")
    logger.logLevel = .critical
    return logger
}

/// How the worker tells a fault of one queue from a fault of the whole engine, and what it does about each.
@Suite("Worker faults", .serialized, .timeLimit(.minutes(3)))
struct WorkerFaultTests {
    /// A broken queue's maintenance is retried with a growing pause, as its fetches are, not at every pass.
    @Test func maintenanceBacksOffABrokenQueueAndKeepsTheOthers() async throws {
        let driver = FakeDriver(maintenanceInterval: .milliseconds(50))
        driver.promoteBehaviour.withLock {
            $0["bad"] = { throw JobFarmError.wrongType(key: "jf:{bad}:scheduled", operation: "promote", message: "WRONGTYPE") }
        }
        let stopping = Mutex(false)
        let loop = MaintenanceLoop(driver: driver, queues: ["bad", "good"], logger: quietLogger, isStopping: { stopping.withLock { $0 } })
        let task = Task { await loop.run() }
        try await Task.sleep(for: .milliseconds(1200))
        stopping.withLock { $0 = true }
        await task.value
        let calls = driver.promotes.withLock { $0 }
        // Passes every 50–60 ms: ~20 of them. The broken queue: after 50, 100, 200, 400, 800 ms of pauses, ~5 tries.
        #expect((calls["good"] ?? 0) >= 10, "good queue maintained \(calls["good"] ?? 0) times")
        #expect((2...8).contains(calls["bad"] ?? 0), "broken queue tried \(calls["bad"] ?? 0) times in 1.2 s")
    }
}

/// The same against real Redis servers.
@Suite("Worker faults against Redis", .serialized, .timeLimit(.minutes(3)),
       .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct WorkerFaultRedisTests {
    /// A `fetch` script that fails on a key of the wrong type names the key (it was `key: ?` in the log).
    @Test func aFetchScriptErrorCarriesTheKeyItNames() async throws {
        let farm = try TestRedis.farm()
        let driver = RedisWorkerDriver(farm: farm)
        defer { driver.close() }
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        _ = try await farm.enqueue(EnqueueRequest(kind: "echo", payload: .null))
        _ = try await redis(farm, "SET", keys.inflight, "broken")
        do {
            _ = try await driver.fetch(queue: "default", count: 10, tiers: nil, worker: "w")
            Issue.record("the fetch should fail on \(keys.inflight)")
        } catch let error as QueueFetchError {
            #expect(error.key == keys.inflight, "\(error)")
            #expect(error.description.contains("redis-cli TYPE \(keys.inflight)"), "\(error)")
        }
        let round = try await driver.awaitAndFetch(queues: ["default"], count: 10, tiers: [:], timeout: .milliseconds(100), worker: "w")
        #expect(round.jobs.isEmpty)
        #expect(round.failures.map(\.key) == [keys.inflight], "\(round.failures)")
    }

    /// A read-only server (the old primary after a failover) refuses every queue alike: the fetch loop pauses as a
    /// whole instead of setting each queue aside in turn, and serves them all once the server takes writes again.
    @Test func aReadOnlyServerPausesFetchingAsAWhole() async throws {
        let server = try OwnRedisServer()
        let farm = try TestRedis.farm(redis: try RedisConfiguration(url: server.url))
        let driver = RedisWorkerDriver(farm: farm)
        defer { driver.close() }
        for queue in ["a", "b", "c"] { _ = try await farm.enqueue(EnqueueRequest(kind: "echo", queue: queue, payload: .null)) }
        let admin = RedisClient(configuration: try RedisConfiguration(url: server.url))
        defer { admin.close() }
        // A replica of a primary that does not answer: it keeps its data and refuses writes (READONLY).
        _ = try await admin.execute("REPLICAOF", "127.0.0.1", String(OwnRedisServer.freePort()))
        let started = Mutex<[String]>([])
        let stopping = Mutex(false)
        let loop = FetchLoop(
            driver: driver, configuration: WorkerConfiguration(queues: ["a", "b", "c"], concurrency: 4, idleWait: .milliseconds(100)),
            attempts: RunningAttempts(), logger: quietLogger,
            isStopping: { stopping.withLock { $0 } }, beginShutdown: {}, start: { job in started.withLock { $0.append(job.queue) } })
        let task = Task { await loop.run() }
        try await Task.sleep(for: .milliseconds(1000))
        #expect(loop.faults.isEmpty, "no queue is set aside for a fault of the whole server: \(loop.faults.keys.sorted())")
        #expect(started.withLock { $0 }.isEmpty)
        _ = try await admin.execute("REPLICAOF", "NO", "ONE")
        try await eventually(timeout: .seconds(10), "every queue served once the server takes writes") {
            started.withLock { $0.sorted() } == ["a", "b", "c"]
        }
        stopping.withLock { $0 = true }
        await task.value
        #expect(loop.faults.isEmpty)
    }

    /// A password changed under a running worker: it says once what to do and stops as the pre-flight would
    /// (exit 78), instead of retrying a refused password forever like a lost connection.
    @Test func aWorkerWhosePasswordIsRefusedAfterStartStopsWithExit78() async throws {
        let server = try OwnRedisServer(extraArguments: ["--requirepass", "s3cret"])
        server.authPassword = "s3cret"
        let url = "redis://:s3cret@127.0.0.1:\(server.port)"
        let worker = try ChildProcess(["worker", "--redis-url", url, "--queues", "default", "--log-level", "info"])
        try await eventually(timeout: .seconds(20), "the worker to start") { worker.text.contains("worker starting") }
        try await Task.sleep(for: .milliseconds(300))
        let admin = RedisClient(configuration: try RedisConfiguration(url: url))
        defer { admin.close() }
        _ = try await admin.execute("CONFIG", "SET", "requirepass", "changed")
        server.authPassword = "changed"
        _ = try await admin.execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        let status = await worker.waitForExit(timeout: .seconds(20))
        #expect(status == 78, "exit \(String(describing: status)); \(worker.text.suffix(2000))")
        #expect(worker.text.contains("Fix the password in --redis-url"), "\(worker.text.suffix(2000))")
        #expect(worker.text.components(separatedBy: "refuses this worker's credentials").count == 2, "said once")
        #expect(worker.text.contains("Redis refused the password"), "the exit message says why")
    }

    /// `jobfarm serve` checks Redis as `jobfarm worker` does: a refused password or a database out of range ends it
    /// at once (78), while an unreachable Redis is logged and the dispatcher starts anyway.
    @Test func serveFailsFastOnConfigurationErrorsAndStartsWithoutRedis() async throws {
        let testURL = try #require(TestRedis.url)
        let hostPort = testURL.replacingOccurrences(of: "redis://", with: "")
        for (url, message) in [("redis://:nope@\(hostPort)", "Redis refused the password"), (testURL + "/99", "no database 99")] {
            let run = try await CommandRun(["serve", "--redis-url", url, "--port", "0"], timeout: .seconds(20))
            #expect(run.status == 78, "\(url): exit \(String(describing: run.status)); \(run.errors)")
            #expect(run.errors.contains(message), "\(url): \(run.errors)")
            #expect(!run.output.contains("listening on"), "\(url): not served")
        }
        let unreachable = "redis://127.0.0.1:\(OwnRedisServer.freePort())"
        let serve = try ChildProcess(["serve", "--redis-url", unreachable, "--port", "0"])
        try await eventually(timeout: .seconds(20), "the dispatcher to listen") { serve.text.contains("listening on") }
        #expect(serve.text.contains("unreachable: starting anyway"), "\(serve.text)")
        serve.signal(SIGTERM)
        #expect(await serve.waitForExit(timeout: .seconds(20)) == 0, "\(serve.text)")
    }
}
