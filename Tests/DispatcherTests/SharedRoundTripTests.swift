import Dispatcher
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Synchronization
import Testing

/// What keeps concurrent submissions from each paying a Redis round trip: the coalescer, the prepared enqueue,
/// single-flight key lookups; and the event subscription that is open only while someone waits.
@Suite("Shared round trips", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct SharedRoundTripTests {
    @Test(.timeLimit(.minutes(1)))
    func concurrentCallersShareRoundTripsAndEachGetsItsOwnReplies() async throws {
        let configuration = try TestRedis.configuration
        let coalescer = RedisCoalescer(clients: [RedisClient(configuration: configuration, name: "test-coalescer")])
        defer { coalescer.close() }
        let prefix = "tcoal" + JobID.make().suffix(10).lowercased()
        let failing = RedisScript(name: "fails", source: "return redis.error_reply('JOBFARM_TEST only this caller fails')")
        let echo = RedisScript(name: "echo", source: "return ARGV[1]")
        let replies = try await withThrowingTaskGroup(of: (Int, [RESPValue]).self) { group in
            for index in 0..<200 {
                group.addTask {
                    let requests: [RedisRequest] = index % 50 == 7
                        ? [.script(failing, keys: [], arguments: [])]
                        : [.command(RedisCommand("SET", "\(prefix):\(index)", String(index))), .script(echo, keys: [], arguments: [String(index)])]
                    return (index, try await coalescer.pipeline(requests, blockingFor: .zero))
                }
            }
            var all: [Int: [RESPValue]] = [:]
            for try await (index, reply) in group { all[index] = reply }
            return all
        }
        for index in 0..<200 {
            let reply = try #require(replies[index])
            if index % 50 == 7 {
                #expect(reply.count == 1)
                #expect(reply[0].errorMessage?.contains("only this caller fails") == true)
            } else {
                #expect(reply.count == 2)
                #expect(reply[0].string == "OK")
                #expect(reply[1].string == String(index), "each caller reads its own replies, in its order")
            }
        }
        let statistics = coalescer.statistics
        #expect(statistics.requests == 196 * 2 + 4)
        #expect(statistics.roundTrips < 200, "callers arriving while a round trip is in flight go out together")
        let cleanup = RedisClient(configuration: configuration, name: "test-cleanup")
        _ = try await cleanup.send((0..<200).map { RedisCommand("DEL", "\(prefix):\($0)") })
    }

    @Test(.timeLimit(.minutes(1)))
    func aPreparedEnqueueSentThroughTheCoalescerMakesTheJob() async throws {
        let farm = try TestRedis.farm()
        let coalescer = RedisCoalescer(clients: [RedisClient(configuration: farm.configuration.redis, name: "test-coalescer")])
        defer { coalescer.close() }
        let prepared = try #require(try await farm.prepareEnqueue([EnqueueRequest(kind: "noop", queue: "default")]))
        let ids = try await farm.ids(of: prepared, replies: try await coalescer.pipeline(prepared.requests, blockingFor: .zero))
        #expect(ids.count == 1)
        #expect(try await farm.status(id: ids[0])?.state == .queued)
        #expect(try await farm.queues().contains("default"), "the first enqueue of a queue registers it")
        // Sent again (a retry after a lost answer): still one job.
        _ = try await farm.ids(of: prepared, replies: try await coalescer.pipeline(prepared.requests, blockingFor: .zero))
        #expect(try await farm.stats(queues: ["default"]).first?.depth == 1)
        // Jobs for later, or for two queues, take the library's general path.
        #expect(try await farm.prepareEnqueue([EnqueueRequest(kind: "noop", delay: .seconds(5))]) == nil)
        #expect(try await farm.prepareEnqueue([EnqueueRequest(kind: "noop", queue: "a"), EnqueueRequest(kind: "noop", queue: "b")]) == nil)
    }

    @Test(.timeLimit(.minutes(1)))
    func concurrentSubmissionsOverHTTPAllLandOnce() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            let answers = try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
                for index in 0..<100 {
                    group.addTask { try await api.post("/v1/jobs", #"{"kind": "echo", "payload": {"n": \#(index)}}"#) }
                }
                var all: [HTTPAnswer] = []
                for try await answer in group { all.append(answer) }
                return all
            }
            #expect(answers.allSatisfy { $0.status == 201 })
            #expect(Set(answers.compactMap { $0.json?["id"]?.stringValue }).count == 100)
        }
        #expect(try await farm.stats(queues: ["default"]).first?.depth == 100)
    }

    @Test(.timeLimit(.minutes(1)))
    func theEventSubscriptionClosesAfterTheLastWait() async throws {
        let farm = try TestRedis.farm()
        let id = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "default", delay: .seconds(600)))
        #expect(!farm.listensForEvents)
        await #expect(throws: JobFarmError.self) { try await farm.wait(for: id, timeout: .milliseconds(300)) }
        // Open for a short linger after the last waiter, then closed: the scripts stop publishing.
        let clock = ContinuousClock()
        let start = clock.now
        while farm.listensForEvents, clock.now - start < .seconds(10) { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!farm.listensForEvents, "no waiter, no subscription: every job transition would publish an event otherwise")
        // A later wait opens it again and is woken as before.
        let quick = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "default"))
        _ = try await farm.cancel(id: quick)
        #expect(try await farm.wait(for: quick, timeout: .seconds(5)).state == .cancelled)
    }
}

/// Key lookups: one Redis call for many concurrent requests with one key, and the cached key kept while Redis is away.
@Suite("API key cache")
struct APIKeyCacheTests {
    final class CountingKeys: APIKeyLookup {
        let calls = Mutex(0)
        let failing = Mutex(false)
        let key = APIKey(id: "k1", tenant: "acme", tiers: ["standard"], isOperator: false, createdAt: 0)

        func key(hash: String) async throws -> APIKey? {
            calls.withLock { $0 += 1 }
            if failing.withLock({ $0 }) { throw RedisError.connectionLost("test: Redis is away") }
            try await Task.sleep(for: .milliseconds(50))
            return key
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func concurrentLookupsOfOneKeyShareOneCall() async throws {
        let source = CountingKeys()
        let cache = CachedAPIKeys(source, ttl: .seconds(1))
        try await withThrowingTaskGroup(of: APIKey?.self) { group in
            for _ in 0..<50 { group.addTask { try await cache.key(hash: "h") } }
            for try await found in group { #expect(found?.id == "k1") }
        }
        #expect(source.calls.withLock { $0 } == 1)
    }

    @Test(.timeLimit(.minutes(1)))
    func aKeyFoundBeforeStillWorksWhileTheRedisClientCannotConnect() async throws {
        let source = CountingKeys()
        let cache = CachedAPIKeys(source, ttl: .milliseconds(10))
        #expect(try await cache.key(hash: "h")?.id == "k1")
        try await Task.sleep(for: .milliseconds(30))
        source.failing.withLock { $0 = true }
        #expect(try await cache.key(hash: "h")?.id == "k1", "the client's own connection error counts as Redis away")
        await #expect(throws: RedisError.self) { try await cache.key(hash: "never-seen") }
    }
}
