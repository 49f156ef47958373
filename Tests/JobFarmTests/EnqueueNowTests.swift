import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// The bulk path for jobs that run now (`enqueueNow`, docs/PROTOCOL.md §5): entries built by the producer are
/// written as sent, and everything `enqueue` guarantees still holds.
@Suite("Bulk enqueue of jobs that run now", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct EnqueueNowTests {
    /// The test Redis's farm, a client and the keys of queue `default` (shared with the pending-job tests).
    let q: PendingJobTests.Queue
    var farm: JobFarm { q.farm }
    var keys: QueueKeys { q.keys }

    init() throws {
        q = try PendingJobTests.Queue()
    }

    func requests(_ range: Range<Int>, tier: String = "standard") -> [EnqueueRequest] {
        range.map { index in
            var request = EnqueueRequest(kind: "echo", tier: tier, payload: .object(["n": .number(Double(index))]))
            request.id = "now-\(index)"
            return request
        }
    }

    func enqueued() async throws -> Int { try await q.enqueuedCounter() }

    @discardableResult
    func runNow(_ arguments: [String]) async throws -> RESPValue {
        let script = RedisScript(name: QueueScripts.enqueueNow.name, source: QueueScripts.enqueueNow.source)
        return try await q.client.run(script, keys: [keys.prefix], arguments: arguments)
    }

    @Test func entriesAreWrittenAsSentAndARepeatedBulkMakesNothing() async throws {
        let before = WallClock.nowMilliseconds()
        let ids = try await farm.enqueue(requests(0..<1500))
        #expect(ids == (0..<1500).map { "now-\($0)" })
        #expect(try await q.raw("HLEN", keys.pending).int == 1500)
        #expect(try await q.raw("LLEN", keys.tier("standard")).int == 1500)
        #expect(try await enqueued() == 1500)
        // The entry: "<qt> <tier> <envelope>", qt on the server's clock.
        let entry = try #require(try await q.raw("HGET", keys.pending, "now-7").string)
        let parts = entry.split(separator: " ", maxSplits: 2)
        let qt = try #require(Int64(parts[0]))
        #expect(abs(qt - before) < 60_000)
        #expect(parts[1] == "standard")
        #expect(parts[2].hasPrefix("{\"v\":1,\"id\":\"now-7\""))

        // Lease some, then send the whole bulk again with 10 new jobs: only the new ones are made.
        let leased = try await farm.fetch(queue: "default", count: 5, worker: "w", on: q.client)
        #expect(leased.count == 5)
        let again = try await farm.enqueue(requests(0..<1510))
        #expect(again.count == 1510)
        #expect(try await enqueued() == 1510)
        #expect(try await q.raw("HLEN", keys.pending).int == 1505)
        #expect(try await q.raw("LLEN", keys.tier("standard")).int == 1505)
        #expect(try await farm.status(id: leased[0].id)?.state == .running)
    }

    @Test func theSameIdTwiceInOneCallMakesOneJob() async throws {
        var jobs = requests(0..<3)
        jobs.append(jobs[1])
        _ = try await farm.enqueue(jobs)
        #expect(try await q.raw("HLEN", keys.pending).int == 3)
        #expect(try await q.raw("LLEN", keys.tier("standard")).int == 3)
        #expect(try await enqueued() == 3)
    }

    @Test func anEntryStampedFarFromTheServersClockGetsTheServersTime() async throws {
        let envelope = #"{"v":1,"id":"old-1","kind":"echo","queue":"default","tier":"free","payload":{},"attempts":0,"max_attempts":5,"enqueued_at":1,"timeout_ms":1000}"#
        let reply = try await runNow(["default", "1", "1000", "free", "old-1", "1000 free " + envelope])
        #expect(reply.int == 1)
        let entry = try #require(try await q.raw("HGET", keys.pending, "old-1").string)
        let qt = try #require(entry.split(separator: " ").first.flatMap { Int64($0) })
        #expect(abs(qt - WallClock.nowMilliseconds()) < 60_000, "the server's time, not 1000")
        #expect(entry.hasSuffix(" free " + envelope))
        #expect(try await farm.status(id: "old-1", queue: "default")?.state == .queued)
    }

    @Test func anEntryThatDoesNotBelongToItsCallIsRefusedAndNothingIsWritten() async throws {
        let now = String(WallClock.nowMilliseconds())
        do {
            try await runNow(["default", "2", now, "free", "a-1", "\(now) free {}", "a-2", "\(now) premium {}"])
            Issue.record("an entry of another tier was taken")
        } catch {
            #expect("\(error)".contains("entry of a-2"), "\(error)")
        }
        #expect(try await q.raw("HLEN", keys.pending).int == 0)
        #expect(try await q.raw("LLEN", keys.tier("free")).int == 0)
    }
}
