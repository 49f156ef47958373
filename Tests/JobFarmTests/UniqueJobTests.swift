import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// Unique jobs (docs/JOBS.md, "Unique jobs"; PROTOCOL.md §5): an idempotency key with a window per request, and an
/// answer per job saying whether it was a duplicate, with the original id, on every enqueue path.
@Suite("Unique jobs", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct UniqueJobTests {
    @Test func aKeyWithinItsWindowIsADuplicateAndAfterItANewJob() async throws {
        let farm = try TestRedis.farm()
        let request = EnqueueRequest(kind: "noop", idempotencyKey: "report-7", idempotencyWindow: .milliseconds(400))
        let first = try await farm.enqueueReporting([request])[0]
        #expect(!first.duplicate)
        let again = try await farm.enqueueReporting([request])[0]
        #expect(again == EnqueueResult(id: first.id, duplicate: true))
        #expect(again.description == "\(first.id) duplicate")
        // `enqueue` keeps answering ids: the original one.
        #expect(try await farm.enqueue(request) == first.id)
        try await Task.sleep(for: .milliseconds(600))
        let later = try await farm.enqueueReporting([request])[0]
        #expect(!later.duplicate)
        #expect(later.id != first.id)
        #expect(try await farm.stats(queues: ["default"])[0].depth == 2)
    }

    @Test func theWindowIsPerRequest() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: try TestRedis.configuration)
        defer { client.close() }
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", idempotencyKey: "short", idempotencyWindow: .seconds(5)))
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", idempotencyKey: "default"))
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        let short = try await client.execute(RedisCommand("PTTL", keys.idempotency("short"))).int ?? 0
        let long = try await client.execute(RedisCommand("PTTL", keys.idempotency("default"))).int ?? 0
        #expect((1...5000).contains(short))
        #expect(long > 86_000_000, "the farm's window (24 h)")
    }

    @Test func bulkAnswersEachJobInOrder() async throws {
        let farm = try TestRedis.farm()
        let original = try await farm.enqueue(EnqueueRequest(kind: "noop", idempotencyKey: "k1"))
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", delay: .seconds(60), id: "delayed-1"))
        // The general script (keys, delays) with new jobs, a key seen before, the same key twice in the call, an id in use.
        let results = try await farm.enqueueReporting([
            EnqueueRequest(kind: "noop", id: "new-1"),
            EnqueueRequest(kind: "noop", idempotencyKey: "k1"),
            EnqueueRequest(kind: "noop", idempotencyKey: "k2", id: "new-2"),
            EnqueueRequest(kind: "noop", idempotencyKey: "k2"),
            EnqueueRequest(kind: "noop", delay: .seconds(60), id: "delayed-1"),
            EnqueueRequest(kind: "noop", delay: .seconds(60), id: "delayed-2"),
        ])
        #expect(results == [
            EnqueueResult(id: "new-1", duplicate: false), EnqueueResult(id: original, duplicate: true),
            EnqueueResult(id: "new-2", duplicate: false), EnqueueResult(id: "new-2", duplicate: true),
            EnqueueResult(id: "delayed-1", duplicate: true), EnqueueResult(id: "delayed-2", duplicate: false),
        ])
    }

    @Test func theRunNowBulkPathReportsIdsInUse() async throws {
        let farm = try TestRedis.farm()
        // Jobs that run now, one tier, no key: `enqueueNow`. A repeated id is a field of `pending` (not leased yet)
        // or a job key (leased): both answer duplicate.
        let requests = (0..<5).map { EnqueueRequest(kind: "noop", id: "now-\($0)") }
        #expect(try await farm.enqueueReporting(requests).allSatisfy { !$0.duplicate })
        let client = RedisClient(configuration: try TestRedis.configuration)
        defer { client.close() }
        let leased = try await farm.fetch(queue: "default", count: 1, worker: "w", on: client)
        #expect(leased.count == 1)
        let again = try await farm.enqueueReporting(requests + [EnqueueRequest(kind: "noop", id: "now-5")])
        #expect(again.map(\.id) == (0...5).map { "now-\($0)" })
        #expect(again.map(\.duplicate) == [true, true, true, true, true, false])
        #expect(try await farm.stats(queues: ["default"])[0].depth == 5)
    }

    @Test func theScriptRefusesAKeyWithoutItsWindow() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: try TestRedis.configuration)
        defer { client.close() }
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        let script = RedisScript(name: QueueScripts.enqueue.name, source: QueueScripts.enqueue.source)
        let error = await #expect(throws: (any Error).self) {
            try await client.run(script, keys: [keys.prefix], arguments: ["default", "1", "1000", "a-1", "standard", "{}", "0", "no-window"])
        }
        #expect("\(error.map { "\($0)" } ?? "")".contains("is not \"<window ms> <key>\""))
    }
}
