import Foundation
import JobFarmTesting
import JobQueue
@testable import MLJobs
import ModelStore
import Testing

/// A CSV dataset of `rows` rows (`a,b,target`), its bytes distinct per `seed`.
func spoolTestCSV(rows: Int, seed: Int) -> [UInt8] {
    var text = "a,b,target\n"
    for r in 0..<rows { text += "\(r % 97 + seed),\(Double(r * 7 + seed) / 8),\(r % 2)\n" }
    return Array(text.utf8)
}

/// A fresh directory under the temporary directory, removed by the caller.
func spoolScratchDirectory() throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-spool-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory
}

/// Sets a file's modification time `seconds` before now.
func backdate(_ url: URL, by seconds: TimeInterval) throws {
    try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -seconds)], ofItemAtPath: url.path)
}

func modificationDate(_ url: URL) -> Date? {
    (try? FileManager.default.attributesOfItem(atPath: url.path))?[.modificationDate] as? Date
}

/// The cache's trim on files written by hand: no Redis needed.
@Suite("Spool cache trim (LRU by bytes, stale partials)")
struct SpoolTrimTests {
    /// Writes `bytes` zero bytes as a content-addressed copy named by `digit` (64 of it), `age` seconds old.
    func copy(_ directory: URL, _ digit: Character, bytes: Int, age: TimeInterval) throws -> URL {
        let url = directory.appendingPathComponent(String(repeating: digit, count: 64) + ".csv")
        try Data(count: bytes).write(to: url)
        try backdate(url, by: age)
        return url
    }

