import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// What a foreign client can leave in Redis (docs/PROTOCOL.md §3 "Valid values", §2 "Keys of the wrong type"): an
/// invalid record is dead-lettered `malformed` under its own id with the field named, a key of the wrong type makes
/// a script fail before it writes anything (or skip what it can do without), and the queue goes on.
@Suite("Hostile data in Redis", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct HostileDataTests {
    struct Queue {
        let farm: JobFarm
        let client: RedisClient
        let keys: QueueKeys

        init(leaseDuration: Duration = .seconds(10)) throws {
            farm = try TestRedis.farm(leaseDuration: leaseDuration, heartbeat: leaseDuration / 5)
            client = RedisClient(configuration: farm.configuration.redis)
            keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        }

        @discardableResult
        func raw(_ arguments: String...) async throws -> RESPValue { try await client.send([RedisCommand(arguments)])[0] }

        func enqueue(tier: String = "standard") async throws -> String {
            try await farm.enqueue(EnqueueRequest(kind: "echo", tier: tier, payload: .object(["x": .number(1)])))
        }

        /// A queued job with a job hash, written with plain commands as docs/PROTOCOL.md §10 shows (a job enqueued
        /// by the library has no hash until it is leased, §3a).
        func enqueueRecord(tier: String = "standard") async throws -> String {
            let id = JobID.make()
            let env = #"{"v":1,"id":"\#(id)","kind":"echo","payload":{"x":1}}"#
            try await raw("HSET", keys.job(id), "env", env, "state", "queued", "tier", tier, "qt", "1764000000000")
            try await raw("LPUSH", keys.tier(tier), id)
            return id
        }

        /// A pending job (§3a) written with plain commands, its entry as given.
        func enqueuePending(_ id: String, entry: String, tier: String = "standard") async throws {
            try await raw("HSET", keys.pending, id, entry)
            try await raw("LPUSH", keys.tier(tier), id)
        }

        func fetch(_ count: Int = 10) async throws -> [LeasedJob] {
            try await farm.fetch(queue: "default", count: count, worker: "w", on: client)
        }

        /// The job is a `malformed` dead letter whose error names `field` and its value.
        func expectMalformed(_ id: String, naming words: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let status = try #require(try await farm.status(id: id, queue: "default"), sourceLocation: sourceLocation)
            #expect(status.state == .dead, "state \(status.state), error \(status.error ?? "-")", sourceLocation: sourceLocation)
            #expect(status.reason == "malformed", sourceLocation: sourceLocation)
            for word in words {
                #expect(status.error?.contains(word) == true, "error '\(status.error ?? "")' does not name \(word)", sourceLocation: sourceLocation)
            }
            #expect(try await raw("ZSCORE", keys.dead, id).string != nil, "not in the dead ZSET", sourceLocation: sourceLocation)
        }
    }

    @Test func aNonNumericQtAtTheHeadOfATierDoesNotStallTheQueue() async throws {
        let q = try Queue()
        let bad = try await q.enqueueRecord(tier: "free")
        try await q.raw("HSET", q.keys.job(bad), "qt", "soon")
        let premium = try await q.enqueue(tier: "premium")
        let free = try await q.enqueue(tier: "free")
        // (The invalid qt counts as aged, so the free tier gets its aged share at once: order is not the point here.)
        #expect(Set(try await q.fetch().map(\.id)) == [premium, free])
        try await q.expectMalformed(bad, naming: ["qt", "soon"])
        #expect(try await q.farm.stats(queues: ["default"])[0].depth == 0)
    }

    /// A batch of failures in which one job's tier list is broken: every job is recorded (the broken one retried
    /// through `scheduled`), none is left half done, and a stale report in the same batch changes nothing.
    @Test func aFailBatchWithABrokenTierListIsRecordedWhole() async throws {
        let q = try Queue()
        let free = try await q.enqueue(tier: "free")
        let standard = try await q.enqueue(tier: "standard")
        let jobs = try await q.fetch()
        #expect(Set(jobs.map(\.id)) == [free, standard])
        try await q.raw("SET", q.keys.tier("free"), "broken")
        let byID = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0) })
        var stale = byID[standard]!
        stale.token = "999"
        let refused = try await q.farm.report([
            (job: stale, outcome: .retry(error: "stale", delay: .zero)),
            (job: byID[free]!, outcome: .retry(error: "boom", delay: .zero)),
            (job: byID[standard]!, outcome: .retry(error: "boom", delay: .zero)),
        ], queue: "default", on: q.client)
        #expect(refused == [standard], "only the stale report is refused")
        let retried = try #require(try await q.farm.status(id: free, queue: "default"))
        #expect(retried.state == .retrying, "through scheduled: \(retried.state)")
        #expect(try await q.raw("ZSCORE", q.keys.scheduled, free).string != nil)
        #expect(try await q.farm.status(id: standard, queue: "default")?.state == .queued)
        #expect(try await q.raw("ZCARD", q.keys.inflight).int == 0)
    }

    /// Handing back a batch on shutdown in which one job's tier list is broken: the others go back in line, the broken
    /// one stays leased (for the reaper), and the call does not fail.
    @Test func aReleaseBatchWithABrokenTierListReleasesTheOthers() async throws {
        let q = try Queue()
        let free = try await q.enqueue(tier: "free")
        let standard = try await q.enqueue(tier: "standard")
        let jobs = try await q.fetch()
        try await q.raw("SET", q.keys.tier("free"), "broken")
        let released = try await q.farm.release(jobs, queue: "default", on: q.client)
        #expect(released == 1)
        #expect(try await q.farm.status(id: standard, queue: "default")?.state == .queued)
        #expect(try await q.farm.status(id: free, queue: "default")?.state == .running)
        #expect(try await q.raw("ZSCORE", q.keys.inflight, free).string != nil, "left for the reaper")
    }

    /// A heartbeat across queues in which one queue's `inflight` is broken: the other queue's leases are renewed and
    /// its answers (held, cancel requested) still come back; nothing throws.
    @Test func oneBrokenQueueDoesNotStopTheHeartbeatsOfTheOthers() async throws {
        let q = try Queue()
        try await q.enqueue()
        let other = try await q.farm.enqueue(EnqueueRequest(kind: "echo", queue: "other", payload: .null))
        let leased = try await q.fetch() + q.farm.fetch(queue: "other", count: 10, worker: "w", on: q.client)
        #expect(leased.count == 2)
        try await q.raw("DEL", q.keys.inflight)
        try await q.raw("SET", q.keys.inflight, "broken")
        #expect(try await q.farm.cancel(id: other, queue: "other") == .cancelling)
        let states = try q.farm.renewBlocking(leased, on: q.client)
        #expect(states[other] == .cancelRequested(keepAsDeadLetter: false))
        #expect(states.count == 1, "the broken queue's job is left out: \(states)")
    }

    @Test func anUnknownStateIsDeadLetteredNotDropped() async throws {
        let q = try Queue()
        let bad = try await q.enqueueRecord()
        try await q.raw("HSET", q.keys.job(bad), "state", "paused")
        #expect(try await q.fetch().isEmpty)
        try await q.expectMalformed(bad, naming: ["state", "paused"])
    }

    @Test func attemptsAndLeaseTokensOutOfRangeAreMalformed() async throws {
        let q = try Queue()
        let negative = try await q.enqueueRecord()
        let huge = try await q.enqueueRecord()
        let token = try await q.enqueueRecord()
        let good = try await q.enqueue()
        try await q.raw("HSET", q.keys.job(negative), "attempts", "-5")
        try await q.raw("HSET", q.keys.job(huge), "attempts", "1e23")
        try await q.raw("HSET", q.keys.job(token), "lease", "1e23")
        #expect(try await q.fetch().map(\.id) == [good])
        try await q.expectMalformed(negative, naming: ["attempts", "-5"])
        try await q.expectMalformed(huge, naming: ["attempts", "1e23"])
        try await q.expectMalformed(token, naming: ["lease", "1e23"])
    }

    @Test func aBadLostCounterDoesNotStopTheReaper() async throws {
        let q = try Queue(leaseDuration: .milliseconds(100))
        let bad = try await q.enqueue()
        let good = try await q.enqueue()
        #expect(try await q.fetch().count == 2)
        try await q.raw("HSET", q.keys.job(bad), "lost", "many")
        try await Task.sleep(for: .milliseconds(150))
        let reaped = try await q.farm.reapExpiredLeases(queue: "default", on: q.client)
        #expect(reaped.requeued == 1)
        try await q.expectMalformed(bad, naming: ["lost", "many"])
        #expect(try await q.farm.status(id: good, queue: "default")?.state == .queued)
    }

    @Test func anInvalidTierIsMalformedWhenPromoted() async throws {
        let q = try Queue()
        let bad = try await q.farm.enqueue(EnqueueRequest(kind: "echo", delay: .milliseconds(1)))
        try await q.raw("HSET", q.keys.job(bad), "tier", "no such tier!")
        try await Task.sleep(for: .milliseconds(5))
        #expect(try await q.farm.promoteDueJobs(queue: "default", on: q.client).moved == 0)
        try await q.expectMalformed(bad, naming: ["tier", "no such tier!"])
    }

    /// A pending entry (§3a) pushed by a foreign client with a bad queue time, tier or shape: dead-lettered `malformed`
    /// under its own id, naming what is wrong, and the jobs behind it (in every tier) are served.
    @Test func aMalformedPendingEntryIsDeadLetteredNamingWhatIsWrong() async throws {
        let q = try Queue()
        let env = { (id: String) in #"{"v":1,"id":"\#(id)","kind":"echo"}"# }
        try await q.enqueuePending("bad-qt", entry: "soon free " + env("bad-qt"), tier: "free")
        try await q.enqueuePending("bad-tier", entry: "1764000000000 no!tier " + env("bad-tier"))
        try await q.enqueuePending("bad-shape", entry: "garbage")
        try await q.enqueuePending("huge-qt", entry: "1e23 standard " + env("huge-qt"))
        let premium = try await q.enqueue(tier: "premium")
        let standard = try await q.enqueue(tier: "standard")
        let free = try await q.enqueue(tier: "free")
        #expect(Set(try await q.fetch().map(\.id)) == [premium, standard, free])
        try await q.expectMalformed("bad-qt", naming: ["qt", "soon"])
        try await q.expectMalformed("bad-tier", naming: ["tier", "no!tier"])
        try await q.expectMalformed("bad-shape", naming: ["pending entry", "garbage", "<qt> <tier> <envelope>"])
        try await q.expectMalformed("huge-qt", naming: ["qt", "1e23"])
        #expect(try await q.raw("HLEN", q.keys.pending).int == 0)
        #expect(try await q.farm.stats(queues: ["default"])[0].depth == 0)
        // The dead record keeps what the producer wrote, so the letter can be inspected and requeued.
        #expect(try await q.farm.deadLetter(id: "bad-qt", queue: "default")?.envelope == env("bad-qt"))
    }

    /// `cancel` of a pending job whose entry is invalid ends it `malformed` (it could not have run).
    @Test func cancelOfAMalformedPendingEntryDeadLettersIt() async throws {
        let q = try Queue()
        try await q.enqueuePending("bad-cancel", entry: "x y")
        #expect(try await q.farm.cancel(id: "bad-cancel", queue: "default") == .alreadyFinished)
        try await q.expectMalformed("bad-cancel", naming: ["pending entry"])
        #expect(try await q.fetch().isEmpty, "the id left in the list is dropped")
    }

    /// A foreign client writes a job hash under an id that is pending: the record wins, the pending entry is
    /// dead-lettered as garbage (kept, not dropped), and the job runs once.
    @Test func aPendingEntryBesideAJobRecordRunsOnce() async throws {
        let q = try Queue()
        let id = try await q.enqueue()
        try await q.raw("HSET", q.keys.job(id), "env", #"{"v":1,"id":"\#(id)","kind":"echo"}"#, "state", "queued", "tier", "standard")
        let jobs = try await q.fetch()
        #expect(jobs.map(\.id) == [id])
        #expect(jobs.first?.rawEnvelope == #"{"v":1,"id":"\#(id)","kind":"echo"}"#, "the record's envelope")
        let letters = try await q.farm.deadLetters(queue: "default")
        #expect(letters.count == 1)
        #expect(letters.first?.error.contains("beside a job record") == true)
        #expect(try await q.raw("HLEN", q.keys.pending).int == 0)
    }

    @Test func pendingOfTheWrongTypeRefusesEnqueueAndFetchBeforeAnyWrite() async throws {
        let q = try Queue()
        try await q.raw("LPUSH", q.keys.tier("standard"), "some-id")
        try await q.raw("SET", q.keys.pending, "x")
        await expectWrongType(key: q.keys.pending, found: "string", expected: "hash") { _ = try await q.enqueue() }
        #expect(try await q.raw("LLEN", q.keys.tier("standard")).int == 1)
        await expectWrongType(key: q.keys.pending, found: "string", expected: "hash") { _ = try await q.fetch() }
        #expect(try await q.raw("LLEN", q.keys.tier("standard")).int == 1, "nothing popped")
        #expect(try await q.raw("HLEN", q.keys.deadEntries).int == 0)
        try await q.raw("DEL", q.keys.pending)
        let id = try await q.enqueue()
        #expect(try await q.farm.status(id: id, queue: "default")?.state == .queued)
    }

    @Test func anInlineEnvelopeThatIsNotJSONIsDeadUnderTheProducersID() async throws {
        let q = try Queue()
        try await q.raw("LPUSH", q.keys.tier("standard"), #"{"v":1,"id":"ext-0001","kind":"echo","payload":{"#)
        try await q.raw("LPUSH", q.keys.tier("standard"), #"{"v":1,"id":"ext-0002","kind":"echo","run_at":1e23}"#)
        #expect(try await q.fetch().isEmpty)
        try await q.expectMalformed("ext-0001", naming: ["not valid JSON"])
        try await q.expectMalformed("ext-0002", naming: ["run_at"])
    }

    @Test func anEnvelopeThatIsNotUTF8IsRefusedNotRunWithReplacementCharacters() async throws {
        let q = try Queue()
        // The bytes of "caf\xE9" (Latin-1), pushed by a foreign producer.
        var push = RedisCommand("LPUSH", q.keys.tier("standard"))
        push.append(bytes: Array(#"{"v":1,"id":"ext-latin1","kind":"echo","payload":"caf"#.utf8) + [0xE9] + Array(#""}"#.utf8))
        _ = try await q.client.send([push])
        #expect(try await q.fetch().isEmpty)
        try await q.expectMalformed("ext-latin1", naming: ["UTF-8"])
    }

    @Test func aWakeUpListOfTheWrongTypeIsReportedNotSpunOn() async throws {
        let q = try Queue()
        try await q.raw("SET", q.keys.signal(tier: "standard"), "x")
        let id = try await q.enqueue()  // the wake-up is skipped, the job is in line
        #expect(try await q.fetch().map(\.id) == [id])
        let clock = ContinuousClock()
        let start = clock.now
        await expectWrongType(key: q.keys.signal(tier: "standard"), found: "string", expected: "list") {
            _ = try await q.farm.awaitAndFetch(queues: ["default"], count: 1, worker: "w", timeout: .seconds(1), on: q.client)
        }
        #expect(clock.now - start < .seconds(1))
    }

    @Test func inflightOfTheWrongTypeFailsFetchBeforeAnyWrite() async throws {
        let q = try Queue()
        let id = try await q.enqueue()
        try await q.raw("SET", q.keys.inflight, "x")
        await expectWrongType(key: q.keys.inflight, found: "string", expected: "zset") { _ = try await q.fetch() }
        #expect(try await q.farm.status(id: id, queue: "default")?.state == .queued)
        #expect(try await q.raw("LLEN", q.keys.tier("standard")).int == 1)
        try await q.raw("DEL", q.keys.inflight)
        #expect(try await q.fetch().map(\.id) == [id])
    }

    @Test func deadLettersOfTheWrongTypeAreNeverHalfWritten() async throws {
        let q = try Queue()
        try await q.raw("LPUSH", q.keys.tier("standard"), "garbage")
        try await q.raw("SET", q.keys.dead, "x")
        await expectWrongType(key: q.keys.dead, found: "string", expected: "zset") { _ = try await q.fetch() }
        #expect(try await q.raw("HLEN", q.keys.deadEntries).int == 0)
        #expect(try await q.raw("LLEN", q.keys.tier("standard")).int == 1)
    }

    @Test func aTierListOfTheWrongTypeIsSkippedAndTheOtherTiersServed() async throws {
        let q = try Queue()
        let premium = try await q.enqueue(tier: "premium")
        let free = try await q.enqueue(tier: "free")
        try await q.raw("SET", q.keys.tier("standard"), "x")
        #expect(try await q.fetch().map(\.id) == [premium, free])
    }

    @Test func scheduledOfTheWrongTypeRefusesADelayedEnqueueBeforeAnyWrite() async throws {
        let q = try Queue()
        try await q.raw("SET", q.keys.scheduled, "x")
        let id = JobID.make()
        await expectWrongType(key: q.keys.scheduled, found: "string", expected: "zset") {
            _ = try await q.farm.enqueue(EnqueueRequest(kind: "echo", delay: .seconds(5), id: id))
        }
        #expect(try await q.raw("EXISTS", q.keys.job(id)).int == 0)
        await expectWrongType(key: q.keys.scheduled, found: "string", expected: "zset") {
            _ = try await q.farm.promoteDueJobs(queue: "default", on: q.client)
        }
    }

    @Test func aQueueRegistryOfTheWrongTypeIsReported() async throws {
        let q = try Queue()
        let registry = QueueKeys.registry(namespace: q.farm.configuration.namespace)
        try await q.raw("SET", registry, "x")
        let id = try await q.enqueue()  // the job is enqueued all the same
        #expect(try await q.fetch().map(\.id) == [id])
        await expectWrongType(key: registry, found: "string", expected: "set") { _ = try await q.farm.queues() }
    }
}

/// Expects `body` to fail with `JobFarmError.wrongType` naming `key`, its type and the type the protocol wants.
func expectWrongType(key: String, found: String, expected: String, sourceLocation: SourceLocation = #_sourceLocation,
                     _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("no error; expected wrongType for \(key)", sourceLocation: sourceLocation)
    } catch JobFarmError.wrongType(let named, _, let message) {
        #expect(named == key, "\(message)", sourceLocation: sourceLocation)
        #expect(message.contains("is a \(found), expected a \(expected)"), "\(message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected wrongType for \(key), got \(error)", sourceLocation: sourceLocation)
    }
}
