import Foundation

// Choosing OpenBLAS's kernel family by measurement (the decision only: no processes, no BLAS calls).
//
// Debian's OpenBLAS is built with DYNAMIC_ARCH: when the library loads it picks a kernel family ("core") from the
// CPU, or takes `OPENBLAS_CORETYPE` from the environment. Its pick is not always the fastest (on some CPUs it falls
// back to its AVX2 kernels where its AVX-512 `SkylakeX` ones are up to 1.8× faster for big batches), and the
// variable is read only once, at load. So `jobfarm worker` measures each candidate in a child process
// (`jobfarm blas-probe` with `OPENBLAS_CORETYPE` set), caches the figures per machine, and re-executes itself with
// the winner in the environment. This file holds what that decides; `BLASKernelSelection` in the CLI does the
// processes, the cache file's lock and the re-exec.

/// One line of `jobfarm blas-probe`: single-thread GFLOP/s of the kernels OpenBLAS loaded.
public struct BLASProbeReport: Codable, Equatable, Sendable {
    /// Bump when the measured shapes change: cached figures of another version are not compared with new ones.
    public static let currentVersion = 1

    public var version: Int
    /// `openblas_get_corename()`: the kernel family that ran.
    public var core: String
    /// `openblas_get_config()`.
    public var config: String
    public var threads: Int
    /// `cblas_sgemm`, `y[b,1024] = x[b,1024]·W[1024,1024]ᵀ`, GFLOP/s at b = 64 and 512.
    public var sgemmB64: Double
    public var sgemmB512: Double
    /// `cblas_sgemv`, one row (b = 1), GFLOP/s.
    public var sgemvB1: Double
    /// Wall time of the measurement.
    public var seconds: Double

    public init(core: String, config: String, threads: Int, sgemmB64: Double, sgemmB512: Double, sgemvB1: Double, seconds: Double) {
        self.version = Self.currentVersion
        self.core = core
        self.config = config
        self.threads = threads
        self.sgemmB64 = sgemmB64
        self.sgemmB512 = sgemmB512
        self.sgemvB1 = sgemvB1
        self.seconds = seconds
    }

    enum CodingKeys: String, CodingKey {
        case version = "probe", core, config, threads, seconds
        case sgemmB64 = "sgemm_b64", sgemmB512 = "sgemm_b512", sgemvB1 = "sgemv_b1"
    }

    /// One line of JSON, keys sorted.
    public var jsonLine: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// The last line of `output` that decodes as a report (OpenBLAS may print warnings around it).
    public static func parse(_ output: String) -> BLASProbeReport? {
        for line in output.split(separator: "\n").reversed() where line.hasPrefix("{") {
            if let report = try? JSONDecoder().decode(BLASProbeReport.self, from: Data(line.utf8)) { return report }
        }
        return nil
    }
}

/// What one candidate measured, or why it could not.
public struct BLASCandidateResult: Codable, Equatable, Sendable {
    /// The `OPENBLAS_CORETYPE` it ran with; nil: unset (the library's own choice).
    public var coreType: String?
    /// The kernel family that ran (the requested one when the probe failed).
    public var core: String
    public var sgemmB64: Double?
    public var sgemmB512: Double?
    public var sgemvB1: Double?
    /// Why it lost without a figure: "killed by signal 4 (Illegal instruction)", "timed out after 30 s", …
    public var failure: String?

    public init(coreType: String?, core: String, sgemmB64: Double? = nil, sgemmB512: Double? = nil, sgemvB1: Double? = nil, failure: String? = nil) {
        self.coreType = coreType
        self.core = core
        self.sgemmB64 = sgemmB64
        self.sgemmB512 = sgemmB512
        self.sgemvB1 = sgemvB1
        self.failure = failure
    }

