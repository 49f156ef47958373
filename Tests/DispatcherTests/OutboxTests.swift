@testable import Dispatcher
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Synchronization
import Testing

@Suite("Circuit breaker")
struct CircuitBreakerTests {
    /// A clock the test moves by hand.
    final class ManualClock: Sendable {
        let instant = Mutex(ContinuousClock.now)
        func advance(_ duration: Duration) { instant.withLock { $0 += duration } }
    }

    @Test func opensAfterTheThresholdProbesAfterTheCoolDownAndClosesOnSuccess() {
        let clock = ManualClock()
        let breaker = CircuitBreaker(settings: CircuitBreakerSettings(failureThreshold: 3, openDuration: .seconds(2)),
                                     now: { clock.instant.withLock { $0 } })
        #expect(breaker.current == .closed)
        breaker.recordFailure()
        breaker.recordFailure()
        #expect(breaker.current == .closed && breaker.allowsCall(), "two failures are under the threshold")
        breaker.recordSuccess()
        breaker.recordFailure()
        breaker.recordFailure()
        #expect(breaker.current == .closed, "a success starts the count again")
        breaker.recordFailure()
        #expect(breaker.current == .open)
        #expect(!breaker.allowsCall() && !breaker.mayAllowCall)
        #expect(breaker.retryAfterSeconds == 2)
        clock.advance(.seconds(2))
        #expect(breaker.mayAllowCall)
        #expect(breaker.allowsCall(), "the first call after the cool-down is the probe")
        #expect(breaker.current == .halfOpen)
        #expect(!breaker.allowsCall(), "one probe at a time")
        breaker.recordFailure()
        #expect(breaker.current == .open, "a failed probe opens again at once")
        #expect(!breaker.allowsCall())
        clock.advance(.seconds(2))
        #expect(breaker.allowsCall())
        breaker.recordSuccess()
        #expect(breaker.current == .closed && breaker.allowsCall())
    }

    @Test func onlyErrorsThatSayRedisIsAwayCount() {
        let breaker = CircuitBreaker(settings: CircuitBreakerSettings(failureThreshold: 1))
        breaker.record(JobFarmError.wrongType(key: "k", operation: "enqueue", message: "WRONGTYPE"))
        #expect(breaker.current == .closed, "an error reply means Redis answered")
        breaker.record(RedisCallTimedOut(limit: .seconds(1)))
        #expect(breaker.current == .open)
    }

    @Test(.timeLimit(.minutes(1)))
    func aDeadlineAnswersWithoutWaitingForABlockedCall() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        await #expect(throws: RedisCallTimedOut.self) {
            try await withDeadline(.milliseconds(100)) {
                // A call that ignores cancellation, as a blocking hiredis call does.
                usleep(1_000_000)
                return 1
            }
        }
        #expect(clock.now - start < .milliseconds(900))
        #expect(try await withDeadline(.seconds(5)) { 42 } == 42)
    }
}

