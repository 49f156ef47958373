import Compute
import Foundation
import JobFarmTesting
import JobProtocol
import MLJobs
import ModelStore
import RedisClient
import Testing

/// `batch_analysis` and `validate` read datasets in row blocks (`blockRows`); on data that fits in memory the
/// results must equal the in-memory computation (exactly for counts, min, max, histogram counts; 1e-6 relative
/// for the rest).
@Suite("Streaming datasets in row blocks", .enabled(if: TestRedis.available))
struct StreamingTests {
    /// `a ≈ b` within 1e-6 relative (absolute floor 1e-9 for values near zero); nil only equals nil.
    func close(_ a: Double?, _ b: Double?, _ what: String) {
        guard let a, let b else {
            #expect(a == nil && b == nil, "\(what): \(String(describing: a)) vs \(String(describing: b))")
            return
        }
        #expect(abs(a - b) <= 1e-6 * max(abs(a), abs(b)) + 1e-9, "\(what): \(a) vs \(b)")
    }

    func numbers(_ value: JSONValue?) -> [Double?] {
        (value?.items ?? []).map { $0.doubleValue }
    }

    /// Every number of two `batch_analysis` results agrees (counts, min, max and histogram counts exactly).
    func sameAnalysis(_ a: JSONValue, _ b: JSONValue, _ label: String) {
        #expect(a.number("rows") == b.number("rows") && a.number("columns") == b.number("columns"), "\(label)")
        let sa = a["summary"]?.items ?? [], sb = b["summary"]?.items ?? []
        #expect(sa.count == sb.count && !sa.isEmpty, "\(label): summary sizes")
        for (x, y) in zip(sa, sb) {
            let name = x.text("name") ?? "?"
            #expect(x.text("name") == y.text("name"))
            #expect(x.number("count") == y.number("count"), "\(label) \(name) count")
            #expect(x.number("min") == y.number("min"), "\(label) \(name) min")
            #expect(x.number("max") == y.number("max"), "\(label) \(name) max")
            close(x.number("mean"), y.number("mean"), "\(label) \(name) mean")
            close(x.number("std"), y.number("std"), "\(label) \(name) std")
            #expect(x["histogram"]?["counts"]?.items.compactMap(\.intValue) == y["histogram"]?["counts"]?.items.compactMap(\.intValue),
                    "\(label) \(name) histogram")
            for (e, f) in zip(numbers(x["histogram"]?["edges"]), numbers(y["histogram"]?["edges"])) { close(e, f, "\(label) \(name) edge") }
            for level in ["0.05", "0.25", "0.5", "0.75", "0.95"] {
                close(x["quantiles"]?[level]?.doubleValue, y["quantiles"]?[level]?.doubleValue, "\(label) \(name) q\(level)")
            }
        }
        for key in ["covariance", "correlation"] {
            let ra = a[key]?["values"]?.items ?? [], rb = b[key]?["values"]?.items ?? []
            #expect(ra.count == rb.count && !ra.isEmpty, "\(label) \(key)")
            for (i, (r1, r2)) in zip(ra, rb).enumerated() {
                for (j, (v1, v2)) in zip(numbers(r1), numbers(r2)).enumerated() { close(v1, v2, "\(label) \(key)[\(i)][\(j)]") }
            }
        }
        for (v1, v2) in zip(numbers(a["pca"]?["explainedVariance"]), numbers(b["pca"]?["explainedVariance"])) { close(v1, v2, "\(label) pca variance") }
        for (v1, v2) in zip(numbers(a["pca"]?["explainedVarianceRatio"]), numbers(b["pca"]?["explainedVarianceRatio"])) { close(v1, v2, "\(label) pca ratio") }
        let ca = a["pca"]?["components"]?["values"]?.items ?? [], cb = b["pca"]?["components"]?["values"]?.items ?? []
        #expect(ca.count == cb.count, "\(label) pca components")
        for (r1, r2) in zip(ca, cb) {
            for (v1, v2) in zip(numbers(r1), numbers(r2)) { #expect(abs((v1 ?? .nan) - (v2 ?? .nan)) <= 1e-6, "\(label) pca component") }
        }
    }

    func options() -> MLJobOptions {
        var options = testOptions()
        options.maxEmbeddedMatrixColumns = 64
        return options
    }

