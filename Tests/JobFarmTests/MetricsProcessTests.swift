import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `jobfarm worker --metrics-port` and `jobfarm exporter` (the real binary): their `/metrics` parse as Prometheus
/// text and the counters match the jobs run.
@Suite("Metrics endpoints", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct MetricsProcessTests {
    @Test(.timeLimit(.minutes(2))) func workerAndExporterMetricsMatchTheJobsRun() async throws {
        let farm = try TestRedis.farm()
        let common = ["--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace, "--log-level", "warning"]
        let workerPort = OwnRedisServer.freePort()
        let exporterPort = OwnRedisServer.freePort()
        let worker = try ChildProcess(["worker", "--queues", "m", "--concurrency", "4", "--metrics-port", String(workerPort)] + common)
        let exporter = try ChildProcess(["exporter", "--port", String(exporterPort)] + common)
        defer {
            worker.signal(SIGTERM)
            exporter.signal(SIGTERM)
        }
        var requests = (0..<10).map { _ in EnqueueRequest(kind: "noop", queue: "m", tier: "premium") }
        requests += (0..<3).map { _ in EnqueueRequest(kind: "fail", queue: "m", tier: "free", payload: .object(["retryable": .bool(false)])) }
        let ids = try await farm.enqueue(requests)
        for id in ids { _ = try await farm.wait(for: id, timeout: .seconds(30)) }

        let process = try PrometheusSamples(parsing: try await scrape(port: workerPort, from: worker))
        #expect(process.type["jobfarm_worker_jobs_started_total"] == "counter")
        #expect(process.sum("jobfarm_worker_jobs_started_total", ["kind": "noop", "tier": "premium", "queue": "m"]) == 10)
        #expect(process.sum("jobfarm_worker_jobs_started_total", ["kind": "fail", "tier": "free"]) == 3)
        #expect(process.sum("jobfarm_worker_jobs_finished_total", ["kind": "noop", "outcome": "succeeded"]) == 10)
        #expect(process.sum("jobfarm_worker_jobs_finished_total", ["kind": "fail", "outcome": "dead"]) == 3)
        #expect(process.type["jobfarm_worker_queue_wait_seconds"] == "histogram")
        #expect(process.sum("jobfarm_worker_queue_wait_seconds_count", ["kind": "noop"]) == 10)
        #expect(process.sum("jobfarm_worker_job_run_seconds_count", [:]) == 13)
        #expect(process.sum("jobfarm_worker_job_run_seconds_bucket", ["kind": "noop", "le": "+Inf"]) == 10)
        #expect(process.sum("jobfarm_worker_slots", [:]) == 4)

        let queue = try PrometheusSamples(parsing: try await scrape(port: exporterPort, from: exporter))
        #expect(queue.type["jobfarm_queue_enqueued_total"] == "counter")
        #expect(queue.sum("jobfarm_queue_enqueued_total", ["queue": "m"]) == 13)
        #expect(queue.sum("jobfarm_queue_succeeded_total", ["queue": "m"]) == 10)
        #expect(queue.sum("jobfarm_queue_dead_lettered_total", ["queue": "m"]) == 3)
        #expect(queue.sum("jobfarm_queue_dead_letters", ["queue": "m"]) == 3)
        #expect(queue.type["jobfarm_queue_outcomes_total"] == "counter")
        #expect(queue.sum("jobfarm_queue_outcomes_total", ["queue": "m", "tier": "premium", "kind": "noop", "outcome": "succeeded"]) == 10)
        #expect(queue.sum("jobfarm_queue_outcomes_total", ["queue": "m", "tier": "free", "kind": "fail", "outcome": "dead_lettered"]) == 3)
        #expect(queue.sum("jobfarm_queue_outcomes_total", ["outcome": "retried"]) == 0)
        // Enqueues by tier and kind (a mixed-tier call: the general enqueue script).
        #expect(queue.type["jobfarm_jobs_enqueued_total"] == "counter")
        #expect(queue.sum("jobfarm_jobs_enqueued_total", ["queue": "m", "tier": "premium", "kind": "noop"]) == 10)
        #expect(queue.sum("jobfarm_jobs_enqueued_total", ["queue": "m", "tier": "free", "kind": "fail"]) == 3)
        #expect(queue.sum("jobfarm_queue_outcomes_total", ["outcome": "enqueued"]) == 0, "enqueues are not attempts ended")
        #expect(queue.sum("jobfarm_queue_depth", ["queue": "m"]) == 0)
        #expect(queue.sum("jobfarm_queue_in_flight", ["queue": "m"]) == 0)
        #expect(queue.sum("jobfarm_queue_live_workers", ["queue": "m"]) == 1)
        #expect(queue.sum("jobfarm_live_workers", ["pool": "none"]) == 1)
        #expect(queue.sum("jobfarm_exporter_redis_up", [:]) == 1)

        // A paused tier shows as such.
        try await farm.pause(queue: "m", tier: "free")
        let paused = try PrometheusSamples(parsing: try await scrape(port: exporterPort, from: exporter))
        #expect(paused.sum("jobfarm_queue_paused", ["queue": "m", "tier": "free"]) == 1)
    }

    /// GET /metrics, retried while the process starts listening.
    func scrape(port: Int, from child: ChildProcess) async throws -> String {
        let url = URL(string: "http://127.0.0.1:\(port)/metrics")!
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                let (data, response) = try await URLSession.shared.data(from: url)
                if (response as? HTTPURLResponse)?.statusCode == 200 { return String(decoding: data, as: UTF8.self) }
            } catch where ContinuousClock.now < deadline {
            }
            if ContinuousClock.now >= deadline { throw TestFailure("no /metrics on port \(port); output:\n\(child.text)") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// A small parser of the Prometheus text exposition format (0.0.4): `# TYPE` lines and samples
/// `name{label="value",…} number`, with the escapes `\\`, `\"` and `\n` in label values. Throws on a line it cannot
/// read, so a malformed exposition fails the test.
struct PrometheusSamples {
    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    var samples: [Sample] = []
    var type: [String: String] = [:]

    init(parsing text: String) throws {
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4 else { throw TestFailure("bad TYPE line: \(line)") }
                type[String(parts[2])] = String(parts[3])
                continue
            }
            if line.hasPrefix("#") { continue }
            samples.append(try Self.sample(Substring(line)))
        }
    }

    static func sample(_ line: Substring) throws -> Sample {
        var rest = line[...]
        let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }
        guard !name.isEmpty, let first = name.first, !first.isNumber else { throw TestFailure("bad metric name in: \(line)") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let key = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                guard !key.isEmpty else { throw TestFailure("bad label name in: \(line)") }
                rest = rest.dropFirst(key.count)
                guard rest.hasPrefix("=\"") else { throw TestFailure("expected =\" in: \(line)") }
                rest = rest.dropFirst(2)
                var value = ""
                while let c = rest.first, c != "\"" {
                    rest = rest.dropFirst()
                    if c == "\\" {
                        guard let escaped = rest.first else { throw TestFailure("bad escape in: \(line)") }
                        rest = rest.dropFirst()
                        switch escaped {
                        case "n": value.append("\n")
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        default: throw TestFailure("bad escape \\\(escaped) in: \(line)")
                        }
                    } else {
                        value.append(c)
                    }
                }
                guard rest.first == "\"" else { throw TestFailure("unterminated label value in: \(line)") }
                rest = rest.dropFirst()
                labels[String(key)] = value
                if rest.first == "," { rest = rest.dropFirst() }
            }
            rest = rest.dropFirst()
        }
        let fields = rest.split(separator: " ")
        guard (1...2).contains(fields.count) else { throw TestFailure("expected a value (and a timestamp) in: \(line)") }
        let text = String(fields[0])
        let value: Double? = switch text {
        case "+Inf": .infinity
        case "-Inf": -.infinity
        case "NaN": .nan
        default: Double(text)
        }
        guard let value else { throw TestFailure("bad value \(text) in: \(line)") }
        return Sample(name: String(name), labels: labels, value: value)
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    func sum(_ name: String, _ labels: [String: String]) -> Double {
        samples.filter { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }
            .reduce(0) { $0 + $1.value }
    }
}

/// The README's operating commands (`jobfarm queue pause|paused|resume`, `workers`, `stats`) as they are written there.
@Suite("Operating commands", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct OperatingCommandTests {
    func run(_ arguments: [String], _ farm: JobFarm) async throws -> String {
        let child = try ChildProcess(arguments + ["--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace])
        let status = await child.waitForExit(timeout: .seconds(30))
        #expect(status == 0, "jobfarm \(arguments.joined(separator: " ")):\n\(child.text)")
        try await Task.sleep(for: .milliseconds(50))  // the last output
        return child.text
    }

    @Test(.timeLimit(.minutes(1))) func pauseListResumeWorkersAndStats() async throws {
        let farm = try TestRedis.farm()
        _ = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "default", tier: "free"))
        #expect(try await run(["queue", "pause", "ml"], farm).contains("paused ml"))
        #expect(try await run(["queue", "pause", "default", "--tier", "free"], farm).contains("paused default tier free"))
        let listed = try await run(["queue", "paused"], farm)
        #expect(listed.contains("* (whole queue)") && listed.contains("free"), "\(listed)")
        #expect(try await run(["queue", "resume", "ml"], farm).contains("resumed ml"))
        #expect(try await farm.pauses().map { "\($0.queue) \($0.tier ?? "*")" } == ["default free"])
        #expect(try await run(["queue", "resume", "default", "--tier", "free"], farm).contains("resumed default tier free"))
        #expect(try await run(["workers"], farm).contains("no live workers"))
        let stats = try await run(["stats"], farm)
        #expect(stats.contains("delayed") && stats.contains("retrying") && stats.contains("due"), "\(stats)")
    }
}
