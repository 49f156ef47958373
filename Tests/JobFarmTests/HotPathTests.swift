import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// What the cheaper hot path must keep: a bulk checked whole before its first chunk is sent (its envelopes are built
/// chunk by chunk as they go), and `complete` counting the outcomes and run times of one call by tier and kind.
@Suite("Hot path", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct HotPathTests {
    @Test(.timeLimit(.minutes(1))) func aBadRequestInALaterChunkFailsTheBulkWithNothingEnqueued() async throws {
        let farm = try TestRedis.farm()
        var requests = (0..<2500).map { _ in EnqueueRequest(kind: "noop", queue: "bulk") }
        requests[2400].tier = "no-such-tier"
        await #expect(throws: JobFarmError.self) { try await farm.enqueue(requests, chunkSize: 1000) }
        #expect(try await farm.stats(queues: ["bulk"])[0].depth == 0, "the first chunks were not sent")
        requests[2400].tier = nil
        let ids = try await farm.enqueue(requests, chunkSize: 1000)
        #expect(Set(ids).count == 2500)
        #expect(try await farm.stats(queues: ["bulk"])[0].depth == 2500)
    }

    @Test(.timeLimit(.minutes(1))) func aBulkOfSeveralQueuesAndChunksAnswersEveryIdInRequestOrder() async throws {
        let farm = try TestRedis.farm()
        let requests = (0..<2100).map { index in
            var request = EnqueueRequest(kind: "noop", queue: index % 3 == 0 ? "a" : "b", delay: index % 7 == 0 ? .seconds(60) : nil)
            if index % 5 == 0 { request.id = "given-\(index)" }
            return request
        }
        let results = try await farm.enqueueReporting(requests, chunkSize: 400)
        #expect(results.count == 2100 && results.allSatisfy { !$0.duplicate })
        for index in stride(from: 0, to: 2100, by: 5) { #expect(results[index].id == "given-\(index)") }
        #expect(Set(results.map(\.id)).count == 2100)
        let status = try await farm.status(id: results[7].id, queue: "b")
        #expect(status?.state == .scheduled, "job 7 was delayed")
        // Repeated: every id already in use, nothing made twice.
        let again = try await farm.enqueueReporting(requests.enumerated().map { index, request in
            var copy = request
            copy.id = results[index].id
            return copy
        }, chunkSize: 400)
        #expect(again.allSatisfy { $0.duplicate })
    }

    @Test(.timeLimit(.minutes(1))) func oneCompleteCountsItsJobsByTierAndKindAndLeavesABadStartOutOfTheRunTime() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: try TestRedis.configuration, name: "test")
        defer { client.close() }
        var requests: [EnqueueRequest] = []
        for (tier, kind, n) in [("premium", "a", 3), ("premium", "b", 2), ("standard", "a", 4)] {
            requests += (0..<n).map { _ in EnqueueRequest(kind: kind, queue: "c", tier: tier) }
        }
        _ = try await farm.enqueue(requests)
        let jobs = try await farm.fetch(queue: "c", count: 20, worker: "w", on: client)
        #expect(jobs.count == 9)
        // A foreign client's value in one job's `started`: that job is recorded, but not counted in the run time.
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "c")
        _ = try await client.execute("HSET", keys.job(jobs[0].id), "started", "soon")
        let refused = try await farm.report(jobs.map { ($0, AttemptOutcome.succeeded(result: "null")) }, queue: "c", on: client)
        #expect(refused.isEmpty)
        let counts = try await farm.outcomeCounts(queues: ["c"]).filter { $0.outcome == "succeeded" }
            .map { "\($0.outcome) \($0.tier) \($0.kind) \($0.count)" }
        #expect(Set(counts) == ["succeeded premium a 3", "succeeded premium b 2", "succeeded standard a 4"])
        let counters = try await farm.stats(queues: ["c"])[0].counters
        #expect(counters["succeeded"] == 9)
        #expect(counters["run_count"] == 8)
    }
}
