import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// Jobs enqueued to run now have no key of their own until they are leased (docs/PROTOCOL.md §3a): everything a
/// producer relies on must work for them all the same.
@Suite("Pending jobs (no key per job until leased)", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct PendingJobTests {
    struct Queue {
        let farm: JobFarm
        let client: RedisClient
        let keys: QueueKeys

        init() throws {
            farm = try TestRedis.farm()
            client = RedisClient(configuration: farm.configuration.redis)
            keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        }

        @discardableResult
        func raw(_ arguments: String...) async throws -> RESPValue { try await client.send([RedisCommand(arguments)])[0] }

        func fetch(_ count: Int = 10) async throws -> [LeasedJob] {
            try await farm.fetch(queue: "default", count: count, worker: "w", on: client)
        }

        func depth(_ tier: String = "standard") async throws -> Int { try await raw("LLEN", keys.tier(tier)).int ?? -1 }
        func enqueuedCounter() async throws -> Int { try await farm.stats(queues: ["default"])[0].counters["enqueued"] ?? 0 }
    }

    @Test func anEnqueuedJobHasNoKeyOfItsOwnUntilItIsLeased() async throws {
        let q = try Queue()
        let ids = try await q.farm.enqueue((0..<3).map { index in
            EnqueueRequest(kind: "echo", tier: "premium", payload: .object(["n": .number(Double(index))]), maxAttempts: 7)
        })
        for id in ids { #expect(try await q.raw("EXISTS", q.keys.job(id)).int == 0) }
        #expect(try await q.raw("HLEN", q.keys.pending).int == 3)
        let status = try #require(try await q.farm.status(id: ids[0]))
        #expect(status.state == .queued)
        #expect(status.kind == "echo")
        #expect(status.tier == "premium")
        #expect(status.maxAttempts == 7)
        #expect(status.attempts == 0)
        #expect(status.enqueuedAt != nil)
        #expect(try await q.farm.status(id: ids[1], queue: "default")?.state == .queued)

        let jobs = try await q.fetch()
        #expect(jobs.map(\.id) == ids)
        #expect(jobs.allSatisfy { $0.attempt == 1 && $0.token == "1" && $0.tier == "premium" })
        #expect(try await q.raw("HLEN", q.keys.pending).int == 0)
        let running = try #require(try await q.farm.status(id: ids[0]))
        #expect(running.state == .running)
        #expect(running.attempts == 1)
        #expect(running.kind == "echo")
        #expect(running.tier == "premium")
        let qt = try #require(try await q.raw("HGET", q.keys.job(ids[0]), "qt").string.flatMap { Int64($0) })
        #expect(qt > 0, "the enqueue time comes with the record")
    }

    /// The dispatcher's outbox re-sends a submission under the same id: that must never make a second run, whatever
    /// became of the first (pending, leased, finished, cancelled), also twice in one bulk call.
    @Test func anEnqueueRepeatedWithTheSameIdIsANoOp() async throws {
        let q = try Queue()
        let request = { (id: String) in EnqueueRequest(kind: "echo", id: id) }
        // Pending, and twice in one call.
        #expect(try await q.farm.enqueue([request("p-1"), request("p-1")]) == ["p-1", "p-1"])
        #expect(try await q.farm.enqueue(request("p-1")) == "p-1")
        #expect(try await q.depth() == 1)
        #expect(try await q.enqueuedCounter() == 1)
        // Leased.
        let leased = try await q.fetch()
        #expect(leased.map(\.id) == ["p-1"])
        #expect(try await q.farm.enqueue(request("p-1")) == "p-1")
        #expect(try await q.depth() == 0)
        #expect(try await q.fetch().isEmpty)
        // Finished.
        #expect(try await q.farm.report([(leased[0], .succeeded(result: "1"))], queue: "default", on: q.client).isEmpty)
        #expect(try await q.farm.enqueue(request("p-1")) == "p-1")
        #expect(try await q.fetch().isEmpty)
        #expect(try await q.farm.status(id: "p-1")?.state == .succeeded)
        // Cancelled while pending.
        try await q.farm.enqueue(request("p-2"))
        #expect(try await q.farm.cancel(id: "p-2") == .cancelled)
        #expect(try await q.farm.enqueue(request("p-2")) == "p-2")
        #expect(try await q.fetch().isEmpty)
        #expect(try await q.farm.status(id: "p-2")?.state == .cancelled)
        // Delayed (a job hash from the start), then the same id to run now.
        try await q.farm.enqueue(EnqueueRequest(kind: "echo", delay: .seconds(30), id: "p-3"))
        #expect(try await q.farm.enqueue(request("p-3")) == "p-3")
        #expect(try await q.depth() == 0)
        #expect(try await q.farm.status(id: "p-3")?.state == .scheduled)
        #expect(try await q.enqueuedCounter() == 3)
    }

    @Test func idempotencyKeysWorkForPendingJobs() async throws {
        let q = try Queue()
        let first = try await q.farm.enqueue(EnqueueRequest(kind: "echo", idempotencyKey: "order-1"))
        let again = try await q.farm.enqueue([EnqueueRequest(kind: "echo", idempotencyKey: "order-1"),
                                              EnqueueRequest(kind: "echo", idempotencyKey: "order-2")])
        #expect(again[0] == first)
        #expect(again[1] != first)
        #expect(try await q.depth() == 2)
        #expect(try await q.fetch().map(\.id) == [first, again[1]])
        #expect(try await q.farm.enqueue(EnqueueRequest(kind: "echo", idempotencyKey: "order-1")) == first)
        #expect(try await q.fetch().isEmpty)
    }

    /// A pending job cancelled never runs; a waiter is told (the event is published); its record says cancelled.
    @Test func aCancelledPendingJobNeverRunsAndItsWaiterIsTold() async throws {
        let q = try Queue()
        let id = try await q.farm.enqueue(EnqueueRequest(kind: "echo", tier: "free"))
        let other = try await q.farm.enqueue(EnqueueRequest(kind: "echo", tier: "free"))
        let waiter = Task { try await q.farm.wait(for: id, timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(200))  // subscribed and waiting
        let clock = ContinuousClock()
        let asked = clock.now
        #expect(try await q.farm.cancel(id: id) == .cancelled)
        let ended = try await waiter.value
        #expect(ended.state == .cancelled)
        #expect(clock.now - asked < .seconds(4), "woken by the event, not by the 5 s re-read")
        #expect(ended.error == "cancelled by request")
        #expect(ended.kind == "echo")
        #expect(try await q.depth("free") == 1, "the id left the list")
        #expect(try await q.raw("HEXISTS", q.keys.pending, id).int == 0)
        #expect(try await q.fetch().map(\.id) == [other])
        #expect(try await q.farm.cancel(id: id) == .alreadyFinished)
        #expect(try await q.farm.stats(queues: ["default"])[0].counters["cancelled"] == 1)
    }

    /// Cancelled into the dead letters while pending, then requeued: it runs. A pending job enqueued under the id of a
    /// dead letter whose record expired makes `requeue` refuse (the id is in use).
    @Test func aPendingJobCancelledIntoTheDeadLettersCanBeRequeued() async throws {
        let q = try Queue()
        let id = try await q.farm.enqueue(EnqueueRequest(kind: "echo", tier: "premium"))
        #expect(try await q.farm.cancel(id: id, keepAsDeadLetter: true) == .cancelled)
        let letter = try #require(try await q.farm.deadLetter(id: id, queue: "default"))
        #expect(letter.reason == "cancelled")
        #expect(try await q.farm.requeue(id: id, queue: "default") == .requeued)
        let jobs = try await q.fetch()
        #expect(jobs.map(\.id) == [id])
        #expect(jobs.first?.tier == "premium")
        _ = try await q.farm.report([(jobs[0], .dead(reason: .nonRetryable, error: "no"))], queue: "default", on: q.client)
        // The record expires (retention), the id is enqueued again: pending, so requeue must not overwrite it.
        try await q.raw("DEL", q.keys.job(id))
        try await q.farm.enqueue(EnqueueRequest(kind: "echo", id: id))
        #expect(try await q.farm.requeue(id: id, queue: "default") == .conflict)
        #expect(try await q.depth() == 1)
    }

    @Test func statsCountPendingJobsAndTheirAge() async throws {
        let q = try Queue()
        try await q.farm.enqueue((0..<5).map { _ in EnqueueRequest(kind: "echo", tier: "free") })
        try await Task.sleep(for: .milliseconds(30))
        let stats = try await q.farm.stats(queues: ["default"])[0]
        let free = try #require(stats.tiers.first { $0.name == "free" })
        #expect(free.depth == 5)
        #expect(try #require(free.oldestAge) >= .milliseconds(20))
        #expect(stats.counters["enqueued"] == 5)
    }

    /// Aging reads a pending job's queue time from its entry: an old pending job of a lower tier gets its share under
    /// a premium backlog.
    @Test func anOldPendingJobOfALowerTierIsAged() async throws {
        let q = try Queue()
        let premium = try await q.farm.enqueue((0..<30).map { _ in EnqueueRequest(kind: "echo", tier: "premium") })
        // An entry written 60 s ago, as a foreign producer following §3a would.
        let now = try #require(try await q.raw("TIME").array?.first?.string.flatMap { Int64($0) }) * 1000
        let env = #"{"v":1,"id":"old-free","kind":"echo"}"#
        try await q.raw("HSET", q.keys.pending, "old-free", "\(now - 60_000) free \(env)")
        try await q.raw("LPUSH", q.keys.tier("free"), "old-free")
        let fetched = try await q.fetch(10)
        #expect(fetched.contains { $0.id == "old-free" }, "the aged tier got its share: \(fetched.map(\.id))")
        #expect(fetched.filter { premium.contains($0.id) }.count == 9)
    }
}