@Suite("Outbox file")
struct OutboxFileTests {
    static func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-outbox-\(UUID().uuidString)/outbox.sqlite").path
    }

    static func job(_ n: Int, id: String? = nil) -> EnqueueRequest {
        EnqueueRequest(kind: "echo", queue: "default", tier: "standard", payload: .object(["n": .number(Double(n))]),
                       id: id ?? "job\(n).r1")
    }

    @Test func keepsJobsInOrderAcrossARestartEnforcesItsBoundAndIsOneProcessPerFile() async throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        do {
            let outbox = try Outbox(path: path, maxJobs: 4, maxBytes: 1 << 20)
            #expect(try await outbox.spool([Self.job(1), Self.job(2)], attempted: false, enforceBound: true))
            #expect(try await outbox.spool([Self.job(3, id: "job3.r1")], attempted: true, enforceBound: true))
            #expect(!(try await outbox.spool([Self.job(4), Self.job(5)], attempted: false, enforceBound: true)), "past the bound: refused whole")
            #expect(outbox.depth == 3)
            #expect(try await outbox.spool([Self.job(6)], attempted: true, enforceBound: false), "an attempted job is never refused")
            #expect(try await outbox.spool([Self.job(6)], attempted: true, enforceBound: false), "the same id again is one row")
            #expect(outbox.depth == 4)
            #expect(!outbox.isHealthy, "at its bound")
            #expect(throws: JobFarmError.self) { _ = try Outbox(path: path, maxJobs: 4, maxBytes: 1 << 20) }
            #expect(try await outbox.cancel(id: "job2.r1") == .cancelled)
            #expect(try await outbox.cancel(id: "nope") == .absent)
            let entry = try #require(try await outbox.entry(id: "job3.r1"))
            #expect(entry.attempted && !entry.cancelled && entry.request.payload == .object(["n": .number(3)]))
            outbox.close()
        }
        // Reopened (a restart): the rows, their order and the counts are back.
        let outbox = try Outbox(path: path, maxJobs: 4, maxBytes: 1 << 20)
        #expect(outbox.depth == 4)
        let first = try await outbox.claimOldest(2)
        #expect(first.map(\.id) == ["job1.r1", "job2.r1"])
        #expect(first.map(\.cancelled) == [false, true])
        #expect(try await outbox.cancel(id: "job1.r1") == .forwarding, "being forwarded: cancelled in Redis afterwards")
        try await outbox.finish(forwarded: first)
        await outbox.waitUntilForwarded(id: "job1.r1")
        #expect(outbox.depth == 2)
        #expect(try await outbox.claimOldest(10).map(\.id) == ["job3.r1", "job6.r1"])
        try await outbox.finish(forwarded: [])
        #expect(outbox.depth == 2, "a failed round keeps its rows")
        outbox.close()
        #expect(FileManager.default.fileExists(atPath: path), "a closed outbox that holds jobs stays")
        let again = try Outbox(path: path, maxJobs: 4, maxBytes: 1 << 20)
        try await again.finish(forwarded: try await again.claimOldest(10))
        #expect(again.depth == 0)
        again.close()
        #expect(!FileManager.default.fileExists(atPath: path), "an empty one is removed at close")
    }

    @Test func configurationFromTheEnvironment() throws {
        let configuration = try DispatcherConfiguration(environment: [
            "JOBFARM_SERVE_REPLICA": "web-2", "JOBFARM_SERVE_OUTBOX": "/tmp/x.sqlite", "JOBFARM_SERVE_OUTBOX_MAX_JOBS": "10",
            "JOBFARM_SERVE_OUTBOX_MAX_BYTES": "4096", "JOBFARM_SERVE_BREAKER_FAILURES": "5", "JOBFARM_SERVE_BREAKER_OPEN": "3s",
            "JOBFARM_SERVE_REDIS_TIMEOUT": "250ms", "JOBFARM_SERVE_EVENT_HEARTBEAT": "5s",
        ])
        #expect(configuration.outbox.resolvedReplica(port: 8080) == "web-2")
        #expect(configuration.outbox.resolvedPath(replica: "web-2") == "/tmp/x.sqlite")
        #expect(configuration.outbox.maxJobs == 10 && configuration.outbox.maxBytes == 4096)
        #expect(configuration.outbox.breaker == CircuitBreakerSettings(failureThreshold: 5, openDuration: .seconds(3), callTimeout: .milliseconds(250)))
        #expect(configuration.eventHeartbeat == .seconds(5))
        #expect(throws: JobFarmError.self) { try DispatcherConfiguration(environment: ["JOBFARM_SERVE_REPLICA": "Web_2"]) }
        #expect(throws: JobFarmError.self) { try DispatcherConfiguration(environment: ["JOBFARM_SERVE_BREAKER_OPEN": "soon"]) }
        let defaults = OutboxConfiguration()
        let replica = defaults.resolvedReplica(port: 8080)
        #expect(replica.hasSuffix("-8080") && OutboxConfiguration.isValidReplica(replica))
        #expect(defaults.resolvedPath(replica: replica) == FileManager.default.currentDirectoryPath + "/.jobfarm/outbox-\(replica).sqlite")
    }
}