    /// The figure candidates are ranked by: the geometric mean of the b = 64 and b = 512 `sgemm` GFLOP/s.
    ///
    /// Only large batches count: up to the small-batch limit (8–64 rows, `SmallBatchKernel`) the farm multiplies
    /// with its own kernels (Sources/CComputeKernels/gemm_small.c), not OpenBLAS's, so what the OpenBLAS kernel
    /// family decides is `sgemm`'s speed on big batches (batched passes above the limit, training, batch_analysis).
    /// `sgemv` (single rows) is recorded for people, not ranked: it is bound by memory bandwidth, not by the kernels.
    public var score: Double? {
        guard failure == nil, let a = sgemmB64, let b = sgemmB512, a > 0, b > 0, a.isFinite, b.isFinite else { return nil }
        return (a * b).squareRoot()
    }

    /// Encodes `coreType` as an explicit null for the library's own choice (the cache file is read by people too).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(coreType, forKey: .coreType)
        try c.encode(core, forKey: .core)
        try c.encodeIfPresent(sgemmB64, forKey: .sgemmB64)
        try c.encodeIfPresent(sgemmB512, forKey: .sgemmB512)
        try c.encodeIfPresent(sgemvB1, forKey: .sgemvB1)
        try c.encodeIfPresent(failure, forKey: .failure)
    }

    enum CodingKeys: String, CodingKey { case coreType, core, sgemmB64, sgemmB512, sgemvB1, failure }

    /// A candidate's result from its probe's output (nil when the child gave none) or from why the child failed.
    /// A probe that ran another core than the one asked for (OpenBLAS falls back on a name it does not know) or
    /// another probe version loses too.
    public static func from(coreType: String?, libraryCore: String, output: String?, failure: String?) -> BLASCandidateResult {
        let requested = coreType ?? libraryCore
        if let failure { return BLASCandidateResult(coreType: coreType, core: requested, failure: failure) }
        guard let output, let report = BLASProbeReport.parse(output) else {
            let last = output?.split(separator: "\n").last.map(String.init) ?? ""
            return BLASCandidateResult(coreType: coreType, core: requested,
                                       failure: "no figures in its output" + (last.isEmpty ? "" : ": \(last.prefix(200))"))
        }
        guard report.version == BLASProbeReport.currentVersion else {
            return BLASCandidateResult(coreType: coreType, core: report.core, failure: "probe version \(report.version), expected \(BLASProbeReport.currentVersion)")
        }
        if let coreType, report.core.caseInsensitiveCompare(coreType) != .orderedSame {
            return BLASCandidateResult(coreType: coreType, core: report.core,
                                       failure: "OpenBLAS ran \(report.core), not \(coreType) (not a core type it knows?)")
        }
        return BLASCandidateResult(coreType: coreType, core: report.core, sgemmB64: report.sgemmB64,
                                   sgemmB512: report.sgemmB512, sgemvB1: report.sgemvB1)
    }
}

/// The outcome of a measurement.
public struct BLASKernelDecision: Equatable, Sendable {
    /// The `OPENBLAS_CORETYPE` to run with; nil keeps the library's own choice (no re-exec).
    public var coreType: String?
    /// The kernel family that will run.
    public var core: String
    /// For the log, e.g. "measured: Haswell 71.4 vs Zen 69.2 GFLOP/s (geomean b=64,512)".
    public var summary: String
    /// False when the library's own candidate has no figure (a timeout on a loaded machine, say): measure again
    /// next start rather than remember it.
    public var cacheable: Bool
}

/// The decision logic of the kernel chooser.
public enum BLASKernelChooser {
    /// Environment variables.
    public static let autotuneVariable = "JOBFARM_BLAS_AUTOTUNE"
    public static let candidatesVariable = "JOBFARM_BLAS_CANDIDATES"
    public static let cacheDirectoryVariable = "JOBFARM_CACHE_DIR"
    /// Set (with `OPENBLAS_CORETYPE`) on the re-executed process: the measurement's summary, so it does not measure again.
    public static let chosenVariable = "JOBFARM_BLAS_CHOSEN"
    public static let coreTypeVariable = "OPENBLAS_CORETYPE"
    public static let cacheFileName = "blas-kernels.json"