    @Test("batch_analysis on a CSV path in 7-row blocks equals one block and the in-memory Statistics")
    func csvBlocksMatchInMemory() async throws {
        let farm = try mlTestFarm()
        try await withMLWorker(farm: farm, options: options()) { _ in
            let payload = #"{"dataset": "data/digits/digits.csv", "labelColumn": "target", "pcaComponents": 3, "histogramBins": 17, "blockRows": BR}"#
            let small = try await succeed(farm, "batch_analysis", payload.replacingOccurrences(of: "BR", with: "7"))
            let whole = try await succeed(farm, "batch_analysis", payload.replacingOccurrences(of: "BR", with: "100000"))
            #expect(small["streaming"]?.number("blocks") == 257)   // ⌈1797 / 7⌉
            #expect(whole["streaming"]?.number("blocks") == 1)
            #expect(small["streaming"]?.text("quantileMethod")?.hasPrefix("exact") == true)
            sameAnalysis(small, whole, "7 vs 100000")

            // Against Compute's in-memory functions on the whole matrix.
            let digits = try digitsDataset(from: PackagePaths.digits)
            let n = digits.count, x = digits.features
            let levels = [0.05, 0.25, 0.5, 0.75, 0.95]
            let described = try Statistics.describe(x, rows: n, columns: 64, quantileLevels: levels)
            let summary = small["summary"]?.items ?? []
            #expect(summary.count == 64)
            for (c, (column, expected)) in zip(summary, described).enumerated() {
                #expect(column.number("count") == Double(expected.count))
                #expect(column.number("min") == expected.min && column.number("max") == expected.max, "col \(c)")
                close(column.number("mean"), expected.mean, "col \(c) mean")
                close(column.number("std"), expected.std.isFinite ? expected.std : nil, "col \(c) std")
                for (level, q) in zip(levels, expected.quantiles) { close(column["quantiles"]?[String(level)]?.doubleValue, q, "col \(c) q\(level)") }
                let h = try Statistics.histogram((0..<n).map { Double(x[$0 * 64 + c]) }, bins: 17)
                #expect(column["histogram"]?["counts"]?.items.compactMap(\.intValue) == h.counts, "col \(c) histogram")
            }
            let cov = try Statistics.covariance(x, rows: n, columns: 64)
            let corr = try Statistics.correlation(x, rows: n, columns: 64)
            let covRows = small["covariance"]?["values"]?.items ?? [], corrRows = small["correlation"]?["values"]?.items ?? []
            #expect(covRows.count == 64 && corrRows.count == 64)
            for i in 0..<min(64, covRows.count, corrRows.count) {
                let cr = numbers(covRows[i]), rr = numbers(corrRows[i])
                for j in 0..<64 {
                    close(cr[j], cov[i * 64 + j], "cov[\(i)][\(j)]")
                    close(rr[j], corr[i * 64 + j].isFinite ? corr[i * 64 + j] : nil, "corr[\(i)][\(j)]")
                }
            }
            let pca = try Statistics.pca(x, rows: n, columns: 64, components: 3)
            for (a, b) in zip(numbers(small["pca"]?["explainedVariance"]), pca.explainedVariance) { close(a, b, "pca variance") }
            for (a, b) in zip(numbers(small["pca"]?["explainedVarianceRatio"]), pca.explainedVarianceRatio) { close(a, b, "pca ratio") }
            let comps = small["pca"]?["components"]?["values"]?.items ?? []
            #expect(comps.count == 3)
            for (row, expected) in zip(comps, pca.components) {
                for (a, b) in zip(numbers(row), expected) { #expect(abs((a ?? .nan) - b) <= 1e-6, "pca component") }
            }
        }
    }

    @Test("batch_analysis on a .npy path (label column 'last') in 7-row blocks equals the farm dataset (read from its spooled copy) in one block")
    func npyBlocksMatchFarmDataset() async throws {
        let farm = try mlTestFarm()
        let digits = try digitsDataset(from: PackagePaths.digits)
        var values: [Double] = []
        for r in 0..<digits.count {
            values.append(contentsOf: digits.features[(r * 64)..<((r + 1) * 64)].map { Double($0) / 3 })
            values.append(Double(digits.labels[r]))
        }
        let bytes = try NpyArray(shape: [digits.count, 65], storage: .float64(values)).serialized()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-streaming-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("digits.npy").path
        try bytes.write(to: URL(fileURLWithPath: path))
        try await withMLWorker(farm: farm, options: options()) { environment in
            try await environment.datasets.push(name: "digits-npy", bytes: [UInt8](bytes), format: "npy")
            let streamed = try await succeed(farm, "batch_analysis", #"{"dataset": "\#(path)", "labelColumn": "last", "blockRows": 7, "pcaComponents": 2}"#)
            let loaded = try await succeed(farm, "batch_analysis", #"{"dataset": "farm:digits-npy", "labelColumn": "last", "blockRows": 1000000, "pcaComponents": 2}"#)
            #expect(streamed.number("columns") == 64 && streamed.number("rows") == 1797)
            #expect(streamed["streaming"]?.text("source")?.hasPrefix("file") == true)
            #expect(loaded["streaming"]?.text("source")?.hasPrefix("farm") == true)
            sameAnalysis(streamed, loaded, "npy 7 vs farm")
        }
    }

    @Test("batch_analysis on a farm: CSV dataset (spooled to the local cache) equals the same file by path; the copy is reused")
    func farmCSVMatchesFile() async throws {
        let farm = try mlTestFarm()
        let spool = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-spool-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: spool) }
        var spooling = options()
        spooling.spoolDirectory = spool.path
        try await withMLWorker(farm: farm, options: spooling) { environment in
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: PackagePaths.digits)))
            let record = try await environment.datasets.push(name: "digits-csv", bytes: bytes)
            let payload = #"{"dataset": "DS", "labelColumn": "target", "pcaComponents": 3, "histogramBins": 17, "blockRows": 100}"#
            let fromFarm = try await succeed(farm, "batch_analysis", payload.replacingOccurrences(of: "DS", with: "farm:digits-csv"))
            let fromFile = try await succeed(farm, "batch_analysis", payload.replacingOccurrences(of: "DS", with: "data/digits/digits.csv"))
            #expect(fromFarm["streaming"]?.text("source")?.hasPrefix("farm dataset, spooled") == true)
            #expect(fromFarm["streaming"]?.number("blocks") == 18)
            sameAnalysis(fromFarm, fromFile, "farm vs file")
            let copy = spool.appendingPathComponent("jobfarm-datasets/\(record.sha256).csv")
            #expect(try [UInt8](Data(contentsOf: copy)) == bytes, "the spooled copy is the dataset, byte for byte")
            // With the blob gone from Redis, the record still names the spooled copy, which is reused.
            _ = try await environment.datasets.client.execute(RedisCommand("DEL", environment.datasets.blobs.key(record.sha256)))
            let again = try await succeed(farm, "batch_analysis", payload.replacingOccurrences(of: "DS", with: "farm:digits-csv"))
            sameAnalysis(again, fromFile, "cached copy vs file")
            let names = try FileManager.default.contentsOfDirectory(atPath: spool.appendingPathComponent("jobfarm-datasets").path)
            #expect(names == ["\(record.sha256).csv"], "one content-addressed file, no partial leftovers: \(names)")
        }
    }

    @Test("over the memory budget, quantiles come from a seeded reservoir sample and say so; the rest stays exact")
    func reservoirQuantiles() async throws {
        let farm = try mlTestFarm()
        try await withMLWorker(farm: farm, options: options()) { _ in
            // 100 rows × 64 columns × 4 bytes.
            let payload = #"{"dataset": "data/digits/digits.csv", "labelColumn": "target", "blockRows": 50, "memoryBudgetBytes": 25600, "pcaComponents": 0}"#
            let sampled = try await succeed(farm, "batch_analysis", payload)
            let again = try await succeed(farm, "batch_analysis", payload)
            let exact = try await succeed(farm, "batch_analysis", #"{"dataset": "data/digits/digits.csv", "labelColumn": "target", "pcaComponents": 0}"#)
            #expect(sampled["streaming"]?.number("quantileRows") == 100)
            #expect(sampled["streaming"]?.text("quantileMethod")?.hasPrefix("approximate") == true)
            #expect(sampled["streaming"]?.number("passes") == 2)
            let s = sampled["summary"]?.items ?? [], a = again["summary"]?.items ?? [], e = exact["summary"]?.items ?? []
            #expect(s.count == 64 && e.count == 64)
            for (c, (x, y)) in zip(s, e).enumerated() {
                #expect(x.number("count") == y.number("count") && x.number("min") == y.number("min") && x.number("max") == y.number("max"))
                close(x.number("mean"), y.number("mean"), "col \(c) mean")
                close(x.number("std"), y.number("std"), "col \(c) std")
                #expect(x["histogram"]?["counts"]?.items.compactMap(\.intValue) == y["histogram"]?["counts"]?.items.compactMap(\.intValue))
                let median = x["quantiles"]?["0.5"]?.doubleValue ?? .nan
                #expect(median >= (y.number("min") ?? .nan) && median <= (y.number("max") ?? .nan))
                #expect(x["quantiles"]?["0.5"]?.doubleValue == a[c]["quantiles"]?["0.5"]?.doubleValue, "reproducible sample")
            }
            for (r1, r2) in zip(sampled["covariance"]?["values"]?.items ?? [], exact["covariance"]?["values"]?.items ?? []) {
                for (v1, v2) in zip(numbers(r1), numbers(r2)) { close(v1, v2, "covariance") }
            }
        }
    }

    @Test("validate accumulates its metrics per block: 7-row blocks equal one block and a direct computation")
    func validateBlocksMatchInMemory() async throws {
        let farm = try mlTestFarm()
        let candidate = try randomModel(inputs: 64, hidden: 16, outputs: 10, seed: 11)
        let reference = try randomModel(inputs: 64, hidden: 16, outputs: 10, seed: 12)
        try await withMLWorker(farm: farm, options: options()) { environment in
            let c = try await environment.models.push(model: candidate, name: "stream-cand")
            let r = try await environment.models.push(model: reference, name: "stream-ref")
            for holdout in ["", #", "holdout": {"fraction": 0.25, "seed": 3}"#] {
                let payload = #"{"candidate": "\#(c.reference)", "reference": "\#(r.reference)", "dataset": "data/digits/digits.csv", "labelColumn": "target", "blockRows": BR\#(holdout)}"#
                let small = try await succeed(farm, "validate", payload.replacingOccurrences(of: "BR", with: "7"))
                let whole = try await succeed(farm, "validate", payload.replacingOccurrences(of: "BR", with: "65536"))
                #expect(small.number("blocks") == 257 && whole.number("blocks") == 1)
                #expect(small.number("rows") == whole.number("rows"))
                for key in ["accuracy", "referenceAccuracy", "top1Agreement", "maxAbsDiff"] {
                    #expect(small.number(key) != nil && small.number(key) == whole.number(key), "\(key) \(holdout)")
                }
                for key in ["meanAbsDiff", "cosineSimilarity", "sizeRatio"] { close(small.number(key), whole.number(key), "\(key) \(holdout)") }
            }
            // Direct, in memory, on the whole data set.
            let digits = try digitsDataset(from: PackagePaths.digits)
            let n = digits.count
            let a = try candidate.logits(rows: digits.features, batch: n), b = try reference.logits(rows: digits.features, batch: n)
            func top(_ z: [Float], _ row: Int) -> Int { (0..<10).max { z[row * 10 + $0] < z[row * 10 + $1] } ?? 0 }
            var correct = 0, agree = 0, cosine = 0.0
            for row in 0..<n {
                if top(a, row) == digits.labels[row] { correct += 1 }
                if top(a, row) == top(b, row) { agree += 1 }
                var dot = 0.0, na = 0.0, nb = 0.0
                for j in 0..<10 {
                    dot += Double(a[row * 10 + j]) * Double(b[row * 10 + j])
                    na += Double(a[row * 10 + j]) * Double(a[row * 10 + j])
                    nb += Double(b[row * 10 + j]) * Double(b[row * 10 + j])
                }
                cosine += dot / (na.squareRoot() * nb.squareRoot())
            }
            let result = try await succeed(farm, "validate", #"{"candidate": "\#(c.reference)", "reference": "\#(r.reference)", "dataset": "data/digits/digits.csv", "labelColumn": "target", "blockRows": 7}"#)
            #expect(result.number("rows") == Double(n))
            close(result.number("accuracy"), Double(correct) / Double(n), "accuracy")
            close(result.number("top1Agreement"), Double(agree) / Double(n), "top1Agreement")
            close(result.number("cosineSimilarity"), cosine / Double(n), "cosine")
        }
    }
}