    func names(_ directory: URL) -> Set<String> {
        Set((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
    }

    @Test("MLJobOptions: spoolCacheBytes defaults to 4 GiB; JOBFARM_SPOOL_CACHE_MB sets it in MiB; bad values are ignored")
    func environment() {
        #expect(MLJobOptions().spoolCacheBytes == 4 << 30)
        #expect(MLJobOptions.fromEnvironment([:]).spoolCacheBytes == 4 << 30)
        #expect(MLJobOptions.fromEnvironment(["JOBFARM_SPOOL_CACHE_MB": "16"]).spoolCacheBytes == 16 << 20)
        #expect(MLJobOptions.fromEnvironment(["JOBFARM_SPOOL_CACHE_MB": "0"]).spoolCacheBytes == 0)
        #expect(MLJobOptions.fromEnvironment(["JOBFARM_SPOOL_CACHE_MB": "-1"]).spoolCacheBytes == 4 << 30)
        #expect(MLJobOptions.fromEnvironment(["JOBFARM_SPOOL_CACHE_MB": "lots"]).spoolCacheBytes == 4 << 30)
    }

    @Test("oldest first until under the bound; the kept file survives though oldest; leased files are skipped until released")
    func lruOrder() throws {
        let directory = try spoolScratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let spool = SpoolCache()
        let a = try copy(directory, "a", bytes: 1000, age: 500)
        let b = try copy(directory, "b", bytes: 1000, age: 400)
        let c = try copy(directory, "c", bytes: 1000, age: 300)
        let d = try copy(directory, "d", bytes: 1000, age: 200)
        try Data(count: 5000).write(to: directory.appendingPathComponent("notes.txt"))  // not a copy: not counted
        // a is the oldest but kept (as the file just written would be); b is leased; so c goes, then d.
        let keep = try #require(spool.lease(a))
        var held = [try #require(spool.lease(b))]
        #expect(spool.isInUse(b))
        let removed = spool.trim(directory, limit: 2000, keep: keep.id)
        #expect(removed == [c.lastPathComponent, d.lastPathComponent], "\(removed)")
        #expect(names(directory) == [a.lastPathComponent, b.lastPathComponent, "notes.txt"])
        // Only protected files left: over the bound, nothing more to delete.
        #expect(spool.trim(directory, limit: 0, keep: keep.id).isEmpty)
        held.removeAll()
        #expect(held.isEmpty && !spool.isInUse(b))
        #expect(spool.trim(directory, limit: 0, keep: keep.id) == [b.lastPathComponent])
        #expect(names(directory) == [a.lastPathComponent, "notes.txt"])
    }

    @Test("under the bound nothing is deleted; partials older than an hour go on every trim and on first use, younger ones stay")
    func partials() throws {
        let directory = try spoolScratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let spool = SpoolCache()
        let a = try copy(directory, "a", bytes: 100, age: 10_000)
        func partial(_ name: String, age: TimeInterval) throws -> URL {
            let url = directory.appendingPathComponent(".\(name).123.partial")
            try Data(count: 10).write(to: url)
            try backdate(url, by: age)
            return url
        }
        let old = try partial("old", age: 7200)
        let fresh = try partial("fresh", age: 60)
        let nearly = try partial("nearly", age: 3000)
        spool.sweepOnFirstUse(directory)
        #expect(names(directory) == [a.lastPathComponent, fresh.lastPathComponent, nearly.lastPathComponent])
        #expect(!FileManager.default.fileExists(atPath: old.path))
        let again = try partial("again", age: 7200)
        spool.sweepOnFirstUse(directory)
        #expect(FileManager.default.fileExists(atPath: again.path), "the first-use sweep runs once per directory")
        #expect(spool.trim(directory, limit: 1 << 20, keep: nil) == [again.lastPathComponent])
        #expect(names(directory) == [a.lastPathComponent, fresh.lastPathComponent, nearly.lastPathComponent])
    }

    @Test("a leased file stays readable through the lease after another process deletes it")
    func leaseOutlivesUnlink() throws {
        let directory = try spoolScratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent(String(repeating: "e", count: 64) + ".csv")
        let bytes = spoolTestCSV(rows: 50, seed: 3)
        try Data(bytes).write(to: url)
        let lease = try #require(SpoolCache().lease(url))
        try FileManager.default.removeItem(at: url)
        #expect(try [UInt8](Data(contentsOf: lease.readableURL)) == bytes)
        #expect(try [UInt8](Data(contentsOf: lease.readableURL)) == bytes, "each open starts at the beginning")
    }
}

/// `farm:NAME` copies in the spool directory are bounded by `spoolCacheBytes` (LRU), files in use are never
/// evicted, and stale partials are cleaned, end to end through jobs on a real Redis.
@Suite("Spool cache bound through jobs", .enabled(if: TestRedis.available))
struct SpoolCacheTests {
    struct Spool {
        let root: URL
        var directory: URL { root.appendingPathComponent("jobfarm-datasets") }
        func copy(_ record: DatasetRecord) -> URL { directory.appendingPathComponent("\(record.sha256).csv") }
        func exists(_ record: DatasetRecord) -> Bool { FileManager.default.fileExists(atPath: copy(record).path) }
        var copies: [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { !$0.hasSuffix(".partial") }
        }
        var bytes: Int {
            copies.reduce(0) { total, name in
                total + (((try? FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent(name).path))?[.size] as? Int) ?? 0)
            }
        }
    }

    /// A worker whose spool is a fresh directory bounded at `bound` bytes.
    func withSpoolWorker(bound: Int, _ body: (MLEnvironment, JobFarm, Spool) async throws -> Void) async throws {
        let farm = try mlTestFarm()
        let root = try spoolScratchDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        var options = testOptions()
        options.spoolDirectory = root.path
        options.spoolCacheBytes = bound
        try await withMLWorker(farm: farm, options: options) { environment in
            try await body(environment, farm, Spool(root: root))
        }
    }

    /// Runs `batch_analysis` (two passes over the file) on `farm:NAME`; it must succeed with `rows` rows.
    func analyse(_ farm: JobFarm, _ name: String, rows: Int) async throws {
        let result = try await succeed(farm, "batch_analysis", #"{"dataset": "farm:\#(name)", "labelColumn": "target", "blockRows": 16}"#)
        #expect(result.number("rows") == Double(rows), "\(name)")
    }

    @Test("three datasets under a bound of two and a half: the least recently used is evicted, the one just written kept")
    func evictsLeastRecentlyUsed() async throws {
        let a = spoolTestCSV(rows: 300, seed: 1), b = spoolTestCSV(rows: 300, seed: 2), c = spoolTestCSV(rows: 300, seed: 3)
        let bound = max(a.count, b.count, c.count) * 5 / 2
        try await withSpoolWorker(bound: bound) { environment, farm, spool in
            let ra = try await environment.datasets.push(name: "lru-a", bytes: a)
            let rb = try await environment.datasets.push(name: "lru-b", bytes: b)
            let rc = try await environment.datasets.push(name: "lru-c", bytes: c)
            try await analyse(farm, "lru-a", rows: 300)
            try backdate(spool.copy(ra), by: 300)
            try await analyse(farm, "lru-b", rows: 300)
            try backdate(spool.copy(rb), by: 200)
            #expect(spool.exists(ra) && spool.exists(rb), "two fit")
            try await analyse(farm, "lru-c", rows: 300)
            #expect(!spool.exists(ra), "the least recently used copy is evicted")
            #expect(spool.exists(rb) && spool.exists(rc), "the newer one and the one just written stay: \(spool.copies)")
            #expect(spool.bytes <= bound, "\(spool.bytes) bytes left, bound \(bound)")

            // a, evicted, is spooled again: now b is the least recently used.
            try backdate(spool.copy(rc), by: 100)
            try await analyse(farm, "lru-a", rows: 300)
            #expect(!spool.exists(rb) && spool.exists(rc) && spool.exists(ra), "\(spool.copies)")
            #expect(spool.bytes <= bound)
        }
    }

    @Test("a reused copy is refreshed and outlives an older one")
    func reuseRefreshes() async throws {
        let a = spoolTestCSV(rows: 300, seed: 4), b = spoolTestCSV(rows: 300, seed: 5), c = spoolTestCSV(rows: 300, seed: 6)
        let bound = max(a.count, b.count, c.count) * 5 / 2
        try await withSpoolWorker(bound: bound) { environment, farm, spool in
            let ra = try await environment.datasets.push(name: "reuse-a", bytes: a)
            let rb = try await environment.datasets.push(name: "reuse-b", bytes: b)
            let rc = try await environment.datasets.push(name: "reuse-c", bytes: c)
            try await analyse(farm, "reuse-a", rows: 300)
            try backdate(spool.copy(ra), by: 300)
            try await analyse(farm, "reuse-b", rows: 300)
            try backdate(spool.copy(rb), by: 200)
            // a, spooled first, is used again: its modification time becomes now.
            try await analyse(farm, "reuse-a", rows: 300)
            let touched = try #require(modificationDate(spool.copy(ra)))
            #expect(touched > Date(timeIntervalSinceNow: -60), "reuse touches the copy: \(touched)")
            try await analyse(farm, "reuse-c", rows: 300)
            #expect(!spool.exists(rb), "b, now the least recently used, is evicted")
            #expect(spool.exists(ra) && spool.exists(rc), "\(spool.copies)")
        }
    }

    @Test("a .partial two hours old is deleted when the directory is first used and on a trim; fresh ones stay")
    func stalePartials() async throws {
        let a = spoolTestCSV(rows: 50, seed: 7), b = spoolTestCSV(rows: 50, seed: 8)
        try await withSpoolWorker(bound: 1 << 30) { environment, farm, spool in
            try FileManager.default.createDirectory(at: spool.directory, withIntermediateDirectories: true)
            func partial(_ tag: String, hoursOld: Double) throws -> URL {
                let url = spool.directory.appendingPathComponent(".\(String(repeating: "0", count: 64)).99999.\(tag).partial")
                try Data(repeating: 7, count: 100).write(to: url)
                if hoursOld > 0 { try backdate(url, by: hoursOld * 3600) }
                return url
            }
            let crashed = try partial("crashed", hoursOld: 2)
            let writing = try partial("writing", hoursOld: 0)
            let ra = try await environment.datasets.push(name: "partial-a", bytes: a)
            _ = try await environment.datasets.push(name: "partial-b", bytes: b)
            // First use: the copy is spooled and the stale partial is gone, the fresh one left alone.
            try await analyse(farm, "partial-a", rows: 50)
            #expect(!FileManager.default.fileExists(atPath: crashed.path), "a two-hour-old partial is deleted on first use")
            #expect(FileManager.default.fileExists(atPath: writing.path), "a fresh partial may be another process's: kept")
            #expect(spool.exists(ra))
            // Later, under the bound: a trim after the next spool sweeps partials again.
            let later = try partial("later", hoursOld: 2)
            try await analyse(farm, "partial-a", rows: 50)
            #expect(FileManager.default.fileExists(atPath: later.path), "a reuse spools nothing, so no trim")
            try await analyse(farm, "partial-b", rows: 50)
            #expect(!FileManager.default.fileExists(atPath: later.path), "the trim deletes it")
            #expect(FileManager.default.fileExists(atPath: writing.path))
            #expect(spool.copies.count == 2, "nothing evicted under the bound: \(spool.copies)")
        }
    }

    @Test("a bound smaller than one dataset: the job still succeeds; the copy is kept while in use and evicted later")
    func inUseIsKept() async throws {
        let small = spoolTestCSV(rows: 200, seed: 9), other = spoolTestCSV(rows: 300, seed: 10)
        try await withSpoolWorker(bound: 1000) { environment, farm, spool in
            let digits = try [UInt8](Data(contentsOf: URL(fileURLWithPath: PackagePaths.digits)))
            let rd = try await environment.datasets.push(name: "big-digits", bytes: digits)
            let rs = try await environment.datasets.push(name: "big-small", bytes: small)
            let ro = try await environment.datasets.push(name: "big-other", bytes: other)
            #expect(digits.count > 1000 && small.count > 1000 && other.count > 1000)

            // Through a job: 265 KB against a 1000-byte bound, two passes over the copy.
            let result = try await succeed(farm, "batch_analysis", #"{"dataset": "farm:big-digits", "labelColumn": "target", "blockRows": 100}"#)
            #expect(result.number("rows") == 1797)
            #expect(spool.exists(rd), "kept after the job until the next spool trims")

            // Held by a dataset opened in this process (as a running job holds it) while two other spools trim.
            do {
                let held = try await environment.openBlocks("farm:big-digits", labelColumn: "target", blockRows: 500)
                #expect(SpoolCache.shared.isInUse(spool.copy(rd)))
                try await analyse(farm, "big-small", rows: 200)
                #expect(spool.exists(rd), "in use: not evicted though least recently used and over the bound")
                #expect(spool.exists(rs), "the one just written stays")
                try await analyse(farm, "big-other", rows: 300)
                #expect(spool.exists(rd) && !spool.exists(rs) && spool.exists(ro), "\(spool.copies)")
                // Another worker process sharing the directory may delete it: the held dataset still reads in full.
                try FileManager.default.removeItem(at: spool.copy(rd))
                var rows = 0
                try held.forEachBlock { _, _, n in rows += n }
                try held.forEachBlock { _, _, n in rows += n }
                #expect(rows == 2 * 1797, "two passes after the unlink")
            }
            #expect(!SpoolCache.shared.isInUse(spool.copy(ro)))

            // Released: the next spool evicts what is over the bound.
            let result2 = try await succeed(farm, "batch_analysis", #"{"dataset": "farm:big-digits", "labelColumn": "target", "blockRows": 100}"#)
            #expect(result2.number("rows") == 1797)
            try await analyse(farm, "big-small", rows: 200)
            #expect(spool.copies == [spool.copy(rs).lastPathComponent], "only the one just written is left: \(spool.copies)")
        }
    }
}
