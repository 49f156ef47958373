import Foundation
import JobFarmTesting
import Testing

/// wrk, where Debian puts it.
let installedWrk: String? = ["/usr/bin/wrk", "/usr/local/bin/wrk"].first { FileManager.default.isExecutableFile(atPath: $0) }

/// `jobfarm bench api` runs and prints its table (a few seconds, a few connections). Never asserts a speed.
@Suite("jobfarm bench api", .enabled(if: TestRedis.available && installedWrk != nil, "needs JOBFARM_TEST_REDIS_URL and wrk (scripts/test provides both)"))
struct BenchAPISmokeTests {
    @Test(.timeLimit(.minutes(2)))
    func aShortRunPrintsItsTable() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: PackagePaths.jobfarm)
        process.arguments = ["bench", "api", "--redis-url", TestRedis.url!, "--duration", "1s", "--connections", "8", "--rate", "50",
                             "--phases", "closed,open,events", "--e2e-jobs", "100", "--log-level", "error"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = await Task.detached { output.fileHandleForReading.readDataToEndOfFile() }.value
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.contains("| figure | rate | p50 | p95 | p99 | errors | ratio to the no-work route |"), "\(text)")
        for row in ["| no-work Hummingbird route (ceiling) |", "| POST /v1/jobs, API key |", "| POST /v1/jobs, API key + rate limit |",
                    "| POST /v1/jobs, API key + Idempotency-Key |", "| open loop, API key |",
                    "| queue end to end, no dispatcher connected |", "| queue end to end, a dispatcher connected (no wait in progress) |"] {
            #expect(text.contains(row), "missing \(row):\n\(text)")
        }
    }
}
