import Compute
import Foundation
import JobPayloads
import JobProtocol
import JobWorker
import ModelStore

/// `batch_analysis`: per-column statistics, histograms, covariance and correlation (BLAS), PCA.
public struct BatchAnalysisJob: JobHandler {
    public static let kind = "batch_analysis"

    /// Payload: read and checked by `BatchAnalysisPayload` (the check the dispatcher runs too).
    public typealias Parameters = JSONValue

    /// One column's summary.
    public struct Column: Encodable, Sendable {
        public var name: String
        public var count: Int
        public var mean: Double?
        /// Sample standard deviation (n − 1 denominator, NumPy `ddof=1`); null for fewer than 2 values.
        public var std: Double?
        public var min: Double?
        public var max: Double?
        /// Level (as text) → value.
        public var quantiles: [String: Double?]
        public var histogram: HistogramOutput?
    }

    /// `np.histogram` edges and counts.
    public struct HistogramOutput: Encodable, Sendable {
        public var edges: [Double]
        public var counts: [Int]
    }

    /// A matrix embedded (small) or stored as a farm dataset (large).
    public struct Matrix: Encodable, Sendable {
        public var rows: Int
        public var columns: Int
        /// Row-major values; null where undefined (correlation of a constant column).
        public var values: [[Double?]]?
        /// `farm:NAME` of a float64 .npy when too large to embed.
        public var stored: String?
    }

    /// PCA summary.
    public struct PCAOutput: Encodable, Sendable {
        public var explainedVariance: [Double]
        public var explainedVarianceRatio: [Double]
        public var components: Matrix
    }

    /// Result.
    public struct Output: Encodable, Sendable {
        public var dataset: String
        public var rows: Int
        public var columns: Int
        public var stdConvention: String
        public var summary: [Column]
        public var covariance: Matrix?
        public var correlation: Matrix?
        public var pca: PCAOutput?
        /// How the data was read and which results are exact.
        public var streaming: StreamingInfo
    }

