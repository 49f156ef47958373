import Compute
import Foundation
import JobWorker
import ModelStore

/// `batch_analysis`: per-column statistics, histograms, covariance and correlation (BLAS), PCA.
public struct BatchAnalysisJob: JobHandler {
    public static let kind = "batch_analysis"

    /// Payload.
    public struct Parameters: Decodable, Sendable {
        /// `farm:NAME` or a path (.npy or CSV with a header row).
        public var dataset: String
        /// A column left out of the statistics (e.g. the class label).
        public var labelColumn: String?
        /// Quantile levels (default 0.05, 0.25, 0.5, 0.75, 0.95).
        public var quantiles: [Double]?
        /// Histogram bins per column (default 10; 0 = none).
        public var histogramBins: Int?
        /// Include covariance and correlation (default true).
        public var covariance: Bool?
        /// Principal components to compute (default 2; 0 = none).
        public var pcaComponents: Int?
    }

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
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public func run(_ parameters: Parameters, context: JobContext) async throws -> Output {
        let levels = parameters.quantiles ?? [0.05, 0.25, 0.5, 0.75, 0.95]
        let bins = parameters.histogramBins ?? 10
        let components = parameters.pcaComponents ?? 2
        guard bins >= 0, bins <= 10_000 else { throw JobError.nonRetryable("histogramBins must be 0…10000 (got \(bins))") }
        guard components >= 0 else { throw JobError.nonRetryable("pcaComponents must be >= 0 (got \(components))") }
        await context.progress(0.05)
        let table = try await environment.loadTable(parameters.dataset, labelColumn: parameters.labelColumn)
        guard table.rows >= 1 else { throw JobError.nonRetryable("dataset \(parameters.dataset) has no rows") }
        if components > table.columns {
            throw JobError.nonRetryable("pcaComponents \(components) is more than the \(table.columns) columns of \(parameters.dataset)")
        }
        await context.progress(0.3)
        let executor = environment.executor
        let summary: [Column] = try await classifying {
            try await executor.run {
                let columns = try Statistics.describe(table.features, rows: table.rows, columns: table.columns, names: table.names, quantileLevels: levels)
                return try columns.enumerated().map { index, column in
                    var histogram: HistogramOutput?
                    if bins > 0, column.count > 0 {
                        let values = (0..<table.rows).map { Double(table.features[$0 * table.columns + index]) }
                        let h = try Statistics.histogram(values, bins: bins)
                        histogram = HistogramOutput(edges: h.edges, counts: h.counts)
                    }
                    return Column(
                        name: column.name ?? "col_\(index)", count: column.count, mean: finite(column.mean), std: finite(column.std),
                        min: finite(column.min), max: finite(column.max),
                        quantiles: Dictionary(uniqueKeysWithValues: zip(levels.map { String($0) }, column.quantiles.map(finite))),
                        histogram: histogram)
                }
            }
        }
        await context.progress(0.6)
        var output = Output(dataset: parameters.dataset, rows: table.rows, columns: table.columns,
                            stdConvention: "sample (n-1), as numpy std(ddof=1)", summary: summary)
        if parameters.covariance ?? true, table.rows >= 2 {
            let (cov, corr) = try await classifying {
                try await executor.run {
                    (try Statistics.covariance(table.features, rows: table.rows, columns: table.columns),
                     try Statistics.correlation(table.features, rows: table.rows, columns: table.columns))
                }
            }
            output.covariance = try await matrix(cov, rows: table.columns, columns: table.columns, name: "covariance", context: context)
            output.correlation = try await matrix(corr, rows: table.columns, columns: table.columns, name: "correlation", context: context)
        }
        await context.progress(0.8)
        if components > 0, table.rows >= 2 {
            let pca = try await classifying {
                try await executor.run { try Statistics.pca(table.features, rows: table.rows, columns: table.columns, components: components) }
            }
            output.pca = PCAOutput(
                explainedVariance: pca.explainedVariance, explainedVarianceRatio: pca.explainedVarianceRatio,
                components: try await matrix(pca.components.flatMap { $0 }, rows: components, columns: table.columns, name: "pca", context: context))
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
