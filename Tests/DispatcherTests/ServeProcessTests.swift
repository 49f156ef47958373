import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import JobFarmTesting
import JobProtocol
import Testing

/// `jobfarm serve` as a process: settings from the environment and flags, and graceful shutdown on SIGTERM.
@Suite("jobfarm serve process", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct ServeProcessTests {
    @Test(.timeLimit(.minutes(1)))
    func sigtermEndsAWaitInProgressWithTheJobsStateAndExitsCleanly() async throws {
        let namespace = "tserve" + JobID.make().suffix(10).lowercased()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("serve-\(namespace).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let handle = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: PackagePaths.jobfarm)
        process.arguments = ["serve", "--redis-url", TestRedis.url!, "--namespace", namespace, "--port", "0", "--max-wait", "20s", "--no-auth"]
        process.environment = ProcessInfo.processInfo.environment.merging(["JOBFARM_SERVE_BULK_LIMIT": "2"]) { $1 }
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        // `--port 0`: the process prints the port it got.
        var base: String?
        for _ in 0..<200 where base == nil {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }) {
                base = String(line.dropFirst("listening on ".count))
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let api = DispatcherClient(base: try #require(base, "no 'listening on' line:\n\((try? String(contentsOf: log, encoding: .utf8)) ?? "")"),
                                   contract: try OpenAPIContract.shared())

        let created = try await api.post("/v1/jobs", #"{"kind": "sleep", "payload": {"seconds": 1}, "delaySeconds": 120}"#)
        let id = try #require(created.json?["id"]?.stringValue)
        let bulk = try await api.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]}"#)
        #expect(bulk.status == 422, "JOBFARM_SERVE_BULK_LIMIT=2 applies")

        let clock = ContinuousClock()
        let start = clock.now
        async let waited = api.get("/v1/jobs/\(id)/wait?timeout=15s")
        try await Task.sleep(for: .milliseconds(500))
        kill(process.processIdentifier, SIGTERM)
        let answer = try await waited
        #expect(answer.status == 200)
        #expect(answer.json?["state"] == .string("scheduled"), "answered at shutdown with the job as it is")
        #expect(clock.now - start < .seconds(10), "not held until the 15 s timeout")
        for _ in 0..<100 where process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!process.isRunning, "exits after the requests in flight")
        if !process.isRunning { #expect(process.terminationStatus == 0) }
    }
}
