import Foundation
import Testing
@testable import Compute

@Suite struct StatisticsTests {
    private let expected: [String: Any]
    private let data: [Float]
    private let rows: Int
    private let cols: Int

    init() throws {
        expected = try Fixtures.json("stats_expected.json")
        let array = try NpyArray(contentsOf: Fixtures.url("stats_data.npy"))
        data = array.floats()
        rows = array.shape[0]
        cols = array.shape[1]
    }

    private func close(_ a: Double, _ b: Double, _ rel: Double = 1e-9) -> Bool {
        abs(a - b) <= rel * max(1, abs(b))
    }

    @Test func describeMatchesNumPy() throws {
        #expect(rows == 300 && cols == 5)
        let levels = Fixtures.vector(expected["quantile_levels"])
        let summary = try Statistics.describe(data, rows: rows, columns: cols, quantileLevels: levels)
        let mean = Fixtures.vector(expected["mean"]), std = Fixtures.vector(expected["std_ddof1"])
        let mn = Fixtures.vector(expected["min"]), mx = Fixtures.vector(expected["max"])
        let q = Fixtures.matrix(expected["quantiles"])
        for c in 0..<cols {
            #expect(summary[c].count == rows)
            #expect(close(summary[c].mean, mean[c]))
            #expect(close(summary[c].std, std[c]))
            // Exact in principle; Foundation's JSON number parsing on Linux can be off by an ulp.
            #expect(close(summary[c].min, mn[c], 1e-15) && close(summary[c].max, mx[c], 1e-15))
            for (i, level) in levels.enumerated() {
                #expect(close(summary[c].quantiles[i], q[c][i], 1e-12), "column \(c) q\(level)")
            }
        }
    }

    @Test func histogramMatchesNumPy() throws {
        let col0 = (0..<rows).map { Double(data[$0 * cols]) }
        let h = try Statistics.histogram(col0, bins: 10)
        #expect(h.counts == Fixtures.vector(expected["hist_col0_counts"]).map { Int($0) })
        let edges = Fixtures.vector(expected["hist_col0_edges"])
        #expect(zip(h.edges, edges).allSatisfy { close($0, $1, 1e-12) })
        let constant = try Statistics.histogram([2, 2, 2], bins: 2)
        #expect(constant.edges == [1.5, 2, 2.5] && constant.counts == [0, 3])
        #expect(try Statistics.histogram([0, 1, 2, 3, 4], bins: 2, range: 0...4).counts == [2, 3])
    }

    @Test func covarianceAndCorrelationMatchNumPy() throws {
        let cov = try Statistics.covariance(data, rows: rows, columns: cols)
        let corr = try Statistics.correlation(data, rows: rows, columns: cols)
        let ec = Fixtures.matrix(expected["cov"]).flatMap { $0 }
        let er = Fixtures.matrix(expected["corr"]).flatMap { $0 }
        #expect(maxNormRelativeError(cov, ec) < 1e-10)
        #expect(maxNormRelativeError(corr, er) < 1e-10)
        for i in 0..<cols { for j in 0..<cols { #expect(cov[i * cols + j] == cov[j * cols + i]) } }
    }

    @Test func pcaMatchesNumPyEigh() throws {
        let k = Int(Fixtures.vector([expected["pca_k"] as Any])[0])
        let pca = try Statistics.pca(data, rows: rows, columns: cols, components: k)
        let comps = Fixtures.matrix(expected["pca_components"])
        let ev = Fixtures.vector(expected["pca_explained_variance"])
        let ratio = Fixtures.vector(expected["pca_explained_variance_ratio"])
        #expect(pca.components.count == k)
        for i in 0..<k {
            #expect(close(pca.explainedVariance[i], ev[i], 1e-9))
            #expect(close(pca.explainedVarianceRatio[i], ratio[i], 1e-9))
            #expect(maxNormRelativeError(pca.components[i], comps[i]) < 1e-7)
        }
        let scores = try pca.transform(data, rows: rows)
        // Variance of the first score equals the first eigenvalue.
        let s0 = (0..<rows).map { scores[$0 * k] }
        let m0 = s0.reduce(0, +) / Double(rows)
        let v0 = s0.reduce(0) { $0 + ($1 - m0) * ($1 - m0) } / Double(rows - 1)
        #expect(close(v0, ev[0], 1e-8))
        #expect(abs(m0) < 1e-8)
    }

    @Test func edgeCasesAndErrors() throws {
        #expect(try Statistics.quantiles([3, 1, 2, 4], levels: [0, 0.5, 1]) == [1, 2.5, 4])
        #expect(computeError { _ = try Statistics.quantiles([], levels: [0.5]) } != nil)
        #expect(computeError { _ = try Statistics.quantiles([1], levels: [1.5]) } != nil)
        #expect(computeError { _ = try Statistics.covariance([1, 2, .nan, 4], rows: 2, columns: 2) }?.message.contains("row 1 column 0") == true)
        #expect(computeError { _ = try Statistics.pca(data, rows: rows, columns: cols, components: 6) } != nil)
        let withNaN = try Statistics.describe([1, .nan, 3, 4], rows: 2, columns: 2)
        #expect(withNaN[1].count == 1 && withNaN[1].std.isNaN && withNaN[0].std == 2.0.squareRoot())
    }

    @Test func runningStatisticsMergeMatchesBatch() throws {
        var running = RunningStatistics(columns: cols)
        for start in stride(from: 0, to: rows, by: 70) {
            let end = min(rows, start + 70)
            try running.add(Array(data[(start * cols)..<(end * cols)]))
        }
        let std = Fixtures.vector(expected["std_ddof1"]), mean = Fixtures.vector(expected["mean"])
        for c in 0..<cols {
            #expect(close(running.means[c], mean[c]))
            #expect(close(running.standardDeviations[c], std[c], 1e-9))
        }
    }
}
