import Compute
import Dispatcher
import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import Logging
import MLJobs
import ModelStore
import RedisClient
import Testing

/// The documents' HTTP examples, run as written against a real `jobfarm serve` process on loopback, so that they can
/// never drift from the service.
///
/// **The marker.** A fenced ```sh block right after a line `<!-- run: api -->` (in README.md and docs/API.md) is run
/// by bash, each block on its own, with `http://127.0.0.1:8080` replaced by the server's address and these variables
/// set: `JOBFARM_API_KEY` (an operator key of tenant `acme`), `JOBFARM_TENANT_KEY` (tenant `globex`, tiers standard
/// and free, its free tier limited to a burst of 1 at 0.001 jobs/s), `JOBFARM_MODEL` (`mlp`, a stored model of 8 inputs and 4 classes). The
/// working directory is the package root. A worker runs every built-in and ML kind.
///
/// **The statuses.** Each request's expected status is written in the block as `→ NNN` (in a comment), in the order
/// the requests run; a request in a loop writes one `→ NNN` per run. Every `curl` of the block reports its status
/// (a shell function adds `--write-out`, so examples must not use `-w` themselves), and the test compares the two
/// lists. A block that fails (bash `set -euo pipefail`) fails the test with its output.
@Suite("API examples in the docs", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"), .serialized)
struct APIExamplesTests {
    static let marker = "<!-- run: api -->"

    /// A farm for the examples, and the `jobfarm serve` process in front of it.
    struct ExampleFarm: Sendable {
        var base: String
        var operatorKey: String
        var tenantKey: String
        var model: MLPModel
    }

    /// A model `mlp` stored, a worker with the built-in and ML kinds on every queue, two tenants' keys, a tenants
    /// file, and `jobfarm serve` as a process (its own outbox file) on a free port.
    func withExampleFarm<T: Sendable>(_ body: @Sendable (ExampleFarm) async throws -> T) async throws -> T {
        let farm = try TestRedis.farm()
        let model = try inferenceTestModel()
        let registry = ModelRegistry(client: RedisClient(configuration: farm.configuration.redis, name: "test-models"), namespace: farm.configuration.namespace)
        _ = try await registry.push(model: model, name: "mlp")
        let (operatorKey, _) = try await apiKeys(farm).create(tenant: "acme", tiers: farm.configuration.tiers, isOperator: true)
        let (tenantKey, _) = try await apiKeys(farm).create(tenant: "globex", tiers: ["standard", "free"], isOperator: false)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-examples-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let tenants = directory.appendingPathComponent("tenants.json")
        try Data(#"{"tenants": {"acme": {}, "globex": {"tiers": ["standard", "free"], "tierRateLimits": {"free": {"perSecond": 0.001, "burst": 1}}}}}"#.utf8).write(to: tenants)
        var logger = Logger(label: "test.examples")
        logger.logLevel = .error
        var handlers = HandlerRegistry.builtins()
        registerMLJobs(into: &handlers, farm: farm, options: MLJobOptions(workerConcurrency: 4, blasThreads: 1, computeThreads: 1), logger: logger)
        return try await withTestWorker(farm: farm, registry: handlers, queues: nil, concurrency: 4) { _ in
            try await waitUntilRegistered(farm)
            let serve = try await ServeProcess.start(namespace: farm.configuration.namespace, arguments: [
                "--tenants", tenants.path, "--outbox", directory.appendingPathComponent("outbox.sqlite").path, "--key-cache-ttl", "0",
            ])
            defer { serve.stop() }
            return try await body(ExampleFarm(base: serve.base, operatorKey: operatorKey, tenantKey: tenantKey, model: model))
        }
    }

    /// The marked blocks of a Markdown file, with the line each starts on.
    static func markedBlocks(_ markdown: String) -> [(line: Int, text: String)] {
        var blocks: [(Int, String)] = []
        let lines = markdown.components(separatedBy: "\n")
        var index = 0
        while index < lines.count {
            if lines[index].trimmingCharacters(in: .whitespaces) == marker, index + 1 < lines.count, lines[index + 1].hasPrefix("```sh") {
                var body: [String] = []
                var end = index + 2
                while end < lines.count, !lines[end].hasPrefix("```") {
                    body.append(lines[end])
                    end += 1
                }
                blocks.append((index + 3, body.joined(separator: "\n")))
                index = end
            }
            index += 1
        }
        return blocks
    }

    /// Runs one block; returns its output and the statuses its requests got (`<status> <method> <url>` each).
    static func runBlock(_ block: String, farm: ExampleFarm) async throws -> (output: String, statuses: [String]) {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("examples-status-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let prelude = """
            set -euo pipefail
            cd '\(PackagePaths.root.path)'
            export JOBFARM_API_KEY='\(farm.operatorKey)' JOBFARM_TENANT_KEY='\(farm.tenantKey)' JOBFARM_MODEL=mlp
            curl() { command curl --write-out '%{stderr}jobfarm-example-status %{http_code} %{method} %{url_effective}\\n' "$@" 2>>'\(log.path)'; }

            """
        let output = try await shell(prelude + block.replacingOccurrences(of: "http://127.0.0.1:8080", with: farm.base))
        let statuses = ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n")
            .filter { $0.hasPrefix("jobfarm-example-status ") }.map { String($0.dropFirst("jobfarm-example-status ".count)) }
        return (output, statuses)
    }

    /// The `→ NNN` statuses a block expects, in order.
    static func expectedStatuses(_ block: String) -> [String] {
        block.matches(of: /→ ([1-5][0-9][0-9])\b/).map { String($0.output.1) }
    }

    /// Runs every marked block of `file` and checks each request's status; returns the blocks' outputs.
    func runMarkedBlocks(of file: String, farm: ExampleFarm) async throws -> [String] {
        let markdown = try String(contentsOf: PackagePaths.root.appendingPathComponent(file), encoding: .utf8)
        let blocks = Self.markedBlocks(markdown)
        #expect(!blocks.isEmpty, "\(file) has no block marked \(Self.marker)")
        var outputs: [String] = []
        for (line, block) in blocks {
            let (output, statuses) = try await Self.runBlock(block, farm: farm)
            let expected = Self.expectedStatuses(block)
            let got = statuses.map { String($0.prefix(3)) }
            #expect(got == expected, """
                \(file):\(line): the requests' statuses differ from the block's → NNN
                expected: \(expected)
                got:
                \(statuses.joined(separator: "\n"))
                output:
                \(output.suffix(3000))
                """)
            #expect(!statuses.isEmpty, "\(file):\(line): the block made no request")
            outputs.append(output)
        }
        return outputs
    }

    @Test(.timeLimit(.minutes(2)))
    func readmeAndAPIExamplesRunWithTheirStatuses() async throws {
        try await withExampleFarm { farm in
            let readme = try await runMarkedBlocks(of: "README.md", farm: farm).joined(separator: "\n")
            // What the README's comments promise, in the output.
            for expected in ["\"status\":\"ok\"", "\"status\":\"ready\"", "\"state\":\"succeeded\"", "\"result\":{\"hello\":1}",
                             "\"outcome\":\"already_finished\"", "\"workersServing\":1", "\"pointer\":\"/kind\"", "\"pointer\":\"/tier\"",
                             "\"name\":\"default\"", "openapi: 3.1.0", "\"status\":401", "jobfarm_jobs_submitted_total{", "event: final",
                             "\"error\":\"disk full\"", "\"history\":[", "\"dryRun\":true,\"malformed\":[]", "\"count\":1,\"dryRun\":false"] {
                #expect(readme.contains(expected), "missing \(expected) in:\n\(readme)")
            }
            // The retried submission: the same id twice, the second time replayed.
            let ids = readme.matches(of: /id ([0-9A-Z]{26}[.a-z0-9-]*)\n/).map { String($0.output.1) }
            #expect(ids.count == 2 && ids[0] == ids[1], "\(readme)")
            #expect(readme.lowercased().contains("idempotent-replayed: true"), "\(readme)")

            let reference = try await runMarkedBlocks(of: "docs/API.md", farm: farm).joined(separator: "\n")
            for expected in ["\"predictions\":[", "\"ready\":true", "\"outputs\":[", "retry-after:", "\"pointer\":\"/tier\""] {
                #expect(reference.lowercased().contains(expected.lowercased()), "missing \(expected) in:\n\(reference)")
            }
        }
    }

    /// docs/examples/submit.py (plain `requests`) submits an inference job, waits for it and prints the result:
    /// the predictions must be the model's own.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["JOBFARM_REQUESTS_PYTHON"] != nil,
                   "needs JOBFARM_REQUESTS_PYTHON, a python3 with requests (scripts/test sets it)"),
          .timeLimit(.minutes(2)))
    func pythonExampleSubmitsWaitsAndPrintsTheResult() async throws {
        let python = ProcessInfo.processInfo.environment["JOBFARM_REQUESTS_PYTHON"]!
        let script = PackagePaths.root.appendingPathComponent("docs/examples/submit.py").path
        try await withExampleFarm { farm in
            let rows: [[Float]] = [[0.5, -1, 2, 0, 1, 0.25, -0.5, 3], [1, 1, 1, 1, 0, 0, 0, 0]]
            let rowsText = "[" + rows.map { "[" + $0.map { "\($0)" }.joined(separator: ", ") + "]" }.joined(separator: ", ") + "]"
            let (status, output) = try await run("/usr/bin/env", [
                "JOBFARM_URL=\(farm.base)", "JOBFARM_API_KEY=\(farm.tenantKey)", python, script, "mlp", rowsText,
            ], timeout: .seconds(60))
            #expect(status == 0, "\(output)")
            let logits = try farm.model.logits(rows: rows.flatMap { $0 }, batch: rows.count)
            let classes = logits.count / rows.count
            let predictions = (0..<rows.count).map { row in
                (0..<classes).max { logits[row * classes + $0] < logits[row * classes + $1] }!
            }
            #expect(output.contains("state: succeeded"), "\(output)")
            #expect(output.contains("predictions: \(predictions)"), "expected \(predictions) in:\n\(output)")

            // A refused job: the script prints every problem and exits 1.
            let (refused, text) = try await run("/usr/bin/env", [
                "JOBFARM_URL=\(farm.base)", "JOBFARM_API_KEY=\(farm.tenantKey)", python, script, "mlp", "[[1, 2], [3]]",
            ], timeout: .seconds(60))
            #expect(refused == 1, "\(text)")
            #expect(text.contains("/payload/inputs"), "\(text)")
        }
    }
}