    /// The flags `SkylakeX` kernels need (OpenBLAS's own test for them).
    public static let avx512Flags = ["avx512f", "avx512dq", "avx512bw", "avx512vl"]
    /// The /proc/cpuinfo flags that go into the cache key: the ones the kernel families are told apart by.
    public static let relevantFlags = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw",
                                       "avx512vl", "avx512cd", "avx512_vnni", "avx512_bf16", "amx_tile"]
    /// An alternative must beat the library's own choice by more than this fraction to be chosen: between two
    /// kernels within noise of each other, the library's pick stays and the worker does not re-exec for nothing.
    /// (OpenBLAS's Haswell and Zen families, both AVX2, came out 2–3 % apart in either order when measured one
    /// process after the other on a 2-core VM; the gains worth a restart, SkylakeX's, are tens of percent.)
    public static let keepMargin = 0.05

    /// What to do at start.
    public enum Plan: Equatable, Sendable {
        /// Nothing to measure; `reason` goes to the log.
        case keep(reason: String)
        /// This process was re-executed after a measurement (`JOBFARM_BLAS_CHOSEN`); `summary` says what won.
        case chosen(summary: String)
        /// Measure the library's own choice and these core types.
        case measure(extra: [String])
    }

    /// Candidates besides the library's own choice by default: `SkylakeX` on a CPU with the AVX-512 subsets its
    /// kernels use.
    public static func defaultExtraCandidates(flags: Set<String>) -> [String] {
        avx512Flags.allSatisfy(flags.contains) ? ["SkylakeX"] : []
    }

    /// The plan for a process with this environment, CPU flags and library choice (`openblas_get_corename()` of
    /// a process started without `OPENBLAS_CORETYPE`).
    public static func plan(environment: [String: String], flags: Set<String>, libraryCore: String) -> Plan {
        // Present, even empty, counts: OpenBLAS then forces a core of its own (an empty value gave Haswell on a CPU
        // it otherwise runs Zen kernels on).
        if let forced = environment[coreTypeVariable] {
            if let chosen = environment[chosenVariable], !chosen.isEmpty { return .chosen(summary: chosen) }
            return .keep(reason: "set by the environment (\(coreTypeVariable)=\(forced))")
        }
        if let value = environment[autotuneVariable]?.trimmingCharacters(in: .whitespaces).lowercased(),
           ["0", "false", "no", "off"].contains(value) {
            return .keep(reason: "the library's own: autotune off (\(autotuneVariable)=0)")
        }
        let requested: [String]
        if let list = environment[candidatesVariable] {
            requested = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        } else {
            requested = defaultExtraCandidates(flags: flags)
        }
        // The library's own pick is measured anyway; a name twice is measured once.
        var extra: [String] = []
        for name in requested
        where name.caseInsensitiveCompare(libraryCore) != .orderedSame
            && !extra.contains(where: { $0.caseInsensitiveCompare(name) == .orderedSame }) {
            extra.append(name)
        }
        return extra.isEmpty ? .keep(reason: "only candidate") : .measure(extra: extra)
    }

    /// Picks the kernel family from the candidates' results: the highest `score` (geometric mean of `sgemm` at
    /// b = 64 and 512) wins; a candidate without one (crashed, timed out, ran another core) loses. The library's
    /// own choice (`coreType == nil`) stays unless beaten by more than `margin`.
    public static func decide(_ results: [BLASCandidateResult], margin: Double = keepMargin) -> BLASKernelDecision {
        let own = results.first { $0.coreType == nil }
        let ownCore = own?.core ?? "the library's own"
        let measured = results.filter { $0.score != nil }.sorted { $0.score! > $1.score! }
        let failed = results.filter { $0.score == nil }
        let failures = failed.map { "\($0.coreType ?? $0.core) failed: \($0.failure ?? "no figure")" }.joined(separator: "; ")
        guard let best = measured.first else {
            return BLASKernelDecision(coreType: nil, core: ownCore,
                                      summary: "measurement failed (\(failures)); the library's own kept", cacheable: false)
        }
        var winner = best
        var note = ""
        if best.coreType != nil, let own, let ownScore = own.score, best.score! <= ownScore * (1 + margin) {
            winner = own
            note = String(format: "; within %.0f%%, the library's own kept", margin * 100)
        }
        let others = measured.filter { $0 != winner }
        var summary = "measured: \(winner.core) \(format(winner.score!))"
        if !others.isEmpty { summary += " vs " + others.map { "\($0.core) \(format($0.score!))" }.joined(separator: ", ") }
        summary += " GFLOP/s (geomean b=64,512\(note))"
        if !failures.isEmpty { summary += "; " + failures }
        return BLASKernelDecision(coreType: winner.coreType, core: winner.core, summary: summary, cacheable: own?.score != nil)
    }

    static func format(_ value: Double) -> String { String(format: "%.1f", value) }

    /// The flags of the first processor in /proc/cpuinfo.
    public static func cpuFlags(cpuinfo: String) -> Set<String> {
        guard let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// Model name, family, model and stepping of the first processor in /proc/cpuinfo.
    public static func cpuIdentity(cpuinfo: String) -> String {
        var fields: [String: String] = [:]
        for line in cpuinfo.split(separator: "\n") {
            if line.trimmingCharacters(in: .whitespaces).isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            if fields[key] == nil { fields[key] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
        }
        return "\(fields["model name"] ?? "unknown CPU") (family \(fields["cpu family"] ?? "?"), model \(fields["model"] ?? "?"), stepping \(fields["stepping"] ?? "?"))"
    }

    /// The cache key: what a measurement depends on. Another CPU, flag set (a VM moved to other hardware), OpenBLAS
    /// build or candidate list measures again.
    public static func cacheKey(cpu: String, flags: Set<String>, openBLASConfig: String, candidates: [String]) -> String {
        let relevant = relevantFlags.filter(flags.contains).joined(separator: ",")
        return "cpu=\(cpu); flags=\(relevant); openblas=\(openBLASConfig); candidates=\(candidates.joined(separator: ",")); probe=\(BLASProbeReport.currentVersion)"
    }

    /// The directory of the cache file: `$JOBFARM_CACHE_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/jobfarm`;
    /// nil when none is known (then every start measures).
    public static func cacheDirectory(environment: [String: String]) -> String? {
        if let dir = environment[cacheDirectoryVariable], !dir.isEmpty { return dir }
        if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") { return xdg + "/jobfarm" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.cache/jobfarm" }
        return nil
    }
}