    /// How the dataset was read.
    public struct StreamingInfo: Encodable, Sendable {
        public var blockRows: Int
        public var blocks: Int
        /// Passes over the data (2 when histograms need a second pass for their range).
        public var passes: Int
        public var source: String
        public var covarianceMethod: String
        public var pcaMethod: String
        public var quantileMethod: String
        /// Rows the quantiles were computed from.
        public var quantileRows: Int
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public func run(_ payload: Parameters, context: JobContext) async throws -> Output {
        let parameters = try parse(BatchAnalysisPayload.self, payload)
        let levels = parameters.quantiles ?? [0.05, 0.25, 0.5, 0.75, 0.95]
        let bins = parameters.histogramBins ?? 10
        let components = parameters.pcaComponents ?? 2
        let budget = parameters.memoryBudgetBytes ?? (256 << 20)
        guard bins >= 0, bins <= 10_000 else { throw JobError.nonRetryable("histogramBins must be 0…10000 (got \(bins))") }
        guard components >= 0 else { throw JobError.nonRetryable("pcaComponents must be >= 0 (got \(components))") }
        guard budget >= 0 else { throw JobError.nonRetryable("memoryBudgetBytes must be >= 0 (got \(budget))") }
        if let q = levels.first(where: { !($0 >= 0 && $0 <= 1) }) {
            throw JobError.nonRetryable("quantile level \(q) is outside [0, 1]")
        }
        await context.progress(0.05)
        let data = try await environment.openBlocks(parameters.dataset, labelColumn: parameters.labelColumn,
                                                    blockRows: parameters.blockRows ?? 65_536)
        let columns = data.columns
        if components > columns {
            throw JobError.nonRetryable("pcaComponents \(components) is more than the \(columns) columns of \(parameters.dataset)")
        }
        let wantCovariance = parameters.covariance ?? true
        let needCoMoments = wantCovariance || components > 0
        // Rows kept for the quantiles: all of them when they fit the budget (exact), else a reservoir sample.
        let sampleCapacity = max(1, budget / max(1, columns * MemoryLayout<Float>.size))
        let executor = environment.executor
        // Progress is reported after every block of each pass (and a cancelled job stops at the next block).
        let (first, histograms, quantiles) = try await withComputeProgress(context) { relay in
            let firstPass = relay.phase(from: 0.05, to: 0.4), secondPass = relay.phase(from: 0.4, to: 0.6)
            // Pass 1: running statistics, co-moments, quantile sample.
            let first = try await classifying {
                try await executor.run { () throws -> StreamingPass in
                    var pass = StreamingPass(columns: columns, coMoments: needCoMoments, sampleCapacity: sampleCapacity)
                    try data.forEachBlock(progress: firstPass) { features, _, rows in try pass.add(features, rows: rows, source: data.source) }
                    return pass
                }
            }
            let rows = first.rows
            guard rows >= 1 else { throw JobError.nonRetryable("dataset \(parameters.dataset) has no rows") }
            try relay.report(0.4)
            // Pass 2 (histograms need the range, known only after pass 1).
            let stats = first.statistics
            var histograms: [HistogramOutput?] = Array(repeating: nil, count: columns)
            if bins > 0 {
                histograms = try await classifying {
                    try await executor.run {
                        let ranges: [ClosedRange<Double>?] = (0..<columns).map { c in
                            stats.counts[c] > 0 ? stats.minimums[c]...stats.maximums[c] : nil
                        }
                        for c in 0..<columns where ranges[c] != nil {
                            if !(ranges[c]!.lowerBound.isFinite && ranges[c]!.upperBound.isFinite) {
                                throw ComputeError.nonFiniteValue("histogram range [\(ranges[c]!.lowerBound), \(ranges[c]!.upperBound)] is not finite")
                            }
                        }
                        if first.retainedAll {
                            return try (0..<columns).map { c in
                                try ranges[c].map { range -> HistogramOutput in
                                    let h = try Statistics.histogram(first.columnValues(c), bins: bins, range: range)
                                    return HistogramOutput(edges: h.edges, counts: h.counts)
                                }
                            }
                        }
                        var counts = [[Int]](repeating: [Int](repeating: 0, count: bins), count: columns)
                        var edges = [[Double]](repeating: [], count: columns)
                        try data.forEachBlock(progress: secondPass) { features, _, n in
                            for c in 0..<columns {
                                guard let range = ranges[c] else { continue }
                                let h = try Statistics.histogram((0..<n).map { Double(features[$0 * columns + c]) }, bins: bins, range: range)
                                edges[c] = h.edges
                                for b in 0..<bins { counts[c][b] += h.counts[b] }
                            }
                        }
                        return (0..<columns).map { c in edges[c].isEmpty ? nil : HistogramOutput(edges: edges[c], counts: counts[c]) }
                    }
                }
            }
            try relay.report(0.6)
            let quantiles: [[Double]] = try await classifying {
                try await executor.run {
                    try (0..<columns).map { c in
                        let values = first.columnValues(c).filter { !$0.isNaN }
                        return values.isEmpty ? levels.map { _ in Double.nan } : try Statistics.quantiles(values, levels: levels)
                    }
                }
            }
            return (first, histograms, quantiles)
        }
        let rows = first.rows
        let stats = first.statistics
        let stds = stats.standardDeviations
        let summary: [Column] = (0..<columns).map { c in
            let n = stats.counts[c]
            return Column(
                name: data.names[c], count: n, mean: n > 0 ? finite(stats.means[c]) : nil, std: finite(stds[c]),
                min: n > 0 ? finite(stats.minimums[c]) : nil, max: n > 0 ? finite(stats.maximums[c]) : nil,
                quantiles: Dictionary(uniqueKeysWithValues: zip(levels.map { String($0) }, quantiles[c].map(finite))),
                histogram: histograms[c])
        }
        var output = Output(dataset: parameters.dataset, rows: rows, columns: columns,
                            stdConvention: "sample (n-1), as numpy std(ddof=1)", summary: summary,
                            streaming: StreamingInfo(
                                blockRows: data.blockRows, blocks: first.blocks, passes: bins > 0 && !first.retainedAll ? 2 : 1,
                                source: data.spooled ? "farm dataset, spooled to local disk and read in blocks" : "file, read in blocks",
                                covarianceMethod: "per-block co-moment matrices (cblas_dsyrk on the block centred on its own mean) merged pairwise (Chan et al.); exact",
                                pcaMethod: "eigen-decomposition (LAPACK dsyevd) of the streamed covariance; exact",
                                quantileMethod: first.retainedAll
                                    ? "exact (all \(rows) rows fit memoryBudgetBytes)"
                                    : "approximate: uniform reservoir sample of \(first.sampleRows) of \(rows) rows (seeded, reproducible)",
                                quantileRows: first.sampleRows))
        if needCoMoments, rows >= 2 {
            let cov = try await classifying { try first.covariance() }
            if wantCovariance {
                var corr = cov
                let sd = (0..<columns).map { cov[$0 * columns + $0].squareRoot() }
                for i in 0..<columns {
                    for j in 0..<columns { corr[i * columns + j] = i == j && sd[i] > 0 ? 1 : cov[i * columns + j] / (sd[i] * sd[j]) }
                }
                output.covariance = try await matrix(cov, rows: columns, columns: columns, name: "covariance", context: context)
                output.correlation = try await matrix(corr, rows: columns, columns: columns, name: "correlation", context: context)
            }
            await context.progress(0.8)
            if components > 0 {
                let pca = try await classifying { try await executor.run { try Statistics.principalComponents(covariance: cov, columns: columns, components: components) } }
                output.pca = PCAOutput(
                    explainedVariance: pca.variances, explainedVarianceRatio: pca.ratios,
                    components: try await matrix(pca.components.flatMap { $0 }, rows: components, columns: columns, name: "pca", context: context))
            }
        }
        await context.progress(1)
        return output
    }

