import Dispatcher
import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// The operators' dead-letter routes over a real server on loopback and the real Redis: list with filters and
/// cursor pages, show, requeue (dry run first), purge (dry run, then confirm), and 401/403 for everyone else.
@Suite("Dispatcher dead-letter routes", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct DeadLetterRouteTests {
    /// `count` jobs of kind `fail` that fail for good with `message` (straight to the dead letters), run by a worker.
    static func kill(_ farm: JobFarm, messages: [(String, Int)]) async throws -> [String] {
        var ids: [String] = []
        for (message, count) in messages {
            for _ in 0..<count {
                ids.append(try await farm.enqueue(EnqueueRequest(
                    kind: "fail", payload: .object(["message": .string(message), "retryable": .bool(false)]), maxAttempts: 1)))
            }
        }
        try await withTestWorker(farm: farm, registry: .builtins(), queues: nil, concurrency: 4) { _ in
            for id in ids { _ = try await farm.wait(for: id, timeout: .seconds(20)) }
        }
        return ids
    }

    @Test(.timeLimit(.minutes(1)))
    func operatorsListPageShowRequeueAndPurgeOthersAreRefused() async throws {
        let farm = try TestRedis.farm()
        let ids = try await Self.kill(farm, messages: [("disk full", 4), ("bad input", 3)])
        #expect(try await farm.stats(queues: ["default"])[0].dead == 7)
        let keys = apiKeys(farm)
        let (tenantKey, _) = try await keys.create(tenant: "acme", tiers: ["standard"], isOperator: false)
        let (operatorKey, _) = try await keys.create(tenant: "ops", tiers: ["standard"], isOperator: true)
        let configuration = DispatcherConfiguration(port: 0, authentication: .apiKeys)
        try await withDispatcher(farm: farm, configuration: configuration) { plain in
            // Everyone but an operator is refused, before anything is read or changed.
            let acme = plain.with(key: tenantKey)
            for (method, path, body) in [("GET", "/v1/admin/dead-letters", nil), ("GET", "/v1/admin/dead-letters/\(ids[0])", nil),
                                         ("POST", "/v1/admin/dead-letters:requeue", #"{"all": true, "dryRun": false}"#),
                                         ("POST", "/v1/admin/dead-letters:purge", #"{"all": true}"#)] as [(String, String, String?)] {
                #expect(try await acme.call(method, path, json: body).status == 403, "\(method) \(path) with a tenant key")
                #expect(try await plain.call(method, path, json: body).status == 401, "\(method) \(path) without a key")
            }
            #expect(try await farm.stats(queues: ["default"])[0].dead == 7)

            let api = plain.with(key: operatorKey)
            // Pages of 3, newest first, by cursor: every letter once.
            var seen: [String] = []
            var cursor: String?
            var pages = 0
            repeat {
                let page = try await api.get("/v1/admin/dead-letters?limit=3" + (cursor.map { "&cursor=\($0)" } ?? ""))
                #expect(page.status == 200)
                let letters = items(page.json?["deadLetters"])
                seen += letters.compactMap { $0["id"]?.stringValue }
                #expect(letters.allSatisfy { $0["reason"]?.stringValue == "non_retryable" && $0["kind"]?.stringValue == "fail" })
                cursor = page.json?["nextCursor"]?.stringValue
                pages += 1
            } while cursor != nil && pages < 10
            #expect(pages == 3)
            #expect(seen.count == 7 && Set(seen) == Set(ids), "\(seen)")

            // Filters: error text, reason, time window; a bad parameter names itself.
            #expect(items(try await api.get("/v1/admin/dead-letters?error=disk").json?["deadLetters"]).count == 4)
            #expect(items(try await api.get("/v1/admin/dead-letters?reason=exhausted").json?["deadLetters"]).isEmpty)
            #expect(items(try await api.get("/v1/admin/dead-letters?kind=fail&reason=non_retryable&since=2020-01-01T00:00:00Z").json?["deadLetters"]).count == 7)
            #expect(items(try await api.get("/v1/admin/dead-letters?until=2020-01-01T00:00:00Z").json?["deadLetters"]).isEmpty)
            #expect(items(try await api.get("/v1/admin/dead-letters?since=2999-01-01T00:00:00.000Z").json?["deadLetters"]).isEmpty)
            #expect(items(try await api.get("/v1/admin/dead-letters?queue=ml").json?["deadLetters"]).isEmpty)
            let bad = try await api.get("/v1/admin/dead-letters?reason=tired&since=yesterday&limit=0&cursor=x")
            #expect(bad.status == 400)
            #expect(Set(items(bad.json?["errors"]).compactMap { $0["parameter"]?.stringValue }) == ["reason", "since", "limit", "cursor"])

            // One letter: its attempts and envelope.
            let one = try await api.get("/v1/admin/dead-letters/\(ids[0])")
            #expect(one.status == 200)
            #expect(one.json?["error"]?.stringValue == "disk full")
            #expect(one.json?["envelope"]?["kind"]?.stringValue == "fail")
            #expect(items(one.json?["history"]).count == 1)
            #expect(try await api.get("/v1/admin/dead-letters/no-such-letter").status == 404)

            // Requeue: a dry run unless told otherwise.
            let dry = try await api.post("/v1/admin/dead-letters:requeue", #"{"error": "bad input"}"#)
            #expect(dry.status == 200)
            #expect(dry.json?["dryRun"] == .bool(true))
            #expect(items(dry.json?["requeued"]).count == 3)
            #expect(try await farm.stats(queues: ["default"])[0].dead == 7, "a dry run changes nothing")
            let done = try await api.post("/v1/admin/dead-letters:requeue", #"{"error": "bad input", "dryRun": false, "tier": "premium"}"#)
            #expect(done.json?["dryRun"] == .bool(false))
            #expect(Set(items(done.json?["requeued"]).compactMap(\.stringValue)) == Set(ids[4...]))
            let stats = try await farm.stats(queues: ["default"])[0]
            #expect(stats.dead == 4 && stats.depth == 3)
            #expect(try await farm.status(id: ids[4])?.tier == "premium")

            // Every problem of a selection at once.
            let invalid = try await api.post("/v1/admin/dead-letters:requeue", #"{"reason": "tired", "limit": 0, "tier": "gold", "colour": 1}"#)
            #expect(invalid.status == 422)
            #expect(invalid.pointers == ["/colour", "/limit", "/reason", "/tier"])
            #expect(try await api.post("/v1/admin/dead-letters:purge", "{}").pointers == [""], "no selection: name the letters or all")

            // Purge: a dry run answers a token for exactly the letters it matched; the set changing meanwhile → 409.
            let plan = try await api.post("/v1/admin/dead-letters:purge", #"{"all": true}"#)
            #expect(plan.status == 200)
            #expect(plan.json?["dryRun"] == .bool(true) && plan.json?["count"] == .number(4))
            let token = try #require(plan.json?["confirm"]?.stringValue)
            #expect(try await farm.stats(queues: ["default"])[0].dead == 4, "a dry run deletes nothing")
            #expect(try await api.post("/v1/admin/dead-letters:purge", #"{"all": true, "confirm": "not-the-token"}"#).status == 409)
            _ = try await farm.requeue(id: ids[0], queue: "default")
            #expect(try await api.post("/v1/admin/dead-letters:purge", #"{"all": true, "confirm": "\#(token)"}"#).status == 409,
                    "a letter left the selection after the dry run")
            #expect(try await farm.stats(queues: ["default"])[0].dead == 3)
            let again = try await api.post("/v1/admin/dead-letters:purge", #"{"all": true}"#)
            let purge = try await api.post("/v1/admin/dead-letters:purge",
                                           #"{"all": true, "confirm": "\#(again.json?["confirm"]?.stringValue ?? "")"}"#)
            #expect(purge.status == 200)
            #expect(purge.json?["dryRun"] == .bool(false) && purge.json?["count"] == .number(3))
            #expect(try await farm.stats(queues: ["default"])[0].dead == 0)
        }
    }

    /// Letters that died in the same millisecond: the cursor (time and id) pages through them without a repeat or a gap.
    @Test(.timeLimit(.minutes(1)))
    func pagesThroughLettersOfOneMillisecondAndAWindow() async throws {
        let farm = try TestRedis.farm()
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        let client = RedisClient(configuration: farm.configuration.redis, name: "test-dlq")
        var ids: [String] = []
        for index in 0..<9 {
            let id = "letter-\(index)"
            let deadAt = index < 7 ? 1_700_000_000_000 : 1_700_000_000_000 + Int64(index) * 1000
            ids.append(id)
            _ = try await client.execute(RedisCommand("HSET", keys.deadEntries, id, #"{"reason":"exhausted","error":"e\#(index)","dead_at":\#(deadAt)}"#))
            _ = try await client.execute(RedisCommand("ZADD", keys.dead, String(deadAt), id))
        }
        var seen: [String] = []
        var cursor: DeadLetterCursor?
        repeat {
            let page = try await farm.deadLetterPage(queue: "default", after: cursor, limit: 2)
            seen += page.letters.map(\.id)
            cursor = page.next
            if let next = page.next { #expect(DeadLetterCursor(text: next.text) == next) }
        } while cursor != nil && seen.count < 20
        #expect(seen == ["letter-8", "letter-7", "letter-6", "letter-5", "letter-4", "letter-3", "letter-2", "letter-1", "letter-0"])
        // A window: until excludes the two later letters; since the same millisecond keeps the seven.
        let window = try await farm.deadLetters(queue: "default", filter: DeadLetterFilter(since: 1_700_000_000_000, until: 1_700_000_000_500))
        #expect(window.count == 7)
        // A scan limit smaller than the queue: a short page with a cursor, then the rest.
        let first = try await farm.deadLetterPage(queue: "default", filter: DeadLetterFilter(errorContains: "e0"), limit: 5, scanLimit: 4)
        #expect(first.letters.isEmpty && first.next != nil)
        let rest = try await farm.deadLetterPage(queue: "default", filter: DeadLetterFilter(errorContains: "e0"), after: first.next, limit: 5)
        #expect(rest.letters.map(\.id) == ["letter-0"] && rest.next == nil)
    }
}
