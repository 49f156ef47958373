import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// `jobfarm enqueue --file` with JSON lines, against the real Redis: different kinds, queues and payloads in one
/// file through the bulk path; a bad line names its line and enqueues nothing.
@Suite("Enqueue JSON lines", .serialized, .timeLimit(.minutes(2)), .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct JobLinesTests {
    func write(_ text: String, suffix: String = ".jsonl") throws -> URL {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-lines-\(UUID().uuidString)\(suffix)")
        try Data(text.utf8).write(to: file)
        return file
    }

    @Test func everyLineBecomesAJobInFileOrder() async throws {
        let farm = try TestRedis.farm()
        let namespace = farm.configuration.namespace
        let file = try write("""
            {"kind": "echo", "payload": {"n": 1}}

            {"kind": "noop", "queue": "lines-b", "tier": "free", "count": 2}
            {"kind": "sleep", "queue": "lines-b", "payload": {"ms": 5}, "delay": 60, "max_attempts": 2, "timeout": 9}
            """)
        defer { try? FileManager.default.removeItem(at: file) }
        let run = try await CommandRun(["enqueue", "--file", file.path, "--redis-url", try #require(TestRedis.url), "--namespace", namespace])
        #expect(run.status == 0, "\(run.errors)")
        let ids = run.output.split(separator: "\n").map(String.init)
        #expect(ids.count == 4)
        guard ids.count == 4 else { return }
        let first = try #require(try await farm.status(id: ids[0], queue: "default"))
        #expect(first.kind == "echo")
        #expect(first.state == .queued)
        // A job to run now waits as its queue's pending entry "<qt> <tier> <envelope>" (docs/PROTOCOL.md §3a).
        let entry = try await redis(farm, "HGET", QueueKeys(namespace: namespace, queue: "default").pending, ids[0])
        #expect(entry.string?.contains("\"n\":1") == true, "\(entry)")
        for id in ids[1...2] {
            let status = try #require(try await farm.status(id: id, queue: "lines-b"))
            #expect(status.kind == "noop")
            #expect(status.tier == "free")
        }
        let delayed = try #require(try await farm.status(id: ids[3], queue: "lines-b"))
        #expect(delayed.kind == "sleep")
        #expect(delayed.state == .scheduled)
        #expect(delayed.maxAttempts == 2)
    }

    @Test func aBadLineIsNamedAndNothingIsEnqueued() async throws {
        let farm = try TestRedis.farm()
        let namespace = farm.configuration.namespace
        let cases = [
            ("{\"kind\": \"echo\"}\n{\"kind\": \"echo\", \"tier\": \"gold\"}\n", ":2: tier 'gold' is not one of premium, standard, free"),
            ("{\"kind\": \"echo\"}\n{\"kind\": \"echo\"}\n{\"kind\": \"echo\",}\n", ":3: not JSON"),
            ("{\"kind\": \"echo\"}\n{\"payload\": {}}\n", ":2: no \"kind\""),
            ("{\"kind\": \"echo\", \"qeue\": \"x\"}\n{\"kind\": \"echo\"}\n", ":1: unknown key \"qeue\""),
            ("{\"kind\": \"echo\"}\n[1, 2]\n", ":2: each line must be a JSON object"),
            ("{\"kind\": \"echo\", \"count\": 0}\n{\"kind\": \"echo\"}\n", ":1: \"count\" must be at least 1, got 0"),
        ]
        for (text, message) in cases {
            let file = try write(text)
            defer { try? FileManager.default.removeItem(at: file) }
            let run = try await CommandRun(["enqueue", "--file", file.path, "--redis-url", try #require(TestRedis.url), "--namespace", namespace])
            #expect(run.status != 0)
            #expect(run.errors.contains(file.path + message), "\(run.errors)")
            #expect(run.errors.contains("nothing was enqueued"), "\(run.errors)")
            #expect(run.output.isEmpty)
        }
        let keys = try await redis(farm, "KEYS", namespace + ":*")
        #expect(keys.array?.isEmpty == true, "\(keys)")
    }

    @Test func severalLinesWithoutTheSuffixAreReadAsLinesAndASingleObjectStaysAJobFile() async throws {
        let farm = try TestRedis.farm()
        let namespace = farm.configuration.namespace
        let lines = try write("{\"kind\": \"echo\"}\n{\"kind\": \"noop\"}\n", suffix: ".txt")
        let single = try write("{\"kind\": \"echo\", \"count\": 3}", suffix: ".json")
        defer {
            try? FileManager.default.removeItem(at: lines)
            try? FileManager.default.removeItem(at: single)
        }
        let url = try #require(TestRedis.url)
        let first = try await CommandRun(["enqueue", "--file", lines.path, "--redis-url", url, "--namespace", namespace])
        #expect(first.status == 0, "\(first.errors)")
        #expect(first.output.split(separator: "\n").count == 2)
        let second = try await CommandRun(["enqueue", "--file", single.path, "--redis-url", url, "--namespace", namespace])
        #expect(second.status == 0, "\(second.errors)")
        #expect(second.output.split(separator: "\n").count == 3)
    }

    @Test func theSampleInPipelinesDocEnqueues() async throws {
        let page = try String(contentsOf: PackagePaths.root.appendingPathComponent("docs/PIPELINES.md"), encoding: .utf8)
        let start = try #require(page.range(of: "$ cat jobs.jsonl\n"))
        let end = try #require(page.range(of: "$ jobfarm enqueue --file jobs.jsonl", range: start.upperBound..<page.endIndex))
        let sample = String(page[start.upperBound..<end.lowerBound])
        let farm = try TestRedis.farm()
        let file = try write(sample)
        defer { try? FileManager.default.removeItem(at: file) }
        let run = try await CommandRun(["enqueue", "--file", file.path, "--redis-url", try #require(TestRedis.url), "--namespace", farm.configuration.namespace])
        #expect(run.status == 0, "\(run.errors)")
        #expect(run.output.split(separator: "\n").count == 4)
    }
}