    /// Embeds a small matrix (NaN/Inf as null via JSON); stores a large one as a float64 .npy farm dataset.
    private func matrix(_ values: [Double], rows: Int, columns: Int, name: String, context: JobContext) async throws -> Matrix {
        if columns <= environment.options.maxEmbeddedMatrixColumns {
            return Matrix(rows: rows, columns: columns,
                          values: (0..<rows).map { r in (0..<columns).map { finite(values[r * columns + $0]) } })
        }
        let array = try NpyArray(shape: [rows, columns], storage: .float64(values))
        let datasetName = "result-\(context.id.lowercased().filter { $0.isLetter || $0.isNumber || $0 == "-" }.prefix(40))-\(name)"
        try await environment.datasets.push(name: datasetName, bytes: [UInt8](array.serialized()), format: "npy",
                                            metadata: ["job": context.id, "kind": Self.kind])
        return Matrix(rows: rows, columns: columns, values: nil, stored: "farm:\(datasetName)")
    }
}

/// The value, or nil when NaN or infinite (JSON has no literal for them).
func finite(_ value: Double) -> Double? { value.isFinite ? value : nil }

/// One pass over a dataset's blocks: per-column running statistics (`RunningStatistics`, Welford/Chan), the
/// co-moment matrix `Σ (x − mean)(x − mean)ᵀ` merged block by block, and a reservoir sample of rows for quantiles.
///
/// Co-moments: each block is centred on its own mean and its Gram matrix taken with `cblas_dsyrk` (FP64); two parts
/// A and B merge as `C = C_A + C_B + (m_B − m_A)(m_B − m_A)ᵀ · n_A·n_B / (n_A + n_B)` (Chan, Golub & LeVeque), which
/// is exact (up to rounding) and stable, unlike `Σxxᵀ − n·m·mᵀ`.
struct StreamingPass: Sendable {
    let columns: Int
    var statistics: RunningStatistics
    private(set) var rows = 0
    private(set) var blocks = 0
    private let coMoments: Bool
    private var means: [Double]
    private var comoment: [Double]
    private let sampleCapacity: Int
    private var sample: [Float] = []
    private var random = SeededRandom(seed: 0x5EED_5A4D)

    init(columns: Int, coMoments: Bool, sampleCapacity: Int) {
        self.columns = columns
        statistics = RunningStatistics(columns: columns)
        self.coMoments = coMoments
        means = [Double](repeating: 0, count: coMoments ? columns : 0)
        comoment = [Double](repeating: 0, count: coMoments ? columns * columns : 0)
        self.sampleCapacity = sampleCapacity
    }

    /// True while every row seen is in the sample (quantiles exact).
    var retainedAll: Bool { rows <= sampleCapacity }
    /// Rows in the sample.
    var sampleRows: Int { sample.count / max(1, columns) }

    /// Column `c` of the sample, as doubles.
    func columnValues(_ c: Int) -> [Double] { (0..<sampleRows).map { Double(sample[$0 * columns + c]) } }

    mutating func add(_ block: [Float], rows n: Int, source: String) throws {
        guard n > 0 else { return }
        try statistics.add(block)
        if coMoments {
            if let i = block.firstIndex(where: { !$0.isFinite }) {
                throw JobError.nonRetryable("dataset \(source): row \(rows + i / columns) column \(i % columns) is \(block[i]) (covariance and PCA need finite values)")
            }
            let (blockMean, gram) = try Statistics.centredGram(block, rows: n, columns: columns)
            let na = Double(rows), nb = Double(n), total = na + nb
            let delta = (0..<columns).map { blockMean[$0] - means[$0] }
            let weight = na * nb / total
            for i in 0..<columns {
                for j in 0...i { comoment[i * columns + j] += gram[i * columns + j] + delta[i] * delta[j] * weight }
            }
            for c in 0..<columns { means[c] += delta[c] * nb / total }
        }
        // Reservoir sample (Vitter's algorithm R) over rows.
        for r in 0..<n {
            let seen = rows + r
            if seen < sampleCapacity {
                sample.append(contentsOf: block[(r * columns)..<((r + 1) * columns)])
            } else {
                let j = random.nextIndex(below: seen + 1)
                if j < sampleCapacity { sample.replaceSubrange((j * columns)..<((j + 1) * columns), with: block[(r * columns)..<((r + 1) * columns)]) }
            }
        }
        rows += n
        blocks += 1
    }

    /// Sample covariance (n − 1), `columns × columns` row-major.
    func covariance() throws -> [Double] {
        guard rows >= 2 else { throw ComputeError.invalidArgument("covariance needs at least 2 rows, got \(rows)") }
        var cov = [Double](repeating: 0, count: columns * columns)
        for i in 0..<columns {
            for j in 0...i {
                let v = comoment[i * columns + j] / Double(rows - 1)
                cov[i * columns + j] = v
                cov[j * columns + i] = v
            }
        }
        return cov
    }
}
