import Compute
import Foundation
import JobFarmTesting
import JobQueue
import Testing

/// The small-batch kernel limits of `jobfarm worker` processes: measured once per machine and cached, read from the
/// cache at the next start, not measured at all by a worker that serves no ML queue. Asserts where the limits came
/// from, never what they are (that depends on the CPU, the OpenBLAS kernels and the build).
@Suite("Small-batch kernel limits (worker processes)", .serialized,
       .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"),
       .enabled(if: SmallBatchKernel.accelerated, "no AVX2/FMA/F16C on this CPU: the small-batch kernels are never used"))
struct KernelLimitsProcessTests {
    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-limits-cache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    func startWorker(_ farm: JobFarm, queues: String, cache: URL, exitWhenEmpty: Bool = false, environment: [String: String] = [:]) throws -> ChildProcess {
        try ChildProcess(
            ["worker", "--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace, "--queues", queues, "--log-level", "info"]
                + (exitWhenEmpty ? ["--exit-when-empty"] : []),
            environment: ["JOBFARM_KERNEL_CALIBRATION": "1", "JOBFARM_CACHE_DIR": cache.path].merging(environment) { $1 })
    }

    /// The `small_batch_limits` field of the "ML kinds ready" line.
    func limitsField(_ output: String) throws -> String {
        let line = try #require(output.split(separator: "\n").first { $0.contains("ML kinds ready") }, "no 'ML kinds ready' in:\n\(output)")
        let start = try #require(line.range(of: "small_batch_limits=\""), "\(line)")
        return String(line[start.upperBound...].prefix { $0 != "\"" })
    }

    @Test func measuredOnceThenReadFromTheCacheEvenOverACorruptFile() async throws {
        let farm = try TestRedis.farm()
        let cache = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: cache) }
        let file = cache.appendingPathComponent(SmallBatchLimitsCache.fileName)
        try Data("{\"version\": 1, \"entries\": {\"half a file".utf8).write(to: file)

        // 1. First start over a corrupt file: measured in the background, written to the cache.
        let first = try startWorker(farm, queues: "ml", cache: cache)
        try await eventually(timeout: .seconds(150), "the first worker to measure the limits") { first.text.contains("small-batch kernel limits measured") }
        first.signal(SIGKILL)  // the file is written before the line is logged
        await first.waitForExit(timeout: .seconds(10))
        #expect(try limitsField(first.text).hasPrefix("measuring in the background"), "\(first.text)")
        let stored = SmallBatchLimitsCache.load(path: file.path)
        #expect(stored.entries.count == 1, "\(stored)")
        #expect(stored.entries.values.allSatisfy { $0.isValid }, "\(stored)")
        let modified = try FileManager.default.attributesOfItem(atPath: file.path)[.modificationDate] as? Date

        // 2. Second start: the cache answers at once; nothing is measured, the file is not rewritten.
        let second = try startWorker(farm, queues: "ml", cache: cache, exitWhenEmpty: true)
        #expect(await second.waitForExit(timeout: .seconds(30)) == 0, "\(second.text)")
        #expect(try limitsField(second.text).hasPrefix("cached ("), "\(second.text)")
        #expect(!second.text.contains("small-batch kernel limits measured"), "\(second.text)")
        #expect(try FileManager.default.attributesOfItem(atPath: file.path)[.modificationDate] as? Date == modified)
    }

    @Test func aWorkerWithoutAnMLQueueNeitherMeasuresNorReads() async throws {
        let farm = try TestRedis.farm()
        let cache = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: cache) }
        let worker = try startWorker(farm, queues: "default", cache: cache, exitWhenEmpty: true)
        #expect(await worker.waitForExit(timeout: .seconds(30)) == 0, "\(worker.text)")
        let field = try limitsField(worker.text)
        #expect(field.hasPrefix("defaulted ("), "\(field)")
        #expect(field.contains("no ML queue served (--queues default"), "\(field)")
        #expect(!worker.text.contains("limits measured"))
        #expect(!FileManager.default.fileExists(atPath: cache.appendingPathComponent(SmallBatchLimitsCache.fileName).path))

        // The explicit setting wins over an ML queue.
        let off = try startWorker(farm, queues: "ml", cache: cache, exitWhenEmpty: true, environment: ["JOBFARM_KERNEL_CALIBRATION": "0"])
        #expect(await off.waitForExit(timeout: .seconds(30)) == 0, "\(off.text)")
        #expect(try limitsField(off.text) == "defaulted (\(SmallBatchKernel.defaultLimits.map(String.init).joined(separator: "/")) rows): calibration off (JOBFARM_KERNEL_CALIBRATION=0)")
    }
}
