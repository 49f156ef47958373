import Compute
import Foundation
import JobFarmTesting
import JobQueue
import Testing

/// `jobfarm worker`'s OpenBLAS kernel chooser in the real binary: probes in child processes, the cache file, the
/// re-exec. Candidates are `Haswell,Zen` (kernels any AVX2 CPU runs) besides the library's own pick, which depends on
/// the CPU (Haswell or Zen on AMD, Prescott on an Intel Xeon OpenBLAS 0.3.21 does not know, SkylakeX elsewhere):
/// the tests assert the chooser's properties, never a kernel name, a candidate count or a speed.

/// This machine's CPU flags.
enum HostCPU {
    static let flags: Set<String> = {
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("flags") } ?? ""
        return Set(line.split(separator: " ").map(String.init))
    }()
}

@Suite("OpenBLAS kernel choice (worker processes)", .serialized,
       .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"),
       .enabled(if: HostCPU.flags.contains("avx2"), "Haswell/Zen kernels need AVX2"))
struct BLASKernelChoiceProcessTests {
    /// Starts a worker on an empty queue (`--exit-when-empty`: it starts, logs and stops) and returns its output.
    func runWorker(_ farm: JobFarm, environment: [String: String], unset: [String] = ["OPENBLAS_CORETYPE", "JOBFARM_BLAS_CHOSEN"]) async throws -> String {
        let child = try ChildProcess(
            ["worker", "--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace, "--queues", "default",
             "--exit-when-empty", "--log-level", "info"],
            environment: environment, unset: unset)
        let exit = await child.waitForExit(timeout: .seconds(30))
        #expect(exit == 0, "worker output:\n\(child.text)")
        return child.text
    }

