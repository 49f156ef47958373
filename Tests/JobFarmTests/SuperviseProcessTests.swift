import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// `jobfarm worker --pool` and `jobfarm supervise` (the real binary) against a real Redis.
@Suite("Pools and the supervisor", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct SuperviseProcessTests {
    func writeConfig(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("workers-\(UUID().uuidString).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Gone, or a zombie nobody reaped yet (an orphan's new parent may be slow to reap it).
    static func hasExited(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return true }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    func common(_ farm: JobFarm) -> [String] {
        ["--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace]
    }

    @Test(.timeLimit(.minutes(1))) func versionIsTheOneConstant() async throws {
        let child = try ChildProcess(["--version"])
        #expect(await child.waitForExit(timeout: .seconds(20)) == 0)
        try await eventually(timeout: .seconds(5), "the version to be printed") { child.text.contains("\n") }
        #expect(child.text.trimmingCharacters(in: .whitespacesAndNewlines) == JobFarmVersion.current)
    }

    @Test(.timeLimit(.minutes(1))) func workerPoolTakesThePoolsSettingsAndOptionsOverrideThem() async throws {
        let farm = try TestRedis.farm()
        let path = try writeConfig("""
            pools:
              - name: narrow
                queues: q1:premium,q2
                concurrency: 3
                fetch_batch: 5
              - name: other
                queues: default
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try ChildProcess(["worker", "--pool", "narrow", "--config", path, "--log-level", "warning"] + common(farm))
        let overridden = try ChildProcess(["worker", "--pool", "narrow", "--config", path, "--concurrency", "2", "--log-level", "warning"] + common(farm))
        try await eventually(timeout: .seconds(20), "two workers to register") { try await farm.workers().count == 2 }
        let workers = try await farm.workers()
        #expect(workers.allSatisfy { $0.id.hasPrefix("narrow-") }, "\(workers.map(\.id))")
        #expect(Set(workers.compactMap { $0.fields["concurrency"] }) == ["3", "2"])
        for worker in workers {
            let queues = worker.fields["queues"] ?? ""
            #expect(queues.contains("q1") && queues.contains("q2") && !queues.contains("default"), "\(queues)")
        }
        // A premium job of q1 runs; the pool does not serve the default queue.
        let served = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "q1", tier: "premium"))
        #expect(try await farm.wait(for: served, timeout: .seconds(10)).state == .succeeded)
        for child in [fromFile, overridden] {
            child.signal(SIGTERM)
            #expect(await child.waitForExit(timeout: .seconds(20)) == 0, "output:\n\(child.text)")
        }
        // A pool the file lacks: the error names the file and the pools it has.
        let missing = try ChildProcess(["worker", "--pool", "nope", "--config", path] + common(farm))
        #expect(await missing.waitForExit(timeout: .seconds(20)) == 78)
        try await eventually(timeout: .seconds(5), "the error to be printed") { missing.text.contains("nope") }
        #expect(missing.text.contains("has no pool named 'nope'; the pools are: narrow, other"), "\(missing.text)")
    }

    @Test(.timeLimit(.minutes(2))) func aKilledWorkerIsRestartedItsJobsComeBackAndSIGTERMStopsEveryChild() async throws {
        let farm = try TestRedis.farm()
        let path = try writeConfig("""
            pools:
              - name: busy
                queues: default
                concurrency: 2
                fetch_batch: 2
                shutdown_grace: 10
                processes: 2
              - name: idle
                queues: elsewhere
                processes: 1
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let supervisor = try ChildProcess(
            ["supervise", "--config", path, "--lease", "2", "--restart-delay", "0.2", "--log-level", "info"] + common(farm))
        try await eventually(timeout: .seconds(20), "three workers to register") { try await farm.workers().count == 3 }

        let ids = try await farm.enqueue((0..<8).map { _ in EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(1.5)])) })
        try await eventually(timeout: .seconds(20), "both busy workers to hold jobs") {
            let busy = try await farm.workers().filter { $0.id.hasPrefix("busy-") && ($0.fields["busy"].flatMap(Int.init) ?? 0) > 0 }
            return busy.count == 2
        }
        let victim = try #require(try await farm.workers().first { $0.id.hasPrefix("busy-1-") })
        let pid = try #require(victim.fields["pid"].flatMap { Int32($0) })
        #expect(kill(pid, SIGKILL) == 0)

        let supervisorPID = supervisor.process.processIdentifier
        try await eventually(timeout: .seconds(20), "the supervisor to restart the killed worker") {
            try await farm.workers().contains { $0.id == "busy-1-\(supervisorPID)-2" }
        }
        #expect(supervisor.text.contains("worker exited; restarting it"), "\(supervisor.text)")
        #expect(supervisor.text.contains("killed by signal 9"), "\(supervisor.text)")

        var leaseLosses = 0
        for id in ids {
            let status = try await farm.wait(for: id, timeout: .seconds(40))
            #expect(status.state == .succeeded)
            leaseLosses += status.leaseLosses
        }
        #expect(leaseLosses >= 1, "the killed worker held jobs: they came back")
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["succeeded"] == ids.count, "each job succeeded exactly once")
        #expect(stats.dead == 0)

        let children = try await farm.workers().filter { !$0.id.hasPrefix("busy-1-\(supervisorPID)-1") }
            .compactMap { $0.fields["pid"].flatMap { Int32($0) } }
        supervisor.signal(SIGTERM)
        #expect(await supervisor.waitForExit(timeout: .seconds(30)) == 0, "output:\n\(supervisor.text)")
        #expect(supervisor.text.contains("every worker stopped"), "\(supervisor.text)")
        for child in children { #expect(kill(child, 0) != 0, "worker \(child) stopped") }
        try await eventually(timeout: .seconds(10), "the workers to deregister") {
            try await farm.workers().allSatisfy { $0.id.hasPrefix("busy-1-\(supervisorPID)-1") }
        }
    }

    @Test(.timeLimit(.minutes(1))) func workersStopByThemselvesWhenTheSupervisorIsKilled() async throws {
        let farm = try TestRedis.farm()
        let path = try writeConfig("""
            pools:
              - name: orphans
                queues: default
                shutdown_grace: 10
                processes: 2
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let supervisor = try ChildProcess(["supervise", "--config", path, "--no-autoscale", "--log-level", "info"] + common(farm))
        try await eventually(timeout: .seconds(20), "two workers to register") { try await farm.workers().count == 2 }
        let children = try await farm.workers().compactMap { $0.fields["pid"].flatMap { Int32($0) } }
        #expect(children.count == 2)
        let id = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(1)])))
        try await eventually(timeout: .seconds(10), "the job to run") { try await farm.status(id: id)?.state == .running }
        supervisor.signal(SIGKILL)
        _ = await supervisor.waitForExit(timeout: .seconds(5))
        // Each worker sees its parent gone within a second and stops gracefully: the running job finishes first.
        try await eventually(timeout: .seconds(20), "the orphaned workers to stop") {
            children.allSatisfy(Self.hasExited)
        }
        #expect(try await farm.status(id: id)?.state == .succeeded)
        try await eventually(timeout: .seconds(10), "the workers to deregister") { try await farm.workers().isEmpty }
    }

    @Test(.timeLimit(.minutes(1))) func aSecondSignalKillsTheWorkersAndTheirJobsComeBack() async throws {
        let farm = try TestRedis.farm()
        let path = try writeConfig("""
            pools:
              - name: slow
                queues: default
                shutdown_grace: 30
                processes: 1
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let supervisor = try ChildProcess(["supervise", "--config", path, "--lease", "2", "--log-level", "info"] + common(farm))
        let id = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(60)])))
        try await eventually(timeout: .seconds(20), "the job to run") { try await farm.status(id: id)?.state == .running }
        supervisor.signal(SIGTERM)
        try await eventually(timeout: .seconds(10), "the supervisor to pass SIGTERM on") { supervisor.text.contains("stopping the workers") }
        supervisor.signal(SIGINT)
        #expect(await supervisor.waitForExit(timeout: .seconds(10)) == 0, "output:\n\(supervisor.text)")
        #expect(supervisor.text.contains("second signal: killing the workers"), "\(supervisor.text)")
        #expect(supervisor.text.contains("killed by signal 9"), "\(supervisor.text)")
        // Its lease expires and the reaper (what any worker's maintenance runs) queues the job again.
        let client = RedisClient(configuration: farm.configuration.redis)
        defer { client.close() }
        try await eventually(timeout: .seconds(15), "the job to come back") {
            _ = try await farm.reapExpiredLeases(queue: "default", on: client)
            return try await farm.status(id: id)?.state == .queued
        }
        #expect(try await farm.cancel(id: id) == .cancelled)
    }
}
