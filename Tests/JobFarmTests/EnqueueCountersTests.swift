import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing
import WorkerPools

/// The `enqueued <tier> <kind>` counters every enqueue path keeps, and the scheduled jobs the autoscaler counts per
/// tier (against a real Redis).
@Suite("Enqueue counters and scheduled jobs by tier", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct EnqueueCountersTests {
    func enqueued(_ farm: JobFarm, _ queue: String) async throws -> [String: Int] {
        var result: [String: Int] = [:]
        for item in try await farm.outcomeCounts(queues: [queue]) where item.outcome == "enqueued" {
            result["\(item.tier) \(item.kind)"] = item.count
        }
        return result
    }

    @Test(.timeLimit(.minutes(1))) func everyEnqueuePathCountsCreatedJobsByTierAndKind() async throws {
        let farm = try TestRedis.farm()
        // The bulk path (enqueueNow: one tier, now, no idempotency key), two kinds in one call.
        let first = (0..<300).map { EnqueueRequest(kind: $0 % 3 == 0 ? "echo" : "noop", queue: "c", tier: "premium", id: "a\($0)") }
        _ = try await farm.enqueue(first)
        #expect(try await enqueued(farm, "c") == ["premium echo": 100, "premium noop": 200])
        // The same path with some ids already used (its slower branch): only the created jobs count, by kind.
        let again = (250..<350).map { EnqueueRequest(kind: $0 % 3 == 0 ? "echo" : "noop", queue: "c", tier: "premium", id: "a\($0)") }
        let results = try await farm.enqueueReporting(again)
        #expect(results.filter(\.duplicate).count == 50)
        // New: 300…349, of which 300, 303, … 348 are echo (17) and the rest noop (33).
        #expect(try await enqueued(farm, "c") == ["premium echo": 117, "premium noop": 233])
        // One kind with a repeat.
        _ = try await farm.enqueueReporting((340..<360).map { EnqueueRequest(kind: "sleep", queue: "c", tier: "free", id: "a\($0)") })
        #expect(try await enqueued(farm, "c")["free sleep"] == 10)
        // The general path: delayed, idempotency key, mixed tiers; a repeated key is not counted.
        _ = try await farm.enqueue(EnqueueRequest(kind: "echo", queue: "c", tier: "standard", delay: .seconds(60)))
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "c", tier: "standard", idempotencyKey: "k1"))
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "c", tier: "standard", idempotencyKey: "k1"))
        let counts = try await enqueued(farm, "c")
        #expect(counts["standard echo"] == 1 && counts["standard noop"] == 1, "\(counts)")
        // Together they are the queue's own counter.
        let total = try await farm.stats(queues: ["c"])[0].counters["enqueued"]
        #expect(total == counts.values.reduce(0, +), "\(counts) against \(total ?? 0)")
    }

    @Test(.timeLimit(.minutes(1))) func scheduledJobsDueCountWithTheirTierInTheAutoscalePolicy() async throws {
        // No worker runs here, so nothing moves the due jobs to their line.
        let farm = try TestRedis.farm()
        _ = try await farm.enqueue((0..<40).map { _ in EnqueueRequest(kind: "noop", queue: "s", tier: "premium", delay: .milliseconds(50)) })
        _ = try await farm.enqueue((0..<30).map { _ in EnqueueRequest(kind: "noop", queue: "s", tier: "free", delay: .milliseconds(50)) })
        // Due in an hour: beyond every target wait.
        _ = try await farm.enqueue((0..<5).map { _ in EnqueueRequest(kind: "noop", queue: "s", tier: "premium", delay: .seconds(3600)) })
        try await Task.sleep(for: .milliseconds(200))
        let pools = try PoolsConfiguration.parse("""
            pools:
              - name: p
                queues: s
                concurrency: 4
                processes: {min: 1, max: 20}
                autoscale: {service_time: 0.1, target_wait: {premium: 1, standard: 10, free: 60}}
              - name: premium-only
                queues: s:premium
                processes: {min: 1, max: 20}
            """, path: "w.yaml", cores: 2)
        let signals = try await PoolSignalsReader(farm: farm).read(pools.pools, processes: ["p": 1, "premium-only": 1])
        let all = try #require(signals["p"])
        #expect(all.dueNow == 70)
        #expect(all.tiers.map(\.name) == ["premium", "standard", "free"])
        #expect(all.tiers.map(\.scheduled) == [40, 0, 30], "by tier; the job due in an hour is not counted")
        #expect(all.tiers.allSatisfy { $0.ready == 0 })
        #expect(signals["premium-only"]?.tiers.compactMap(\.scheduled) == [40], "a pool counts only the tiers it serves")

        // The premium jobs drive the decision with premium's target: 40 × 0.1 s within 1 s = 4 slots, one process.
        var state = AutoscalePolicy.State()
        let decision = AutoscalePolicy(pool: pools.pools[0]).decide(all, state: &state)
        #expect(decision.tier == "premium" && decision.driver == .backlog, "\(decision.reason)")
        #expect(decision.wanted == 2, "\(decision.reason)")  // 4 slots ÷ (4 × 0.8) per process
    }
}
