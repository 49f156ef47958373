import Compute
import Foundation
import Testing

/// The cache of measured small-batch kernel limits, with injected figures (no measurement here).
@Suite struct SmallBatchLimitsCacheTests {
    func temporaryFile() throws -> (directory: URL, path: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-limits-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return (directory, directory.appendingPathComponent(SmallBatchLimitsCache.fileName).path)
    }

    let key = SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2", "ht"],
                                        openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "Haswell", threads: 1)
    let entry = SmallBatchLimitsCache.Entry(measuredAt: "2026-11-30T12:00:00Z", limits: [16, 24, 32], detail: "injected")

    @Test func hitAfterStore() throws {
        let (directory, path) = try temporaryFile()
        defer { try? FileManager.default.removeItem(at: directory) }
        #expect(SmallBatchLimitsCache.load(path: path) == SmallBatchLimitsCache(), "a missing file is an empty cache")
        var cache = SmallBatchLimitsCache()
        cache.entries[key] = entry
        try cache.store(path: path)
        #expect(SmallBatchLimitsCache.load(path: path).entry(for: key) == entry)
        // Written atomically: nothing left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == [SmallBatchLimitsCache.fileName])
    }

    @Test func missOnAnyOtherKey() throws {
        var cache = SmallBatchLimitsCache()
        cache.entries[key] = entry
        let others = [
            SmallBatchLimitsCache.key(cpu: "Other CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2"], openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "Haswell", threads: 1),
            SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2", "avx512f"], openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "Haswell", threads: 1),
            SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2"], openBLASConfig: "OpenBLAS 0.3.26 DYNAMIC_ARCH", core: "Haswell", threads: 1),
            SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2"], openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "SkylakeX", threads: 1),
            SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2"], openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "Haswell", threads: 2),
            SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2"], openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "Haswell", threads: 1,
                                      kernelVersion: SmallBatchLimitsCache.kernelVersion + 1),
            // Limits measured with the kernels capped to another instruction set are not this process's.
            SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2"], openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "Haswell", threads: 1,
                                      instructionSet: SmallBatchKernel.instructionSet == .scalar ? .avx2 : .scalar),
        ]
        #expect(Set(others).count == others.count)
        for other in others { #expect(cache.entry(for: other) == nil, "\(other)") }
        // Flags that do not tell kernels apart (ht) do not change the key.
        #expect(SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2"],
                                          openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "Haswell", threads: 1) == key)
    }

    @Test(arguments: ["", "not json", "{\"version\": 1, \"entries\": {\"k\": {\"limits\": ", "[1, 2, 3]", "{\"version\": 2, \"entries\": {}}"])
    func corruptFileIsAnEmptyCache(text: String) throws {
        let (directory, path) = try temporaryFile()
        defer { try? FileManager.default.removeItem(at: directory) }
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        #expect(SmallBatchLimitsCache.load(path: path) == SmallBatchLimitsCache())
        // Measured over: a store replaces it with a readable file.
        var cache = SmallBatchLimitsCache.load(path: path)
        cache.entries[key] = entry
        try cache.store(path: path)
        #expect(SmallBatchLimitsCache.load(path: path).entry(for: key) == entry)
    }

    @Test func entriesWithImpossibleLimitsAreMisses() {
        var cache = SmallBatchLimitsCache()
        for limits in [[16, 24], [16, 24, 32, 8], [1, 8, 8], [8, 8, SmallBatchKernel.maxSplitBatch + 1], []] {
            cache.entries[key] = .init(measuredAt: "x", limits: limits, detail: "edited by hand")
            #expect(cache.entry(for: key) == nil, "\(limits)")
        }
    }

    @Test func cachedLimitsAreApplied() {
        defer { SmallBatchKernel.setLimits(SmallBatchKernel.defaultLimits) }
        SmallBatchKernel.setLimits(entry.limits)
        #expect(SmallBatchKernel.limits == [16, 24, 32])
        #expect(SmallBatchKernel.limit(.medium) == 24)
    }

    @Test func splitThreadCountsAreInTheKey() {
        func key(_ split: [Int]) -> String {
            SmallBatchLimitsCache.key(cpu: "Some CPU (family 6, model 1, stepping 1)", flags: ["avx2", "fma", "f16c", "sse4_2"],
                                      openBLASConfig: "OpenBLAS 0.3.21 DYNAMIC_ARCH", core: "Haswell", threads: 1, splitThreads: split)
        }
        #expect(key([]) == self.key, "no split thread count: the one-thread key")
        #expect(key([1]) == self.key, "one thread is no split")
        #expect(key([2]) != self.key)
        #expect(key([2]) != key([4]))
        #expect(key([4, 2, 2]) == key([2, 4]), "order and repeats do not matter")
    }

    @Test func splitLimitsRoundTripAndAreChecked() throws {
        let (directory, path) = try temporaryFile()
        defer { try? FileManager.default.removeItem(at: directory) }
        let split = SmallBatchLimitsCache.Entry(measuredAt: "2026-12-01T04:00:00Z", limits: [16, 24, 32], detail: "injected",
                                                splitLimits: ["2": [8, 32, 0]])
        #expect(split.isValid)
        #expect(split.hasSplitLimits(for: [2]) && split.hasSplitLimits(for: [1]) && !split.hasSplitLimits(for: [2, 4]))
        var cache = SmallBatchLimitsCache()
        cache.entries[key] = split
        try cache.store(path: path)
        #expect(SmallBatchLimitsCache.load(path: path).entry(for: key) == split)
        // An entry written before split limits existed reads as one without them.
        let old = #"{"version": 1, "entries": {"k": {"measuredAt": "x", "limits": [8, 16, 32], "detail": "old"}}}"#
        try Data(old.utf8).write(to: URL(fileURLWithPath: path))
        #expect(SmallBatchLimitsCache.load(path: path).entry(for: "k")?.splitLimits == nil)
        for bad: [String: [Int]] in [["2": [8, 8]], ["2": [8, 8, SmallBatchKernel.maxSplitBatch + 1]], ["2": [-1, 8, 8]], ["1": [8, 8, 8]], ["two": [8, 8, 8]]] {
            cache.entries[key] = .init(measuredAt: "x", limits: [16, 24, 32], detail: "edited by hand", splitLimits: bad)
            #expect(cache.entry(for: key) == nil, "\(bad)")
        }
    }

    @Test func precisionLimitsRoundTripAndAreChecked() throws {
        let (directory, path) = try temporaryFile()
        defer { try? FileManager.default.removeItem(at: directory) }
        let measured = SmallBatchLimitsCache.Entry(
            measuredAt: "2026-12-01T07:00:00Z", limits: [16, 24, 32], detail: "injected", splitLimits: ["2": [8, 16, 8]],
            precisions: ["fp16": .init(limits: [64, 96, 128], splitLimits: ["2": [128, 128, 96]]), "int8": .init(limits: [0, 48, 64])])
        #expect(measured.isValid)
        var cache = SmallBatchLimitsCache()
        cache.entries[key] = measured
        try cache.store(path: path)
        #expect(SmallBatchLimitsCache.load(path: path).entry(for: key) == measured)
        for bad: [String: SmallBatchLimitsCache.PrecisionLimits] in [
            ["fp32": .init(limits: [8, 8, 8])], ["fp8": .init(limits: [8, 8, 8])], ["fp16": .init(limits: [8, 8])],
            ["fp16": .init(limits: [8, 8, SmallBatchKernel.maxSplitBatch + 1])], ["int8": .init(limits: [8, 8, 8], splitLimits: ["1": [8, 8, 8]])],
        ] {
            cache.entries[key] = .init(measuredAt: "x", limits: [16, 24, 32], detail: "edited by hand", precisions: bad)
            #expect(cache.entry(for: key) == nil, "\(bad)")
        }
    }

    @Test func cachedSplitLimitsAreApplied() {
        // 11 threads: a count no other test uses, so no other pass sees these limits.
        defer {
            SmallBatchKernel.setLimits(SmallBatchKernel.defaultLimits)
            SmallBatchKernel.clearSplitLimits()
        }
        SmallBatchLimitsCache.Entry(measuredAt: "x", limits: [16, 24, 32], detail: "injected", splitLimits: ["11": [4, 48, 96]]).apply()
        #expect(SmallBatchKernel.splitLimits[11] == [4, 48, 96])
        #expect(SmallBatchKernel.batchLimit(rows: 4096, cols: 4096, threads: 11, openBLASThreads: 1) == 96)
    }
}