@Suite("Spooling while Redis is away", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct SpoolingTests {
    @Test(.timeLimit(.minutes(1)))
    func submissionsAreSpooledShownCancelledAndForwardedWhenRedisIsBack() async throws {
        let server = try OwnRedisServer(extraArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        let farm = try TestRedis.farm(redis: try RedisConfiguration(url: server.url))
        var configuration = DispatcherConfiguration(port: 0, authentication: .disabled)
        configuration.outbox.maxJobs = 5
        configuration.outbox.breaker = CircuitBreakerSettings(failureThreshold: 1, openDuration: .milliseconds(200), callTimeout: .milliseconds(500))
        configuration.outbox.replica = "r1"
        try await withDispatcher(farm: farm, configuration: configuration) { api in
            let direct = try await api.post("/v1/jobs", #"{"kind": "echo", "payload": {"n": 0}}"#)
            #expect(direct.status == 201 && direct.json?["spooled"] == nil)
            let directID = try #require(direct.json?["id"]?.stringValue)
            #expect(directID.hasSuffix(".r1"), "the id names the replica")

            server.stop()
            let clock = ContinuousClock()
            let start = clock.now
            let spooled = try await api.post("/v1/jobs", #"{"kind": "echo", "payload": {"n": 1}}"#)
            #expect(spooled.status == 202 && spooled.json?["spooled"] == .bool(true))
            #expect(clock.now - start < .seconds(3), "answered within the Redis timeout, not after the library's retries")
            let id = try #require(spooled.json?["id"]?.stringValue)
            #expect(spooled.headers["location"] == "/v1/jobs/\(id)")
            let bulk = try await api.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "echo", "payload": {"n": 2}}, {"kind": "sleep", "payload": {"seconds": 1}, "delaySeconds": 60}]}"#)
            #expect(bulk.status == 202)
            let bulkIDs = items(bulk.json?["jobs"]).compactMap { $0["id"]?.stringValue }
            #expect(bulkIDs.count == 2)
            #expect(items(bulk.json?["jobs"]).map { $0["state"] } == [.string("queued"), .string("scheduled")])

            let shown = try await api.get("/v1/jobs/\(id)")
            #expect(shown.status == 200 && shown.json?["spooled"] == .bool(true) && shown.json?["state"] == .string("queued"))
            let cancelled = try await api.call("DELETE", "/v1/jobs/\(bulkIDs[1])")
            #expect(cancelled.json?["outcome"] == .string("cancelled"))
            #expect(try await api.get("/v1/jobs/\(bulkIDs[1])").json?["state"] == .string("cancelled"))
            let unreachable = try await api.get("/v1/jobs/\(directID)")
            #expect(unreachable.status == 503 && unreachable.headers["retry-after"] != nil, "a job in Redis cannot be read now")
            let ready = try await api.get("/readyz")
            #expect(ready.status == 200 && ready.json?["status"] == .string("spooling") && ready.json?["outboxJobs"] == .number(3))

            let tooMany = try await api.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]}"#)
            #expect(tooMany.status == 503 && tooMany.headers["retry-after"] != nil, "past the outbox's bound: refused, nothing accepted")
            let last = try await api.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "noop"}, {"kind": "noop"}]}"#)
            #expect(last.status == 202)
            let full = try await api.get("/readyz")
            #expect(full.status == 503, "Redis away and the outbox full: not ready")

            try server.start()
            var forwardedAll = false
            for _ in 0..<150 where !forwardedAll {
                forwardedAll = try await api.get("/readyz").json?["outboxJobs"] == .number(0)
                if !forwardedAll { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(forwardedAll, "the outbox is forwarded within 15 s of Redis' return")
            let forwarded = try await api.get("/v1/jobs/\(id)")
            #expect(forwarded.status == 200 && forwarded.json?["spooled"] == nil && forwarded.json?["state"] == .string("queued"))
            #expect(try await api.get("/v1/jobs/\(bulkIDs[1])").json?["state"] == .string("cancelled"), "cancelled in Redis too")
            #expect(try await api.get("/v1/jobs/\(bulkIDs[0])").json?["state"] == .string("queued"))
            let stats = try await farm.stats(queues: ["default"])
            #expect(stats.first?.depth == 5, "the direct job, the two spooled echoes and the last two noops; none refused")
            #expect(try await api.post("/v1/jobs", #"{"kind": "noop"}"#).status == 201, "straight to Redis again")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func enqueueingAnIdThatExistsMakesNoSecondJobWhetherPendingLeasedOrFinished() async throws {
        // The forwarder's exactly-once rests on this: a job forwarded twice is enqueued twice under one id.
        let farm = try TestRedis.farm()
        let job = EnqueueRequest(kind: "echo", payload: .object(["n": .number(1)]), id: "same.r1")
        #expect(try await farm.enqueue(job) == "same.r1")
        #expect(try await farm.enqueue([job, job]) == ["same.r1", "same.r1"], "pending")
        let client = RedisClient(configuration: farm.configuration.redis, name: "test")
        defer { client.close() }
        let leased = try await farm.fetch(queue: "default", count: 10, worker: "w1", on: client)
        #expect(leased.map(\.id) == ["same.r1"])
        _ = try await farm.enqueue(job)
        #expect(try await farm.fetch(queue: "default", count: 10, worker: "w1", on: client).isEmpty, "leased: nothing new to fetch")
        _ = try await farm.report([(leased[0], .succeeded(result: "{}"))], queue: "default", on: client)
        #expect(try await farm.status(id: "same.r1")?.state == .succeeded)
        _ = try await farm.enqueue(job)
        #expect(try await farm.status(id: "same.r1")?.state == .succeeded, "finished: still the one job")
        #expect(try await farm.fetch(queue: "default", count: 10, worker: "w1", on: client).isEmpty)
        #expect(try await farm.stats(queues: ["default"]).first?.depth == 0)
    }
}