    /// The "ML kinds ready" line and its `blas_core`.
    func readyLine(_ output: String) throws -> (line: String, core: String) {
        let lines = output.split(separator: "\n").filter { $0.contains("ML kinds ready") }
        #expect(lines.count == 1, "one start log line, even across a re-exec:\n\(output)")
        let line = String(try #require(lines.first, "no 'ML kinds ready' in:\n\(output)"))
        let field = try #require(line.split(separator: " ").first { $0.hasPrefix("blas_core=") })
        return (line, String(field.dropFirst("blas_core=".count)))
    }

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-blas-cache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    func loadEntry(_ file: URL) throws -> (cache: [String: Any], key: String, entry: [String: Any]) {
        let cache = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        let entries = try #require(cache["entries"] as? [String: Any])
        #expect(entries.count == 1)
        let key = try #require(entries.keys.first)
        return (cache, key, try #require(entries[key] as? [String: Any]))
    }

    @Test func measuresOnceCachesAndReexecutesIntoTheWinner() async throws {
        let farm = try TestRedis.farm()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("blas-kernels.json")
        let environment = ["JOBFARM_BLAS_AUTOTUNE": "1", "JOBFARM_BLAS_CANDIDATES": "Haswell,Zen", "JOBFARM_CACHE_DIR": directory.path]

        // 1. First start: every candidate probed in a child, figures written to the cache.
        let first = try await runWorker(farm, environment: environment)
        #expect(first.contains("measuring OpenBLAS kernels"), "\(first)")
        let (_, key, entry) = try loadEntry(file)
        #expect(key.contains("openblas=OpenBLAS "), "keyed by the OpenBLAS config: \(key)")
        let results = try #require(entry["results"] as? [[String: Any]])
        // Every candidate measured: the library's own (whatever this CPU makes it) and each of Haswell/Zen that
        // differs from it.
        let ownCore = try #require(results.first { $0["coreType"] is NSNull }?["core"] as? String, "the library's own choice is a candidate: \(results)")
        let extras = ["haswell", "zen"].filter { $0 != ownCore.lowercased() }
        #expect(results.count == 1 + extras.count, "\(results)")
        #expect(Set(results.compactMap { ($0["coreType"] as? String)?.lowercased() }) == Set(extras), "\(results)")
        for result in results {
            #expect(result["failure"] == nil, "\(result)")
            for figure in ["sgemmB64", "sgemmB512", "sgemvB1"] {
                #expect(((result[figure] as? NSNumber)?.doubleValue ?? 0) > 0.5, "\(figure) of \(result)")
            }
        }
        // The winner is the one the decision rule picks from the very figures cached.
        let decoded = try JSONDecoder().decode([BLASCandidateResult].self, from: JSONSerialization.data(withJSONObject: results))
        let chosen = try #require(entry["chosen"] as? String)
        #expect(BLASKernelChooser.decide(decoded).core == chosen, "\(decoded)")
        let (ready1, core1) = try readyLine(first)
        #expect(core1 == chosen, "runs what it chose (re-executed if that was not the library's own)")
        #expect(ready1.contains("blas_choice=\"measured: \(chosen) "), "\(ready1)")
        #expect(ready1.contains("GFLOP/s (geomean b=64,512"), "\(ready1)")
        #expect(!ready1.contains("; cached"), "\(ready1)")

        // 2. Second start: the cache answers, nothing is probed.
        let modified = try FileManager.default.attributesOfItem(atPath: file.path)[.modificationDate] as? Date
        let second = try await runWorker(farm, environment: environment)
        #expect(!second.contains("measuring OpenBLAS kernels"), "\(second)")
        let (ready2, core2) = try readyLine(second)
        #expect(core2 == chosen)
        #expect(ready2.contains("; cached\""), "\(ready2)")
        #expect(try FileManager.default.attributesOfItem(atPath: file.path)[.modificationDate] as? Date == modified, "not rewritten")

        // 3. The cached figures say another candidate is twice as fast as any: the worker re-executes itself into it
        //    (OPENBLAS_CORETYPE set), and the new image logs the choice once without measuring.
        var (cache, _, doctored) = try loadEntry(file)
        var rows = try #require(doctored["results"] as? [[String: Any]])
        // Another candidate than the one running now if there is one (any candidate besides the library's own).
        let alternatives = rows.indices.filter { rows[$0]["coreType"] is String }
        let other = try #require(alternatives.first { (rows[$0]["core"] as? String) != chosen } ?? alternatives.first)
        let alternative = try #require(rows[other]["coreType"] as? String)
        let best = rows.flatMap { row in ["sgemmB64", "sgemmB512"].map { (row[$0] as? NSNumber)?.doubleValue ?? 0 } }.max() ?? 1
        for figure in ["sgemmB64", "sgemmB512"] { rows[other][figure] = 2 * best }
        doctored["results"] = rows
        cache["entries"] = [key: doctored]
        try JSONSerialization.data(withJSONObject: cache).write(to: file)
        let third = try await runWorker(farm, environment: environment)
        #expect(third.contains("re-executing with the faster OpenBLAS kernels"), "\(third)")
        #expect(!third.contains("measuring OpenBLAS kernels"), "\(third)")
        let (ready3, core3) = try readyLine(third)
        #expect(core3.caseInsensitiveCompare(alternative) == .orderedSame, "\(ready3)")
        #expect(ready3.contains("openblas_coretype=\(alternative)"), "\(ready3)")
        #expect(ready3.contains("blas_choice=\"measured: \(core3) "), "\(ready3)")
        #expect(ready3.contains("; cached\""), "\(ready3)")
    }

    @Test(.enabled(if: !HostCPU.flags.contains("avx512f"), "the SkylakeX kernels run on this CPU"))
    func candidateThatCrashesLoses() async throws {
        // AVX-512 kernels on a CPU without AVX-512: the probe dies of SIGILL; the worker runs on.
        let farm = try TestRedis.farm()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let output = try await runWorker(farm, environment: [
            "JOBFARM_BLAS_AUTOTUNE": "1", "JOBFARM_BLAS_CANDIDATES": "SkylakeX", "JOBFARM_CACHE_DIR": directory.path])
        let (ready, core) = try readyLine(output)
        #expect(core != "SkylakeX")
        #expect(ready.contains("SkylakeX failed: killed by signal 4"), "\(ready)")
        let (_, _, entry) = try loadEntry(directory.appendingPathComponent("blas-kernels.json"))
        let results = try #require(entry["results"] as? [[String: Any]])
        #expect(results.contains { ($0["coreType"] as? String) == "SkylakeX" && ($0["failure"] as? String)?.contains("signal 4") == true })
        #expect(try FileManager.default.contentsOfDirectory(atPath: FileManager.default.currentDirectoryPath).allSatisfy { $0 != "core" && !$0.hasPrefix("core.") },
                "no core file from the crashed probe")
    }

    @Test func environmentSettingsSkipTheMeasurement() async throws {
        let farm = try TestRedis.farm()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let candidates = ["JOBFARM_BLAS_AUTOTUNE": "1", "JOBFARM_BLAS_CANDIDATES": "Haswell,Zen", "JOBFARM_CACHE_DIR": directory.path]
        let forced = try await runWorker(farm, environment: candidates.merging(["OPENBLAS_CORETYPE": "Haswell"]) { $1 }, unset: ["JOBFARM_BLAS_CHOSEN"])
        let (ready, core) = try readyLine(forced)
        #expect(core == "Haswell")
        #expect(ready.contains("blas_choice=\"set by the environment (OPENBLAS_CORETYPE=Haswell)\""), "\(ready)")
        let off = try await runWorker(farm, environment: candidates.merging(["JOBFARM_BLAS_AUTOTUNE": "0"]) { $1 })
        #expect(try readyLine(off).line.contains("autotune off (JOBFARM_BLAS_AUTOTUNE=0)"))
        let only = try await runWorker(farm, environment: candidates.merging(["JOBFARM_BLAS_CANDIDATES": ""]) { $1 })
        #expect(try readyLine(only).line.contains("blas_choice=\"only candidate\""))
        #expect(!forced.contains("measuring") && !off.contains("measuring") && !only.contains("measuring"))
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("blas-kernels.json").path))
    }

    /// OpenBLAS's helpers would spin 0.1 s after each threaded call: a worker started without
    /// `OPENBLAS_THREAD_TIMEOUT` re-executes itself once with 20 (whichever way the kernel family was chosen), and
    /// keeps a value from the environment.
    @Test func workersRunWithAShortOpenBLASThreadTimeout() async throws {
        let farm = try TestRedis.farm()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let base = ["JOBFARM_BLAS_AUTOTUNE": "0", "JOBFARM_CACHE_DIR": directory.path]
        let unset = ["OPENBLAS_CORETYPE", "JOBFARM_BLAS_CHOSEN", "OPENBLAS_THREAD_TIMEOUT"]
        let started = try await runWorker(farm, environment: base, unset: unset)
        #expect(try readyLine(started).line.contains("openblas_thread_timeout=20"), "\(started)")
        let kept = try await runWorker(farm, environment: base.merging(["OPENBLAS_THREAD_TIMEOUT": "25"]) { $1 }, unset: Array(unset.dropLast()))
        #expect(try readyLine(kept).line.contains("openblas_thread_timeout=25"), "\(kept)")
        let forced = try await runWorker(farm, environment: base.merging(["OPENBLAS_CORETYPE": "Haswell"]) { $1 }, unset: ["JOBFARM_BLAS_CHOSEN", "OPENBLAS_THREAD_TIMEOUT"])
        let (line, core) = try readyLine(forced)
        #expect(core == "Haswell" && line.contains("openblas_thread_timeout=20"), "\(line)")
    }
}
