import Dispatcher
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// Concurrent submissions merged into shared script calls, and the deadlines the coalescer keeps for its callers.
@Suite("Merged submissions and call deadlines", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct SubmissionMergeTests {
    @Test(.timeLimit(.minutes(1)))
    func concurrentSubmissionsForOneQueueShareScriptCallsAndEachGetsItsIds() async throws {
        let farm = try TestRedis.farm()
        let coalescer = RedisCoalescer(clients: (0..<2).map { RedisClient(configuration: farm.configuration.redis, name: "test-merge-\($0)") })
        defer { coalescer.close() }
        let merger = SubmissionMerger(farm: farm, redis: coalescer)
        let lane = try #require(merger.lane(of: [EnqueueRequest(kind: "noop", id: "x")], defaultTier: farm.configuration.defaultTier))
        let results = try await withThrowingTaskGroup(of: (String, [EnqueueResult]).self) { group in
            for index in 0..<300 {
                group.addTask {
                    let id = "merge-\(index)"
                    let jobs = [EnqueueRequest(kind: "noop", payload: .object(["n": .number(Double(index))]), id: id)]
                    return (id, try await merger.enqueue(jobs, lane: lane, within: .seconds(10)))
                }
            }
            var all: [String: [EnqueueResult]] = [:]
            for try await (id, result) in group { all[id] = result }
            return all
        }
        #expect(results.count == 300)
        for (id, result) in results {
            #expect(result == [EnqueueResult(id: id, duplicate: false)], "each submission answered with its own id")
        }
        #expect(try await farm.stats(queues: ["default"]).first?.depth == 300)
        let statistics = merger.statistics
        #expect(statistics.submissions == 300)
        #expect(statistics.calls < 300, "submissions arriving while a call is in flight go in the next one together")
        // A submission repeated (a retry after a lost answer) is answered as a duplicate, merged or not.
        let again = try await merger.enqueue([EnqueueRequest(kind: "noop", id: "merge-7")], lane: lane, within: .seconds(10))
        #expect(again == [EnqueueResult(id: "merge-7", duplicate: true)])
        #expect(try await farm.status(id: "merge-7")?.state == .queued)
        // Jobs for later, with an idempotency key, or for two queues, do not merge.
        #expect(merger.lane(of: [EnqueueRequest(kind: "noop", delay: .seconds(5), id: "a")], defaultTier: "standard") == nil)
        #expect(merger.lane(of: [EnqueueRequest(kind: "noop", idempotencyKey: "k", id: "a")], defaultTier: "standard") == nil)
        #expect(merger.lane(of: [EnqueueRequest(kind: "noop", queue: "a", id: "a"), EnqueueRequest(kind: "noop", queue: "b", id: "b")],
                            defaultTier: "standard") == nil)
        #expect(merger.lane(of: [EnqueueRequest(kind: "noop")], defaultTier: "standard") == nil, "ids are chosen before merging")
    }

    @Test(.timeLimit(.minutes(1)))
    func aCoalescedCallFailsAtItsDeadlineWhenRedisStopsAnswering() async throws {
        let server = try OwnRedisServer()
        let coalescer = RedisCoalescer(clients: [RedisClient(configuration: try RedisConfiguration(url: server.url), name: "test-deadline")])
        defer { coalescer.close() }
        let ping = RedisRequest.command(RedisCommand("PING"))
        #expect(try await coalescer.pipeline([ping], within: .seconds(5)) == [.status("PONG")])
        server.pause()
        let clock = ContinuousClock()
        let start = clock.now
        // One call in flight on the connection, one waiting behind it: both answered at their deadline.
        async let first = Result(awaiting: { try await coalescer.pipeline([ping], within: .milliseconds(300)) })
        async let second = Result(awaiting: { try await coalescer.pipeline([ping], within: .milliseconds(500)) })
        let (a, b) = await (first, second)
        let elapsed = clock.now - start
        server.resume()
        for result in [a, b] {
            guard case .failure(let error) = result else {
                Issue.record("a call to a Redis that answers nothing returned \(result)")
                continue
            }
            #expect(error is RedisCallTimedOut, "\(error)")
        }
        #expect(elapsed < .seconds(3), "the deadlines are kept by the sweep (≤ 100 ms late), not by the connection's 5 s timeout")
        // Once Redis answers again, the connection serves new calls (the late replies were dropped).
        #expect(try await coalescer.pipeline([ping], within: .seconds(10)) == [.status("PONG")])
    }

    @Test(.timeLimit(.minutes(1)))
    func aCancelledCallerIsAnsweredAtOnce() async throws {
        let server = try OwnRedisServer()
        let coalescer = RedisCoalescer(clients: [RedisClient(configuration: try RedisConfiguration(url: server.url), name: "test-cancel")])
        defer { coalescer.close() }
        let ping = RedisRequest.command(RedisCommand("PING"))
        _ = try await coalescer.pipeline([ping], within: .seconds(5))
        server.pause()
        defer { server.resume() }
        let task = Task { try await coalescer.pipeline([ping], within: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        let clock = ContinuousClock()
        let start = clock.now
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(clock.now - start < .seconds(2))
    }
}

extension Result where Failure == any Error {
    init(awaiting body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
