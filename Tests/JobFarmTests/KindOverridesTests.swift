import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
@testable import JobWorker
import Testing
import WorkerPools

/// A pool's per-kind `retry:` and `timeouts:` in `workers.yaml`: parsed and checked, and applied to the handlers.
@Suite("Per-kind retry policies and timeout caps of a pool")
struct KindOverridesTests {
    func error(_ text: String) -> String? {
        do {
            _ = try PoolsConfiguration.parse(text, path: "w.yaml", cores: 2)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func retryAndTimeoutsAreReadWithDurationsInAnyUnit() throws {
        let pools = try PoolsConfiguration.parse("""
            pools:
              - name: ml
                queues: ml
                retry:
                  inference: {max_attempts: 5, base: 500ms, multiplier: 3, cap: 1m, jitter: 0}
                  train:
                    max_attempts: 2
                timeouts:
                  train: 30m
                  inference: 10s
                  quantize: 90
                  validate: 1.5h
            """, path: "w.yaml", cores: 2)
        let pool = pools.pools[0]
        #expect(pool.retryOverrides["inference"] == RetryOverride(maxAttempts: 5, baseSeconds: 0.5, multiplier: 3, capSeconds: 60, jitter: 0, line: 5))
        #expect(pool.retryOverrides["train"] == RetryOverride(maxAttempts: 2, line: 6))
        #expect(pool.timeoutCaps.mapValues(\.seconds) == ["train": 1800, "inference": 10, "quantize": 90, "validate": 5400])
        #expect(pool.timeoutCaps["train"]?.line == 9)
    }

    @Test func mistakesNameTheFileLineAndKeyAndWhatIsAllowed() {
        let unknownKey = error("""
            pools:
              - name: a
                retry:
                  inference: {max_tries: 5}
            """)
        #expect(unknownKey == "w.yaml:4: pools[0].retry.inference.max_tries is not a known key; allowed here: max_attempts, base, multiplier, cap, jitter",
                "\(unknownKey ?? "no error")")
        let badDuration = error("""
            pools:
              - name: a
                timeouts:
                  train: 30 minutes
            """)
        #expect(badDuration?.hasPrefix("w.yaml:4: pools[0].timeouts.train must be a duration: seconds (90, 0.5) or a number with ms, s, m or h") == true,
                "\(badDuration ?? "no error")")
        let zero = error("""
            pools:
              - name: a
                timeouts: {train: 0s}
            """)
        #expect(zero?.contains("pools[0].timeouts.train must be a duration") == true, "\(zero ?? "no error")")
        let attempts = error("""
            pools:
              - name: a
                retry:
                  fail: {max_attempts: 0}
            """)
        #expect(attempts?.hasPrefix("w.yaml:4: pools[0].retry.fail.max_attempts must be a whole number ≥ 1") == true, "\(attempts ?? "no error")")
        let empty = error("""
            pools:
              - name: a
                retry:
                  fail: {}
            """)
        #expect(empty?.contains("pools[0].retry.fail names nothing to change; allowed: max_attempts") == true, "\(empty ?? "no error")")
        let notMapping = error("""
            pools:
              - name: a
                retry: 5
            """)
        #expect(notMapping?.hasPrefix("w.yaml:3: pools[0].retry must be a mapping of job kinds") == true, "\(notMapping ?? "no error")")
        let jitter = error("""
            pools:
              - name: a
                retry: {fail: {jitter: 2}}
            """)
        #expect(jitter?.contains("pools[0].retry.fail.jitter must be a share from 0 to 1") == true, "\(jitter ?? "no error")")
    }

