import Foundation
import Testing
@testable import Compute

/// The OpenBLAS kernel chooser's decisions (BLASKernelChooser): no processes, no BLAS. The processes, the cache
/// file's lock and the re-exec are covered by Tests/JobFarmTests/BLASKernelChoiceProcessTests.swift.
@Suite struct BLASKernelChoiceTests {
    static let noAVX512: Set<String> = ["sse4_2", "avx", "avx2", "fma", "f16c"]
    static let avx512: Set<String> = noAVX512.union(["avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd"])

    func result(_ coreType: String?, _ core: String, _ b64: Double, _ b512: Double) -> BLASCandidateResult {
        BLASCandidateResult(coreType: coreType, core: core, sgemmB64: b64, sgemmB512: b512, sgemvB1: 20)
    }

    // MARK: decide

    @Test func winnerByGeometricMeanOfTheTwoSgemmBatches() {
        // Arithmetic means would pick the library's own (55 vs 40); geometric means pick SkylakeX (31.6 vs 40).
        let results = [result(nil, "Haswell", 10, 100), result("SkylakeX", "SkylakeX", 40, 40)]
        let decision = BLASKernelChooser.decide(results)
        #expect(decision.coreType == "SkylakeX")
        #expect(decision.core == "SkylakeX")
        #expect(decision.summary == "measured: SkylakeX 40.0 vs Haswell 31.6 GFLOP/s (geomean b=64,512)")
        #expect(decision.cacheable)
        #expect(results[0].score! == (10.0 * 100).squareRoot())
    }

    @Test func libraryOwnWinsWhenFastest() {
        let decision = BLASKernelChooser.decide([result(nil, "Zen", 80, 90), result("Haswell", "Haswell", 60, 70)])
        #expect(decision.coreType == nil, "no re-exec")
        #expect(decision.core == "Zen")
        #expect(decision.summary.hasPrefix("measured: Zen 84.9 vs Haswell 64.8 GFLOP/s"))
    }

