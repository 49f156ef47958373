import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import RedisClient
import Testing

@Suite("Queue engine against a real Redis", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct QueueTests {
    @Test(arguments: TestRedis.servers) func redisClientPipelinesAndReloadsScripts(server: TestServer) async throws {
        let client = RedisClient(configuration: try server.configuration)
        defer { client.close() }
        let key = "t:pipe:\(JobID.make())"
        let replies = try await client.send([RedisCommand("RPUSH", key, "a", "b"), RedisCommand("LRANGE", key, "0", "-1"), RedisCommand("DEL", key)])
        #expect(replies[0] == .integer(2))
        #expect(replies[1] == .array([.bulk(Array("a".utf8)), .bulk(Array("b".utf8))]))
        let script = RedisScript(name: "echo", source: "return ARGV[1] .. '!' -- \(key)")
        #expect(try await client.run(script, keys: [], arguments: ["hi"]).string == "hi!")
        _ = try await client.execute("SCRIPT", "FLUSH")
        #expect(try await client.run(script, keys: [], arguments: ["again"]).string == "again!")  // NOSCRIPT → reloaded
        let error = try await client.send([RedisCommand("INCR", "t:notanumber:\(key)", "extra")])[0]
        #expect(error.errorMessage != nil)
    }

    @Test(arguments: TestRedis.servers) func enqueueFetchCompleteAndStatus(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let id = try await farm.enqueue(EnqueueRequest(kind: "echo", payload: .object(["x": .number(1)])))
        var status = try #require(try await farm.status(id: id))
        #expect(status.state == .queued)
        #expect(status.kind == "echo")
        #expect(status.queue == "default")
        #expect(status.tier == "standard")
        #expect(try await farm.queues() == ["default"])

        let client = RedisClient(configuration: farm.configuration.redis)
        let jobs = try await farm.fetch(queue: "default", count: 10, worker: "w1", on: client)
        #expect(jobs.count == 1)
        #expect(jobs[0].id == id)
        #expect(jobs[0].attempt == 1)
        status = try #require(try await farm.status(id: id))
        #expect(status.state == .running)
        #expect(status.worker == "w1")

        let refused = try await farm.report([(jobs[0], .succeeded(result: "{\"ok\":true}"))], queue: "default", on: client)
        #expect(refused.isEmpty)
        status = try #require(try await farm.status(id: id))
        #expect(status.state == .succeeded)
        #expect(status.result == .object(["ok": .bool(true)]))
        // Repeating the same report (a lost reply after a reconnect) is harmless.
        #expect(try await farm.report([(jobs[0], .succeeded(result: "{}"))], queue: "default", on: client).isEmpty)
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["succeeded"] == 1)
        #expect(stats.inflight == 0)
        #expect(stats.depth == 0)
    }

    /// Wake-up tokens are per tier: a worker serving only premium, blocked first, does not swallow the token of a
    /// free job; the worker serving free wakes at once instead of at its idle timeout.
    @Test(arguments: TestRedis.servers) func aTierRestrictedWorkerDoesNotTakeAnotherTiersWakeUp(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let premiumClient = RedisClient(configuration: farm.configuration.redis)
        let freeClient = RedisClient(configuration: farm.configuration.redis)
        defer {
            premiumClient.close()
            freeClient.close()
        }
        let premiumOnly = Task {
            try await farm.awaitAndFetch(queues: ["default"], count: 10, worker: "premium-only", tiers: ["default": ["premium"]],
                                         timeout: .seconds(3), on: premiumClient)
        }
        try await Task.sleep(for: .milliseconds(200))  // blocked first: Redis serves BLPOP waiters in arrival order
        let start = ContinuousClock.now
        let freeOnly = Task {
            let jobs = try await farm.awaitAndFetch(queues: ["default"], count: 10, worker: "free-only", tiers: ["default": ["free"]],
                                                    timeout: .seconds(3), on: freeClient)
            return (jobs, ContinuousClock.now - start)
        }
        try await Task.sleep(for: .milliseconds(200))
        let id = try await farm.enqueue(EnqueueRequest(kind: "noop", tier: "free"))
        let (jobs, waited) = try await freeOnly.value
        #expect(jobs.map(\.id) == [id])
        #expect(waited < .milliseconds(1500), "the free worker waited \(waited): its token went elsewhere")
        // The premium-only worker got nothing and was not woken by the free job.
        let premiumJobs = try await premiumOnly.value
        #expect(premiumJobs.isEmpty)
    }

    @Test(arguments: TestRedis.servers) func bulkEnqueueKeepsOrderAndIdempotency(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let requests = (0..<2500).map { EnqueueRequest(kind: "noop", queue: $0 % 2 == 0 ? "even" : "odd", payload: .number(Double($0))) }
        let ids = try await farm.enqueue(requests, chunkSize: 700)
        #expect(ids.count == 2500)
        #expect(Set(ids).count == 2500)
        let stats = try await farm.stats(queues: ["even", "odd"])
        #expect(stats.map(\.depth) == [1250, 1250])
        let first = try await farm.enqueue(EnqueueRequest(kind: "noop", idempotencyKey: "order-42"))
        let again = try await farm.enqueue(EnqueueRequest(kind: "noop", idempotencyKey: "order-42"))
        #expect(first == again)
        // The same caller-chosen id twice (a retried submission) makes one job.
        let fixed = try await farm.enqueue([EnqueueRequest(kind: "noop", id: "fixed-1"), EnqueueRequest(kind: "noop", id: "fixed-1")])
        #expect(fixed == ["fixed-1", "fixed-1"])
        #expect(try await farm.stats(queues: ["default"])[0].depth == 2)
    }

    @Test(arguments: TestRedis.servers) func badRequestsAreRefusedWithClearErrors(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        await #expect(throws: JobFarmError.invalidArgument("tier 'gold' is not one of premium, standard, free")) {
            try await farm.enqueue(EnqueueRequest(kind: "noop", tier: "gold"))
        }
        await #expect(throws: JobFarmError.self) { try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "bad{name}")) }
        await #expect(throws: JobFarmError.self) { try await farm.enqueue(EnqueueRequest(kind: "", queue: "q")) }
        await #expect(throws: JobFarmError.self) { try await farm.enqueue(EnqueueRequest(kind: "noop", maxAttempts: 0)) }
        #expect(try await farm.status(id: "no-such-job") == nil)
    }

    @Test(arguments: TestRedis.servers) func strictPriorityUnderLightLoad(server: TestServer) async throws {
        let farm = try TestRedis.farm(tierPolicy: .strict(agingAfter: .seconds(10)), on: server)
        let free = try await farm.enqueue(EnqueueRequest(kind: "noop", tier: "free"))
        let standard = try await farm.enqueue(EnqueueRequest(kind: "noop", tier: "standard"))
        let premium = try await farm.enqueue(EnqueueRequest(kind: "noop", tier: "premium"))
        let premium2 = try await farm.enqueue(EnqueueRequest(kind: "noop", tier: "premium"))
        let client = RedisClient(configuration: farm.configuration.redis)
        var order: [String] = []
        for _ in 0..<4 { order += try await farm.fetch(queue: "default", count: 1, worker: "w", on: client).map(\.id) }
        #expect(order == [premium, premium2, standard, free])
        // One fetch of several takes them in the same order.
        let ids = try await farm.enqueue([EnqueueRequest(kind: "noop", tier: "free"), EnqueueRequest(kind: "noop", tier: "premium")])
        #expect(try await farm.fetch(queue: "default", count: 5, worker: "w", on: client).map(\.id) == [ids[1], ids[0]])
    }

    @Test(arguments: TestRedis.servers) func agedLowerTierIsServedUnderAPremiumFlood(server: TestServer) async throws {
        let farm = try TestRedis.farm(tierPolicy: .strict(agingAfter: .milliseconds(300)), on: server)
        let client = RedisClient(configuration: farm.configuration.redis)
        let free = try await farm.enqueue(EnqueueRequest(kind: "noop", tier: "free"))
        // A sustained flood: premium work is always waiting, and each fetch takes one job.
        var served: [String] = []
        let clock = ContinuousClock()
        let start = clock.now
        while !served.contains(free) && clock.now - start < .seconds(5) {
            _ = try await farm.enqueue((0..<5).map { _ in EnqueueRequest(kind: "noop", tier: "premium") })
            served += try await farm.fetch(queue: "default", count: 1, worker: "w", on: client).map(\.id)
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(served.contains(free), "the free job starved under the premium flood")
        _ = start
        let status = try #require(try await farm.status(id: free))
        let waited = try #require(status.startedAt) - (status.enqueuedAt ?? 0)
        #expect(waited >= 295, "it must wait its aging time (300 ms), not jump the queue; waited \(waited) ms")
        #expect(served.count > 10)
    }

    /// Aging guarantees that a lower tier is served, not that it takes over: with a backlog in every tier below premium
    /// and premium work arriving at half the fetch rate, premium's wait stays bounded (aged tiers get one job per
    /// `agedShare` fetched) while standard and free are still served.
    @Test(arguments: TestRedis.servers) func agingGivesLowerTiersABoundedShareUnderAFloodInEveryTier(server: TestServer) async throws {
        let farm = try TestRedis.farm(tierPolicy: .strict(agingAfter: .milliseconds(300), agedShare: 5), on: server)
        let client = RedisClient(configuration: farm.configuration.redis)
        defer { client.close() }
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        for tier in ["standard", "free"] {
            _ = try await farm.enqueue((0..<400).map { _ in EnqueueRequest(kind: "noop", tier: tier) })
        }
        var served: [String: Int] = [:]
        var premiumWaits: [Int64] = []
        let clock = ContinuousClock()
        let start = clock.now
        var step = 0
        while clock.now - start < .seconds(3) {
            if step % 2 == 0 { _ = try await farm.enqueue(EnqueueRequest(kind: "noop", tier: "premium")) }
            for job in try await farm.fetch(queue: "default", count: 1, worker: "w", on: client) {
                served[job.tier, default: 0] += 1
                if job.tier == "premium" {
                    let times = try await client.execute("HMGET", keys.job(job.id), "qt", "started").array ?? []
                    premiumWaits.append(Int64(times[1].int ?? 0) - Int64(times[0].int ?? 0))
                }
            }
            step += 1
            try await Task.sleep(for: .milliseconds(5))
        }
        let enqueuedPremium = (step + 1) / 2
        #expect(premiumWaits.count >= enqueuedPremium - 2, "premium starved: \(premiumWaits.count) of \(enqueuedPremium) served")
        #expect((premiumWaits.max() ?? .max) < 500, "premium waited up to \(premiumWaits.max() ?? -1) ms behind aged tiers")
        #expect(served["standard", default: 0] >= 3 && served["free", default: 0] >= 3, "lower tiers not served: \(served)")
    }

    @Test(arguments: TestRedis.servers) func weightedPolicyServesEveryTier(server: TestServer) async throws {
        let farm = try TestRedis.farm(tierPolicy: .weighted(["premium": 6, "standard": 3, "free": 1]), on: server)
        let client = RedisClient(configuration: farm.configuration.redis)
        var tiers: [String: Int] = [:]
        for tier in ["premium", "standard", "free"] {
            _ = try await farm.enqueue((0..<400).map { _ in EnqueueRequest(kind: "noop", tier: tier) })
        }
        for _ in 0..<400 {
            for job in try await farm.fetch(queue: "default", count: 1, worker: "w", on: client) { tiers[job.tier, default: 0] += 1 }
        }
        #expect(tiers.values.reduce(0, +) == 400)
        #expect((tiers["free"] ?? 0) > 10, "free got \(tiers)")
        #expect((tiers["premium"] ?? 0) > (tiers["standard"] ?? 0))
        #expect((tiers["standard"] ?? 0) > (tiers["free"] ?? 0))
    }

    @Test(arguments: TestRedis.servers) func staleAckFromASlowWorkerIsRefused(server: TestServer) async throws {
        let farm = try TestRedis.farm(leaseDuration: .milliseconds(300), heartbeat: .milliseconds(100), on: server)
        let client = RedisClient(configuration: farm.configuration.redis)
        let id = try await farm.enqueue(EnqueueRequest(kind: "noop"))
        let slow = try #require(try await farm.fetch(queue: "default", count: 1, worker: "slow", on: client).first)
        try await Task.sleep(for: .milliseconds(400))  // the slow worker misses its heartbeats
        #expect(try await farm.reapExpiredLeases(queue: "default", on: client).requeued == 1)
        let status = try #require(try await farm.status(id: id))
        #expect(status.state == .queued)
        #expect(status.leaseLosses == 1)
        let fresh = try #require(try await farm.fetch(queue: "default", count: 1, worker: "fresh", on: client).first)
        #expect(fresh.id == id)
        #expect(fresh.token != slow.token)
        // The slow worker finally finishes: its result is refused, the new run's is kept.
        #expect(try await farm.report([(slow, .succeeded(result: "\"stale\""))], queue: "default", on: client) == [id])
        #expect(try await farm.renewBlocking([slow], on: client)[id] == .lost)
        #expect(try await farm.report([(fresh, .succeeded(result: "\"fresh\""))], queue: "default", on: client).isEmpty)
        let final = try #require(try await farm.status(id: id))
        #expect(final.state == .succeeded)
        #expect(final.result == .string("fresh"))
        #expect(final.history.contains { $0.outcome == "lease_lost" && $0.worker == "slow" })
    }

    @Test(arguments: TestRedis.servers) func heartbeatsKeepASlowJobsLease(server: TestServer) async throws {
        let farm = try TestRedis.farm(leaseDuration: .milliseconds(400), heartbeat: .milliseconds(100), on: server)
        let id = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(1.5)])))
        try await withWorker(farm: farm) { _ in
            let status = try await farm.wait(for: id, timeout: .seconds(10))
            #expect(status.state == .succeeded)
            #expect(status.leaseLosses == 0)
            #expect(status.attempts == 1)
        }
    }

    @Test(arguments: TestRedis.servers) func poisonAfterRepeatedLeaseLosses(server: TestServer) async throws {
        let farm = try TestRedis.farm(leaseDuration: .milliseconds(100), heartbeat: .milliseconds(50), maxLeaseLosses: 3, on: server)
        let client = RedisClient(configuration: farm.configuration.redis)
        let id = try await farm.enqueue(EnqueueRequest(kind: "noop"))
        for round in 1...3 {
            #expect(try await farm.fetch(queue: "default", count: 1, worker: "crashy-\(round)", on: client).count == 1)
            try await Task.sleep(for: .milliseconds(150))
            _ = try await farm.reapExpiredLeases(queue: "default", on: client)
        }
        let status = try #require(try await farm.status(id: id))
        #expect(status.state == .dead)
        #expect(status.reason == "poison")
        let letter = try #require(try await farm.deadLetter(id: id, queue: "default"))
        #expect(letter.reason == "poison")
        #expect(letter.history.count == 3)
        #expect(letter.history.allSatisfy { $0.outcome == "lease_lost" })
    }

    @Test(arguments: TestRedis.servers) func retriesThenDeadLetterWithHistory(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let id = try await farm.enqueue(EnqueueRequest(kind: "fail", payload: .object(["message": .string("boom")]), maxAttempts: 3))
        let status = try await withWorker(farm: farm) { _ in try await farm.wait(for: id, timeout: .seconds(10)) }
        #expect(status.state == .dead)
        #expect(status.reason == "exhausted")
        #expect(status.attempts == 3)
        let letter = try #require(try await farm.deadLetter(id: id, queue: "default"))
        #expect(letter.reason == "exhausted")
        #expect(letter.error == "boom")
        #expect(letter.kind == "fail")
        #expect(letter.history.map(\.attempt) == [1, 2, 3])
        #expect(letter.history.map(\.outcome) == ["retry", "retry", "exhausted"])
        #expect(try JobEnvelope(decoding: letter.envelope).id == id)
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["retried"] == 2)
        #expect(stats.dead == 1)
    }

    @Test(arguments: TestRedis.servers) func retryThenSuccess(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let id = try await farm.enqueue(EnqueueRequest(kind: "fail", payload: .object(["times": .number(2)])))
        let status = try await withWorker(farm: farm) { _ in try await farm.wait(for: id, timeout: .seconds(10)) }
        #expect(status.state == .succeeded)
        #expect(status.attempts == 3)
        #expect(status.result == .object(["succeeded_on_attempt": .number(3)]))
        #expect(status.history.count == 2)
    }

    @Test(arguments: TestRedis.servers) func nonRetryableGoesStraightToDeadLetters(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let id = try await farm.enqueue(EnqueueRequest(kind: "fail", payload: .object(["retryable": .bool(false), "message": .string("bad input: x")])))
        let status = try await withWorker(farm: farm) { _ in try await farm.wait(for: id, timeout: .seconds(10)) }
        #expect(status.state == .dead)
        #expect(status.reason == "non_retryable")
        #expect(status.attempts == 1)
        #expect(status.error == "bad input: x")
    }

    @Test(arguments: TestRedis.servers) func payloadThatDoesNotFitTheKindIsNonRetryable(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let id = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["secs": .number(1)])))
        let status = try await withWorker(farm: farm) { _ in try await farm.wait(for: id, timeout: .seconds(10)) }
        #expect(status.state == .dead)
        #expect(status.reason == "non_retryable")
        #expect(status.error?.contains("missing field 'seconds'") == true, "\(status.error ?? "")")
        // A field of the wrong type names the field, the type expected and what was found.
        let wrong = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .string("soon")])))
        let wrongStatus = try await withWorker(farm: farm) { _ in try await farm.wait(for: wrong, timeout: .seconds(10)) }
        #expect(wrongStatus.reason == "non_retryable")
        #expect(wrongStatus.error == "payload does not fit kind 'sleep': 'seconds' should be Double, found a string", "\(wrongStatus.error ?? "")")
    }

    @Test(arguments: TestRedis.servers) func garbageOnTheQueueIsDeadLetteredAndTheWorkerLivesOn(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        _ = try await redis(farm, "SADD", QueueKeys.registry(namespace: farm.configuration.namespace), "default")
        _ = try await redis(farm, "LPUSH", keys.tier("standard"), "total garbage \u{1}\u{2}")
        _ = try await redis(farm, "LPUSH", keys.tier("premium"), "{\"hello\": \"world\"}")
        let unknownKind = JobEnvelope(id: "unknown-kind-1", kind: "launch_rockets").encoded()
        _ = try await redis(farm, "LPUSH", keys.tier("free"), unknownKind)
        _ = try await redis(farm, "ZADD", keys.scheduled, "0", "not-a-job")
        let good = try await farm.enqueue(EnqueueRequest(kind: "echo", tier: "free", payload: .string("still alive")))
        try await withWorker(farm: farm) { _ in
            let status = try await farm.wait(for: good, timeout: .seconds(10))
            #expect(status.state == .succeeded)
            #expect(status.result == .string("still alive"))
            try await eventually { try await farm.stats(queues: ["default"])[0].dead == 4 }
        }
        let letters = try await farm.deadLetters(queue: "default")
        #expect(letters.count == 4)
        #expect(letters.allSatisfy { $0.reason == "malformed" })
        #expect(letters.contains { $0.envelope == "total garbage \u{1}\u{2}" && $0.error.contains("neither the id of a job record nor a job envelope") })
        #expect(letters.contains { $0.envelope == "{\"hello\": \"world\"}" })
        #expect(letters.contains { $0.id == "unknown-kind-1" && $0.error.contains("no handler for kind 'launch_rockets'") })
        #expect(letters.contains { $0.envelope == "not-a-job" && $0.error.contains("scheduled entry") })
        // Garbage cannot be requeued as it is; an operator can purge it.
        let report = try await farm.requeueDeadLetters(queue: "default", filter: DeadLetterFilter(reason: "malformed"))
        #expect(report.malformed.count == 3)
        #expect(report.requeued == ["unknown-kind-1"])
        #expect(try await farm.purgeDeadLetters(queue: "default", filter: DeadLetterFilter(reason: "malformed")) == 3)
        #expect(try await farm.stats(queues: ["default"])[0].dead == 0)
    }

    @Test(arguments: TestRedis.servers) func delayedJobRunsWhenDue(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let clock = ContinuousClock()
        let start = clock.now
        let id = try await farm.enqueue(EnqueueRequest(kind: "echo", payload: .number(1), delay: .milliseconds(600)))
        #expect(try await farm.status(id: id)?.state == .scheduled)
        #expect(try await farm.stats(queues: ["default"])[0].scheduled == 1)
        let status = try await withWorker(farm: farm) { _ in try await farm.wait(for: id, timeout: .seconds(10)) }
        #expect(status.state == .succeeded)
        #expect(clock.now - start >= .milliseconds(600))
        #expect(try #require(status.startedAt) - (status.enqueuedAt ?? 0) >= 590)
    }

    @Test(arguments: TestRedis.servers) func cancelPendingAndRunningJobs(server: TestServer) async throws {
        let farm = try TestRedis.farm(leaseDuration: .seconds(2), heartbeat: .milliseconds(100), on: server)
        let pending = try await farm.enqueue(EnqueueRequest(kind: "echo", delay: .seconds(30)))
        #expect(try await farm.cancel(id: pending) == .cancelled)
        #expect(try await farm.status(id: pending)?.state == .cancelled)
        #expect(try await farm.cancel(id: pending) == .alreadyFinished)
        #expect(try await farm.cancel(id: "never-enqueued", queue: "default") == .notFound)

        let queued = try await farm.enqueue(EnqueueRequest(kind: "echo", tier: "free"))
        #expect(try await farm.cancel(id: queued, keepAsDeadLetter: true) == .cancelled)
        #expect(try await farm.deadLetter(id: queued, queue: "default")?.reason == "cancelled")
        #expect(try await farm.stats(queues: ["default"])[0].depth == 0)

        let running = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(30), "steps": .number(300)])))
        try await withWorker(farm: farm) { _ in
            try await eventually { try await farm.status(id: running)?.state == .running }
            let clock = ContinuousClock()
            let asked = clock.now
            #expect(try await farm.cancel(id: running) == .cancelling)
            let status = try await farm.wait(for: running, timeout: .seconds(10))
            #expect(status.state == .cancelled)
            #expect(clock.now - asked < .seconds(2))
        }
        // The requeued dead letter runs.
        #expect(try await farm.requeue(id: queued, queue: "default") == .requeued)
        let rerun = try await withWorker(farm: farm) { _ in try await farm.wait(for: queued, timeout: .seconds(10)) }
        #expect(rerun.state == .succeeded)
    }

    @Test(arguments: TestRedis.servers) func timeoutEndsAnAttemptEvenWhenTheHandlerIgnoresCancellation(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let cooperative = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(20)]), maxAttempts: 1, timeout: .milliseconds(300)))
        let stubborn = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(2), "steps": .number(1), "blocking": .bool(true)]), maxAttempts: 1, timeout: .milliseconds(300)))
        let clock = ContinuousClock()
        let start = clock.now
        try await withWorker(farm: farm) { _ in
            for id in [cooperative, stubborn] {
                let status = try await farm.wait(for: id, timeout: .seconds(10))
                #expect(status.state == .dead)
                #expect(status.reason == "timeout")
                #expect(status.error?.contains("timed out after 300 ms") == true)
            }
            #expect(clock.now - start < .milliseconds(1900), "the timeout must not wait for the blocking handler")
        }
    }

    @Test(arguments: TestRedis.servers) func cancelOfAHandlerThatIgnoresCancellationEndsAtItsTimeout(server: TestServer) async throws {
        let farm = try TestRedis.farm(leaseDuration: .seconds(2), heartbeat: .milliseconds(100), on: server)
        let id = try await farm.enqueue(EnqueueRequest(
            kind: "sleep", payload: .object(["seconds": .number(4), "steps": .number(1), "blocking": .bool(true)]),
            maxAttempts: 1, timeout: .milliseconds(1000)))
        let clock = ContinuousClock()
        try await withWorker(farm: farm) { _ in
            try await eventually { try await farm.status(id: id)?.state == .running }
            let asked = clock.now
            #expect(try await farm.cancel(id: id) == .cancelling)
            let status = try await farm.wait(for: id, timeout: .seconds(10))
            #expect(status.state == .cancelled, "the cancel request, not the timeout, names the ending")
            #expect(clock.now - asked < .milliseconds(2500), "ended at the timeout, not when the handler returned")
        }
    }

    @Test(arguments: TestRedis.servers) func editedDeadLetterRequeueRuns(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let id = try await farm.enqueue(EnqueueRequest(kind: "fail", payload: .object(["retryable": .bool(false)])))
        try await withWorker(farm: farm) { _ in
            #expect(try await farm.wait(for: id, timeout: .seconds(10)).state == .dead)
            let letter = try #require(try await farm.deadLetter(id: id, queue: "default"))
            var envelope = try JobEnvelope(decoding: letter.envelope)
            envelope.payload = .object(["times": .number(0)])
            await #expect(throws: JobFarmError.self) { try await farm.requeue(id: id, queue: "default", editedEnvelope: "{broken") }
            #expect(try await farm.requeue(id: id, queue: "default", editedEnvelope: envelope.encoded()) == .requeued)
            let status = try await farm.wait(for: id, timeout: .seconds(10))
            #expect(status.state == .succeeded)
            #expect(status.attempts == 1)
        }
        #expect(try await farm.deadLetters(queue: "default").isEmpty)
    }

    @Test(arguments: TestRedis.servers) func progressIsPublishedToWaiters(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        let id = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(1), "steps": .number(5)])))
        let seen = ProgressLog()
        try await withWorker(farm: farm) { _ in
            let status = try await farm.wait(for: id, timeout: .seconds(10)) { seen.add($0.progress) }
            #expect(status.state == .succeeded)
        }
        let values = seen.values.compactMap { $0 }
        #expect(values.contains { $0 > 0 && $0 < 1 }, "saw \(values)")
        #expect(values == values.sorted())
    }
}

final class ProgressLog: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var items: [Double?] = []
    func add(_ value: Double?) { lock.withLock { items.append(value) } }
    var values: [Double?] { lock.withLock { items } }
}