    @Test func theFileReplacesTheHandlersPolicyAndACapLowersButNeverRaisesATimeout() throws {
        var registry = HandlerRegistry.builtins()
        #expect(registry.retryPolicy(for: "fail") == .standard)
        let changed = RetryPolicy(base: .milliseconds(50), multiplier: 1, cap: .seconds(1), maxAttempts: 3, jitter: 0)
        let set = registry.setRetryPolicy(changed, for: "fail")
        #expect(set)
        #expect(registry.retryPolicy(for: "fail") == changed)
        #expect(registry.retryPolicy(for: "echo") == .standard, "other kinds keep theirs")
        let unknown = registry.setRetryPolicy(changed, for: "no-such-kind")
        #expect(!unknown)
        let capped = registry.capTimeout(of: "sleep", at: .seconds(2))
        #expect(capped)
        let entry = try #require(registry.entry(for: "sleep"))
        #expect(entry.timeoutMilliseconds(300_000) == 2000, "a longer timeout is cut to the cap")
        #expect(entry.timeoutMilliseconds(500) == 500, "a shorter one is kept")
        #expect(try #require(registry.entry(for: "echo")).timeoutMilliseconds(300_000) == 300_000)
    }
}

/// `jobfarm worker --pool` running jobs under the file's per-kind retry policy and timeout cap (the real binary).
@Suite("Per-kind overrides in a worker process", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct KindOverridesProcessTests {
    @Test(.timeLimit(.minutes(1))) func anOverriddenKindRetriesTheFilesNumberOfTimesAndACapKillsALongJob() async throws {
        let farm = try TestRedis.farm()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("workers-\(UUID().uuidString).yaml").path
        try """
            pools:
              - name: capped
                queues: default
                concurrency: 4
                retry:
                  fail: {max_attempts: 3, base: 50ms, multiplier: 1, jitter: 0}
                  sleep: {max_attempts: 1}
                timeouts:
                  sleep: 1s
            """.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let worker = try ChildProcess(["worker", "--pool", "capped", "--config", path, "--log-level", "warning",
                                       "--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace])
        defer { worker.signal(SIGTERM) }
        try await eventually(timeout: .seconds(20), "the worker to register") { try await farm.workers().count == 1 }

        // The handler's policy allows 5 attempts after 1 s, 2 s, …; the envelope 10: the file's 3 (50 ms apart) win.
        let failing = try await farm.enqueue(EnqueueRequest(kind: "fail", payload: .object([:]), maxAttempts: 10))
        // The job's own timeout is 60 s; the pool caps sleep at 1 s.
        let long = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(30)]), timeout: .seconds(60)))
        let started = ContinuousClock.now
        let failed = try await farm.wait(for: failing, timeout: .seconds(20))
        #expect(failed.state == .dead, "\(failed)")
        #expect(failed.attempts == 3, "the file's max_attempts, not the handler's 5 or the envelope's 10")
        #expect(failed.reason == "exhausted", "\(failed.reason ?? "no reason")")
        let capped = try await farm.wait(for: long, timeout: .seconds(20))
        let took = ContinuousClock.now - started
        #expect(capped.state == .dead && capped.reason == "timeout", "\(capped)")
        #expect(capped.error?.contains("timed out after 1000 ms") == true, "\(capped.error ?? "no error")")
        #expect(took < .seconds(15), "killed at the 1 s cap, not after the job's 30 s of sleep (took \(took))")

        // A kind no worker runs is refused with the file, line and key.
        let typo = FileManager.default.temporaryDirectory.appendingPathComponent("workers-\(UUID().uuidString).yaml").path
        try """
            pools:
              - name: typo
                queues: default
                timeouts:
                  infrence: 10s
            """.write(toFile: typo, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: typo) }
        let refused = try ChildProcess(["supervise", "--config", typo, "--check", "--redis-url", TestRedis.url!])
        #expect(await refused.waitForExit(timeout: .seconds(20)) == 78)
        try await eventually(timeout: .seconds(5), "the error to be printed") { refused.text.contains("infrence") }
        #expect(refused.text.contains("\(typo):5: pools[0].timeouts.infrence is not a kind the workers run; allowed: "), "\(refused.text)")
    }
}
