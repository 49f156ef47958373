import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// Workers killed with SIGKILL over and over and Redis itself crashing (SIGKILL, AOF with `appendfsync always`)
/// while jobs run: every job must end accounted for (succeeded, or dead-lettered with a reason), and no success may
/// be recorded twice. Bounded: about 15 s of chaos, then at most 90 s to settle.
@Suite("Chaos", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct ChaosTests {
    @Test func killedWorkersAndCrashedRedisLoseNothingAndRecordNoSuccessTwice() async throws {
        let server = try OwnRedisServer(extraArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        let redis = try RedisConfiguration(url: server.url)
        let farm = try TestRedis.farm(leaseDuration: .seconds(2), heartbeat: .milliseconds(400), redis: redis, maxLeaseLosses: 5)
        var generator = SystemRandomNumberGenerator()
        var requests = (0..<600).map { _ in
            EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(Double.random(in: 0.05...0.4, using: &generator)), "steps": .number(2)]))
        }
        // Jobs that must end in the dead letters whatever happens: a non-retryable failure.
        requests += (0..<20).map { _ in EnqueueRequest(kind: "fail", payload: .object(["retryable": .bool(false)])) }
        let ids = try await farm.enqueue(requests)
        let expectDead = Set(ids.suffix(20))

        func startWorker() throws -> ChildProcess {
            try ChildProcess(["worker", "--redis-url", server.url, "--namespace", farm.configuration.namespace, "--queues", "default",
                              "--concurrency", "4", "--lease", "2", "--log-level", "critical"])
        }
        var workers = try (0..<3).map { _ in try startWorker() }
        let clock = ContinuousClock()
        let chaosStart = clock.now
        var kills = 0
        var crashes = 0
        while clock.now - chaosStart < .seconds(15) {
            try await Task.sleep(for: .milliseconds(600))
            let victim = Int.random(in: 0..<workers.count, using: &generator)
            workers[victim].signal(SIGKILL)
            await workers[victim].waitForExit(timeout: .seconds(5))
            workers[victim] = try startWorker()
            kills += 1
            if kills % 8 == 0 {
                server.crash()
                try await Task.sleep(for: .milliseconds(700))
                try server.start()
                crashes += 1
            }
        }
        #expect(crashes >= 2)
        try await eventually(timeout: .seconds(90), "every job to reach a final state") {
            let stats = try await farm.stats(queues: ["default"])[0]
            return stats.depth == 0 && stats.inflight == 0 && stats.scheduled == 0
        }
        for worker in workers {
            worker.signal(SIGTERM)
            await worker.waitForExit(timeout: .seconds(15))
        }
        var succeeded = 0
        var interrupted = 0
        for id in ids {
            let status = try #require(try await farm.status(id: id), "job \(id) vanished")
            if status.leaseLosses > 0 { interrupted += 1 }
            switch status.state {
            case .succeeded:
                succeeded += 1
                #expect(!expectDead.contains(id))
            case .dead:
                #expect(status.reason != nil, "dead letter \(id) without a reason")
                if !expectDead.contains(id) {
                    // A sleep job may only die of losing its lease too often (killed with its worker each time).
                    #expect(status.reason == "poison", "\(id): \(String(describing: status.reason)) \(status.error ?? "")")
                }
            default:
                Issue.record("job \(id) ended \(status.state), not succeeded or dead")
            }
        }
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["succeeded"] == succeeded, "a success counted twice, or one not counted")
        #expect(succeeded >= 500, "most sleep jobs succeed (\(succeeded) of 600 after \(kills) kills, \(crashes) Redis crashes)")
        #expect(interrupted >= 10, "the kills hit running jobs (\(interrupted) jobs lost a lease): the test exercised what it claims")
    }
}
