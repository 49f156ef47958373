import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// The run-time counter `complete` keeps, `jobfarm autoscale --once`, and `jobfarm supervise` scaling a pool up
/// under a sudden backlog of 20,000 jobs and back down once it is drained, with its Prometheus targets file following
/// (the real binary against a real Redis).
@Suite("Autoscaling against Redis", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct AutoscaleProcessTests {
    func writeConfig(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("workers-\(UUID().uuidString).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func common(_ farm: JobFarm) -> [String] {
        ["--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace]
    }

    @Test(.timeLimit(.minutes(1))) func completeCountsEachJobsRunTime() async throws {
        let farm = try TestRedis.farm()
        let ids = try await farm.enqueue((0..<3).map { _ in EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(0.2)])) })
        try await withWorker(farm: farm) { _ async throws in
            for id in ids {
                let status = try await farm.wait(for: id, timeout: .seconds(20))
                #expect(status.state == .succeeded)
            }
        }
        let counters = try await farm.stats(queues: ["default"])[0].counters
        #expect(counters["run_count"] == 3, "\(counters)")
        let runMs = try #require(counters["run_ms"])
        #expect(runMs >= 3 * 200 && runMs < 3 * 10_000, "\(runMs) ms")
    }

    @Test(.timeLimit(.minutes(1))) func autoscaleOncePrintsTheDesiredCountAndWhy() async throws {
        let farm = try TestRedis.farm()
        let path = try writeConfig("""
            pools:
              - name: general
                queues: default
                concurrency: 5
                processes: {min: 1, max: 6}
              - name: idle
                queues: elsewhere
                processes: {min: 1, max: 4}
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        // 170 standard jobs × 1 s (no job timed yet: the assumed service time) within 10 s = 17 slots (20 when the
        // oldest has waited 1.5 s of the 10); at 80 % of 5 slots a process: 5 processes.
        _ = try await farm.enqueue((0..<170).map { _ in EnqueueRequest(kind: "noop") })
        let json = try ChildProcess(["autoscale", "--once", "--json", "--sample", "0.2", "--config", path, "--log-level", "warning"] + common(farm))
        #expect(await json.waitForExit(timeout: .seconds(30)) == 0, "\(json.text)")
        let start = try #require(json.text.firstIndex(of: "{"), "\(json.text)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.text[start...].utf8)) as? [String: Any])
        let pools = try #require(object["pools"] as? [[String: Any]])
        let general = try #require(pools.first { $0["pool"] as? String == "general" })
        #expect(general["desired"] as? Int == 5, "\(general)")
        #expect(general["driver"] as? String == "backlog")
        #expect(general["tier"] as? String == "standard")
        let idle = try #require(pools.first { $0["pool"] as? String == "idle" })
        #expect(idle["desired"] as? Int == 1 && idle["driver"] as? String == "minimum", "\(idle)")

        let text = try ChildProcess(["autoscale", "--once", "--sample", "0.2", "--config", path, "--log-level", "warning"] + common(farm))
        #expect(await text.waitForExit(timeout: .seconds(30)) == 0, "\(text.text)")
        #expect(text.text.contains("pool general: desired 5 (running 0, min 1, max 6) — backlog: standard: 170 waiting"), "\(text.text)")
        #expect(text.text.contains("standard 170 ready"), "\(text.text)")
    }

    @Test(.timeLimit(.minutes(3))) func theSupervisorScalesUpUnderABacklogAndDownOnceDrainedLosingNothing() async throws {
        let farm = try TestRedis.farm()
        let cooldown = 5.0, window = 6.0
        // Each process serves /metrics on its own port; the targets file follows the scaling.
        let portBase = Int.random(in: 30_000...50_000)
        let targets = FileManager.default.temporaryDirectory.appendingPathComponent("targets-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: targets) }
        let path = try writeConfig("""
            pools:
              - name: burst
                queues: default
                concurrency: 16
                fetch_batch: 16
                shutdown_grace: 10
                processes: {min: 1, max: 3}
                metrics_port_base: \(portBase)
                autoscale:
                  target_wait: {standard: 2}
                  interval: 0.5
                  scale_up_cooldown: \(cooldown)
                  scale_down_window: \(window)
                  service_time: 0.2
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let supervisor = try ChildProcess(
            ["supervise", "--config", path, "--lease", "5", "--metrics-port", "0", "--log-level", "info", "--targets-file", targets] + common(farm))
        // On a failure, SIGTERM (not the SIGKILL of ChildProcess's deinit, which would leave its workers running).
        var stopped = false
        defer {
            if !stopped {
                supervisor.signal(SIGTERM)
                let deadline = Date().addingTimeInterval(20)
                while supervisor.process.isRunning && Date() < deadline { usleep(20_000) }
            }
        }
        /// The ports the targets file lists for the pool.
        func targetPorts() throws -> [Int] {
            guard let data = FileManager.default.contents(atPath: targets),
                  let groups = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return [] }
            return groups.flatMap { ($0["targets"] as? [String] ?? []).compactMap { $0.split(separator: ":").last.flatMap { Int($0) } } }.sorted()
        }
        try await eventually(timeout: .seconds(20), "one worker to register") { try await farm.workers().count == 1 }
        #expect(try targetPorts() == [portBase])
        try await eventually(timeout: .seconds(10), "the metrics address") { supervisor.text.contains("metrics on http://") }
        let address = try #require(supervisor.text.split(separator: "\n").first { $0.contains("metrics on http://") }?
            .split(separator: " ").last.map(String.init))
        try await eventually(timeout: .seconds(10), "a first decision") { try await httpText(address).contains("jobfarm_desired_workers{pool=\"burst\"} 1.0") }

        // A sudden backlog: 20,000 sleep jobs of 10 ms (12.5 s of sleep for 16 slots, about 4 s for 48).
        let count = 20_000
        let enqueuedAt = ContinuousClock.now
        let ids = try await farm.enqueue((0..<count).map { _ in EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(0.01), "steps": .number(1)])) })
        try await eventually(timeout: .seconds(cooldown), "a scale-up within the cooldown") { supervisor.text.contains("scaling pool burst from 1 to 3") }
        let scaledUpAfter = ContinuousClock.now - enqueuedAt
        #expect(try await httpText(address).contains("jobfarm_desired_workers{pool=\"burst\"} 3.0"))
        try await eventually(timeout: .seconds(20), "three workers to register") { try await farm.workers().count == 3 }
        // The supervisor rewrites the file as it starts the processes; a loaded machine may register a worker first.
        do {
            try await eventually(timeout: .seconds(10), "the targets file to list the new workers") {
                try targetPorts() == [portBase, portBase + 1, portBase + 2]
            }
        } catch {
            Issue.record("targets file lists \((try? targetPorts()) ?? []); supervisor output:\n\(supervisor.text)")
            throw error
        }

        // Drained, every job exactly once.
        try await eventually(timeout: .seconds(90), "the backlog to drain") {
            try await farm.stats(queues: ["default"])[0].counters["succeeded"] ?? 0 >= count
        }
        let drainedAt = ContinuousClock.now
        // Then down to min once the window has passed (a step at a time, as the window's highest recommendation
        // falls), gracefully.
        do {
            try await eventually(timeout: .seconds(window + 15), "a scale-down to min after the window") { supervisor.text.contains(" to 1 process(es)") }
        } catch {
            Issue.record("supervisor output:\n\(supervisor.text)")
            throw error
        }
        let scaledDownAfter = ContinuousClock.now - drainedAt
        try await eventually(timeout: .seconds(20), "the scaled-in workers to stop") {
            supervisor.text.components(separatedBy: "worker scaled in").count - 1 == 2
        }
        try await eventually(timeout: .seconds(10), "one worker left") { try await farm.workers().count == 1 }
        #expect(try targetPorts() == [portBase], "the targets file forgets the workers scaled in")
        #expect(!supervisor.text.contains("worker exited; restarting it"), "a scaled-in worker is not restarted:\n\(supervisor.text)")

        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["enqueued"] == count)
        #expect(stats.counters["succeeded"] == count, "each job succeeded exactly once")
        #expect(stats.counters["run_count"] == count)
        #expect(stats.counters["retried"] == nil && stats.counters["reaped"] == nil && stats.dead == 0)
        #expect(stats.depth == 0 && stats.inflight == 0 && stats.scheduled == 0)
        // Every job's own record: succeeded, in its first attempt, never lost its lease.
        let client = RedisClient(configuration: farm.configuration.redis, name: "exactly-once")
        defer { client.close() }
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        var notOnce: [String] = []
        for start in stride(from: 0, to: ids.count, by: 2000) {
            let chunk = ids[start..<min(start + 2000, ids.count)]
            let replies = try await client.send(chunk.map { RedisCommand("HMGET", keys.job($0), "state", "attempts", "lost") })
            for (id, reply) in zip(chunk, replies) {
                let fields = reply.array?.map(\.string) ?? []
                if fields.count != 3 || fields[0] != "succeeded" || fields[1] != "1" || fields[2] != nil { notOnce.append("\(id): \(fields)") }
            }
        }
        #expect(Set(ids).count == count)
        #expect(notOnce.isEmpty, "\(notOnce.count) jobs did not succeed exactly once, e.g. \(notOnce.prefix(3))")
        // The counters by tier and kind agree.
        let outcomes = try await farm.outcomeCounts(queues: ["default"])
        #expect(outcomes.first { $0.outcome == "enqueued" && $0.kind == "sleep" }?.count == count)
        #expect(outcomes.first { $0.outcome == "succeeded" && $0.kind == "sleep" }?.count == count)
        // The window held the count after the drain (allow for the last jobs finishing before `succeeded` read).
        #expect(scaledDownAfter >= .seconds(window - 3), "scaled down \(scaledDownAfter) after the drain")
        #expect(scaledUpAfter <= .seconds(cooldown))

        supervisor.signal(SIGTERM)
        #expect(await supervisor.waitForExit(timeout: .seconds(30)) == 0, "output:\n\(supervisor.text)")
        stopped = true
    }
}

/// The text of `GET address`.
func httpText(_ address: String) async throws -> String {
    let (data, _) = try await URLSession.shared.data(from: try #require(URL(string: address)))
    return String(decoding: data, as: UTF8.self)
}