/// The cache file (`blas-kernels.json`): measurements by cache key. The decision is made again from the cached
/// figures at each start, so `chosen` and `summary` are there for people.
public struct BLASKernelCache: Codable, Equatable, Sendable {
    public struct Entry: Codable, Equatable, Sendable {
        public var measuredAt: String
        public var results: [BLASCandidateResult]
        public var chosen: String
        public var summary: String

        public init(measuredAt: String, results: [BLASCandidateResult], chosen: String, summary: String) {
            self.measuredAt = measuredAt
            self.results = results
            self.chosen = chosen
            self.summary = summary
        }
    }

    public var version = 1
    public var entries: [String: Entry] = [:]

    public init(entries: [String: Entry] = [:]) { self.entries = entries }

    /// The file's contents; an empty cache when it is missing or unreadable (a corrupt file is measured over).
    public static func load(path: String) -> BLASKernelCache {
        guard let data = FileManager.default.contents(atPath: path),
              let cache = try? JSONDecoder().decode(BLASKernelCache.self, from: data), cache.version == 1 else { return BLASKernelCache() }
        return cache
    }

    /// Writes the file atomically: a temporary file in the same directory, renamed over the old one, so a reader
    /// never sees half a file.
    public func store(path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try CacheFile.writeAtomically(try encoder.encode(self), to: path)
    }
}