    @Test func libraryOwnKeptWithinTheMargin() {
        // 4 % faster is noise between two processes: no re-exec for it.
        let decision = BLASKernelChooser.decide([result(nil, "Zen", 80, 80), result("Haswell", "Haswell", 83.2, 83.2)])
        #expect(decision.coreType == nil)
        #expect(decision.summary == "measured: Zen 80.0 vs Haswell 83.2 GFLOP/s (geomean b=64,512; within 5%, the library's own kept)")
        // 6 % faster wins.
        #expect(BLASKernelChooser.decide([result(nil, "Zen", 80, 80), result("Haswell", "Haswell", 84.8, 84.8)]).coreType == "Haswell")
        // No margin: the faster one, however slightly.
        #expect(BLASKernelChooser.decide([result(nil, "Zen", 80, 80), result("Haswell", "Haswell", 80.8, 80.8)], margin: 0).coreType == "Haswell")
        // Well ahead: chosen, with no margin note.
        #expect(BLASKernelChooser.decide([result(nil, "Zen", 80, 80), result("Haswell", "Haswell", 200, 200)]).summary
                == "measured: Haswell 200.0 vs Zen 80.0 GFLOP/s (geomean b=64,512)")
    }

    @Test func crashedCandidateLoses() {
        let crashed = BLASCandidateResult.from(coreType: "SkylakeX", libraryCore: "Haswell", output: nil,
                                               failure: "killed by signal 4 (Illegal instruction)")
        #expect(crashed.score == nil)
        let decision = BLASKernelChooser.decide([result(nil, "Haswell", 60, 70), crashed])
        #expect(decision.coreType == nil)
        #expect(decision.core == "Haswell")
        #expect(decision.summary == "measured: Haswell 64.8 GFLOP/s (geomean b=64,512); SkylakeX failed: killed by signal 4 (Illegal instruction)")
        #expect(decision.cacheable, "a crash is a result: remembered")
    }

    @Test func everyCandidateFailedKeepsTheLibraryAndIsNotCached() {
        let decision = BLASKernelChooser.decide([
            BLASCandidateResult(coreType: nil, core: "Zen", failure: "timed out after 30 s"),
            BLASCandidateResult(coreType: "SkylakeX", core: "SkylakeX", failure: "killed by signal 4 (Illegal instruction)"),
        ])
        #expect(decision.coreType == nil)
        #expect(decision.core == "Zen")
        #expect(decision.summary.hasPrefix("measurement failed (Zen failed: timed out after 30 s; SkylakeX failed: killed by signal 4"))
        #expect(!decision.cacheable)
    }

    @Test func libraryOwnWithoutFigureLetsAnotherWinButIsNotCached() {
        let decision = BLASKernelChooser.decide([
            BLASCandidateResult(coreType: nil, core: "Zen", failure: "timed out after 30 s"), result("Haswell", "Haswell", 60, 70),
        ])
        #expect(decision.coreType == "Haswell")
        #expect(!decision.cacheable, "measured again next start")
    }

    // MARK: probe output

    @Test func probeOutputParsedAmidWarnings() throws {
        let report = BLASProbeReport(core: "Haswell", config: "OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell", threads: 1,
                                     sgemmB64: 70.5, sgemmB512: 80.25, sgemvB1: 25, seconds: 0.4)
        let line = report.jsonLine
        #expect(line.contains("\"sgemm_b64\":70.5"))
        #expect(line.contains("\"probe\":1"))
        #expect(!line.contains("\n"))
        #expect(BLASProbeReport.parse("OpenBLAS : some warning\n\(line)\n") == report)
        let ok = BLASCandidateResult.from(coreType: "haswell", libraryCore: "Zen", output: "warning\n" + line, failure: nil)
        #expect(ok.failure == nil, "core names compare case-insensitively")
        #expect(ok.sgemmB512 == 80.25)
        #expect(ok.score == (70.5 * 80.25).squareRoot())
        let own = BLASCandidateResult.from(coreType: nil, libraryCore: "Haswell", output: line, failure: nil)
        #expect(own.coreType == nil && own.score != nil)
    }

    @Test func probeThatRanAnotherCoreLoses() {
        // OpenBLAS falls back to a core of its own on a name it does not know.
        let line = BLASProbeReport(core: "Haswell", config: "", threads: 1, sgemmB64: 70, sgemmB512: 80, sgemvB1: 25, seconds: 0.4).jsonLine
        let bogus = BLASCandidateResult.from(coreType: "Bogus", libraryCore: "Zen", output: line, failure: nil)
        #expect(bogus.score == nil)
        #expect(bogus.failure == "OpenBLAS ran Haswell, not Bogus (not a core type it knows?)")
        let decision = BLASKernelChooser.decide([result(nil, "Zen", 1, 1), bogus])
        #expect(decision.coreType == nil)
        #expect(decision.summary.hasSuffix("; Bogus failed: OpenBLAS ran Haswell, not Bogus (not a core type it knows?)"))
        let silent = BLASCandidateResult.from(coreType: "Haswell", libraryCore: "Zen", output: "Segmentation fault?\n", failure: nil)
        #expect(silent.failure == "no figures in its output: Segmentation fault?")
    }

    // MARK: plan

    @Test func planDefaultsToSkylakeXOnlyWithAVX512() {
        #expect(BLASKernelChooser.plan(environment: [:], flags: Self.avx512, libraryCore: "Haswell") == .measure(extra: ["SkylakeX"]))
        #expect(BLASKernelChooser.plan(environment: [:], flags: Self.noAVX512, libraryCore: "Zen") == .keep(reason: "only candidate"))
        // avx512f alone (no BW/DQ/VL, as on Knights Landing) is not enough for the SkylakeX kernels.
        #expect(BLASKernelChooser.plan(environment: [:], flags: Self.noAVX512.union(["avx512f"]), libraryCore: "Haswell") == .keep(reason: "only candidate"))
        // The library already runs SkylakeX: nothing else to try.
        #expect(BLASKernelChooser.plan(environment: [:], flags: Self.avx512, libraryCore: "SkylakeX") == .keep(reason: "only candidate"))
    }

    /// An Intel Xeon OpenBLAS 0.3.21 does not know: the library falls back to its SSE3 `Prescott` kernels, the
    /// default plan adds SkylakeX, and with an explicit list every other family is measured beside Prescott.
    @Test func unknownCPUFallingBackToPrescott() {
        #expect(BLASKernelChooser.plan(environment: [:], flags: Self.avx512, libraryCore: "Prescott") == .measure(extra: ["SkylakeX"]))
        #expect(BLASKernelChooser.plan(environment: ["JOBFARM_BLAS_CANDIDATES": "Haswell,Zen"], flags: Self.avx512, libraryCore: "Prescott")
                == .measure(extra: ["Haswell", "Zen"]))
        // Figures measured on such a machine (GFLOP/s): three candidates, the best of the two others wins.
        let three = BLASKernelChooser.decide([result(nil, "Prescott", 30, 32), result("Haswell", "Haswell", 60, 64), result("Zen", "Zen", 70, 76)])
        #expect(three.coreType == "Zen")
        #expect(three.summary.hasPrefix("measured: Zen 72.9 vs Haswell 62.0, Prescott 31.0 GFLOP/s"))
        let skylake = BLASKernelChooser.decide([result(nil, "Prescott", 28, 28), result("SkylakeX", "SkylakeX", 120, 132)])
        #expect(skylake.coreType == "SkylakeX")
        #expect(skylake.cacheable)
    }

    @Test func candidatesVariableReplacesTheExtraCandidates() {
        let env = ["JOBFARM_BLAS_CANDIDATES": " Haswell, ,Sandybridge,haswell "]
        #expect(BLASKernelChooser.plan(environment: env, flags: Self.avx512, libraryCore: "Zen") == .measure(extra: ["Haswell", "Sandybridge"]))
        #expect(BLASKernelChooser.plan(environment: env, flags: Self.noAVX512, libraryCore: "HASWELL") == .measure(extra: ["Sandybridge"]),
                "the library's own is not measured twice")
        #expect(BLASKernelChooser.plan(environment: ["JOBFARM_BLAS_CANDIDATES": ""], flags: Self.avx512, libraryCore: "Haswell")
                == .keep(reason: "only candidate"), "empty: no extra candidates, not even SkylakeX")
    }

    @Test func environmentOverridesSkipTheMeasurement() {
        let all = ["JOBFARM_BLAS_CANDIDATES": "Haswell"]
        #expect(BLASKernelChooser.plan(environment: all.merging(["OPENBLAS_CORETYPE": "SkylakeX"]) { $1 }, flags: Self.avx512, libraryCore: "SkylakeX")
                == .keep(reason: "set by the environment (OPENBLAS_CORETYPE=SkylakeX)"))
        #expect(BLASKernelChooser.plan(environment: ["OPENBLAS_CORETYPE": ""], flags: Self.avx512, libraryCore: "Haswell")
                == .keep(reason: "set by the environment (OPENBLAS_CORETYPE=)"), "OpenBLAS treats an empty value as set too")
        for off in ["0", "false", "off", "no", " 0 "] {
            #expect(BLASKernelChooser.plan(environment: all.merging(["JOBFARM_BLAS_AUTOTUNE": off]) { $1 }, flags: Self.avx512, libraryCore: "Zen")
                    == .keep(reason: "the library's own: autotune off (JOBFARM_BLAS_AUTOTUNE=0)"))
        }
        #expect(BLASKernelChooser.plan(environment: all.merging(["JOBFARM_BLAS_AUTOTUNE": "1"]) { $1 }, flags: Self.avx512, libraryCore: "Zen")
                == .measure(extra: ["Haswell"]))
        // The re-executed worker: the parent measured; no loop.
        let reexecuted = ["OPENBLAS_CORETYPE": "Haswell", "JOBFARM_BLAS_CHOSEN": "measured: Haswell 2.0 vs Zen 1.0 GFLOP/s"]
        #expect(BLASKernelChooser.plan(environment: all.merging(reexecuted) { $1 }, flags: Self.avx512, libraryCore: "Haswell")
                == .chosen(summary: "measured: Haswell 2.0 vs Zen 1.0 GFLOP/s"))
        // A stray marker without OPENBLAS_CORETYPE means nothing.
        #expect(BLASKernelChooser.plan(environment: ["JOBFARM_BLAS_CHOSEN": "x"], flags: Self.avx512, libraryCore: "Haswell") == .measure(extra: ["SkylakeX"]))
    }

    // MARK: cache

    @Test func cacheKeyChangesWithWhatTheFiguresDependOn() {
        let base = BLASKernelChooser.cacheKey(cpu: "AMD EPYC (family 25, model 1, stepping 1)", flags: Self.noAVX512,
                                              openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64",
                                              candidates: ["Zen", "Haswell"])
        #expect(base.contains("AMD EPYC") && base.contains("OpenBLAS 0.3.21") && base.contains("Zen,Haswell"))
        let otherConfig = BLASKernelChooser.cacheKey(cpu: "AMD EPYC (family 25, model 1, stepping 1)", flags: Self.noAVX512,
                                                     openBLASConfig: "OpenBLAS 0.3.26 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64",
                                                     candidates: ["Zen", "Haswell"])
        #expect(otherConfig != base, "another OpenBLAS build measures again")
        #expect(BLASKernelChooser.cacheKey(cpu: "AMD EPYC (family 25, model 17, stepping 0)", flags: Self.noAVX512,
                                           openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64",
                                           candidates: ["Zen", "Haswell"]) != base)
        #expect(BLASKernelChooser.cacheKey(cpu: "AMD EPYC (family 25, model 1, stepping 1)", flags: Self.avx512,
                                           openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64",
                                           candidates: ["Zen", "Haswell"]) != base)
        #expect(BLASKernelChooser.cacheKey(cpu: "AMD EPYC (family 25, model 1, stepping 1)", flags: Self.noAVX512,
                                           openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64",
                                           candidates: ["Zen", "SkylakeX"]) != base)
        // A flag no kernel family depends on does not.
        #expect(BLASKernelChooser.cacheKey(cpu: "AMD EPYC (family 25, model 1, stepping 1)", flags: Self.noAVX512.union(["rdrand"]),
                                           openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64",
                                           candidates: ["Zen", "Haswell"]) == base)
    }

    @Test func cacheDirectoryPrecedence() {
        #expect(BLASKernelChooser.cacheDirectory(environment: ["JOBFARM_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/c")
        #expect(BLASKernelChooser.cacheDirectory(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/x/jobfarm")
        #expect(BLASKernelChooser.cacheDirectory(environment: ["XDG_CACHE_HOME": "relative", "HOME": "/h"]) == "/h/.cache/jobfarm")
        #expect(BLASKernelChooser.cacheDirectory(environment: ["JOBFARM_CACHE_DIR": "", "HOME": "/h"]) == "/h/.cache/jobfarm")
        #expect(BLASKernelChooser.cacheDirectory(environment: [:]) == nil)
    }

    @Test func cacheFileRoundTripsAndIsReplacedAtomically() throws {
        let directory = temporaryURL("-blas-cache")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("blas-kernels.json").path
        #expect(BLASKernelCache.load(path: path) == BLASKernelCache(), "missing: empty")
        let results = [result(nil, "Zen", 70, 80), BLASCandidateResult(coreType: "SkylakeX", core: "SkylakeX", failure: "killed by signal 4")]
        let decision = BLASKernelChooser.decide(results)
        var cache = BLASKernelCache()
        cache.entries["key one"] = .init(measuredAt: "2026-11-25T20:00:00Z", results: results, chosen: decision.core, summary: decision.summary)
        try cache.store(path: path)
        #expect(BLASKernelCache.load(path: path) == cache)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("\"coreType\" : null"), "the library's own is spelled out for people")
        cache.entries["key two"] = cache.entries["key one"]
        try cache.store(path: path)
        #expect(BLASKernelCache.load(path: path).entries.count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["blas-kernels.json"], "no temporary file left")
        try Data("{\"entries\": [".utf8).write(to: URL(fileURLWithPath: path))
        #expect(BLASKernelCache.load(path: path) == BLASKernelCache(), "corrupt: measured over")
    }

    @Test func cpuinfoParsing() {
        let cpuinfo = """
            processor\t: 0
            vendor_id\t: AuthenticAMD
            cpu family\t: 25
            model\t\t: 1
            model name\t: AMD EPYC
            stepping\t: 1
            flags\t\t: fpu sse4_2 avx f16c avx2 fma avx512f
            
            processor\t: 1
            model name\t: Something else
            flags\t\t: fpu
            """
        #expect(BLASKernelChooser.cpuFlags(cpuinfo: cpuinfo) == ["fpu", "sse4_2", "avx", "f16c", "avx2", "fma", "avx512f"])
        #expect(BLASKernelChooser.cpuIdentity(cpuinfo: cpuinfo) == "AMD EPYC (family 25, model 1, stepping 1)")
        #expect(BLASKernelChooser.cpuFlags(cpuinfo: "") == [])
    }
}
