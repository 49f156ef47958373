import Foundation

/// Summary of one column (NaN values are skipped, as pandas does).
public struct ColumnSummary: Sendable, Equatable {
    /// Column name, when known.
    public let name: String?
    /// Number of non-NaN values.
    public let count: Int
    /// Arithmetic mean.
    public let mean: Double
    /// Sample standard deviation with n − 1 in the denominator (pandas' default);
    /// NaN for fewer than two values.
    public let std: Double
    /// Smallest value.
    public let min: Double
    /// Largest value.
    public let max: Double
    /// Quantiles at the requested levels, linear interpolation (NumPy's default method).
    public let quantiles: [Double]
}

/// Histogram with NumPy's `np.histogram` semantics.
public struct Histogram: Sendable, Equatable {
    /// `bins + 1` ascending edges; every bin is half-open except the last, which includes its right edge.
    public let edges: [Double]
    /// Counts per bin (values outside the range are not counted).
    public let counts: [Int]
}

/// Principal components from the eigen-decomposition of the sample covariance.
public struct PCAResult: Sendable, Equatable {
    /// Column means subtracted before projection.
    public let mean: [Double]
    /// `k` unit-length components, each of `columns` values, by decreasing variance.
    /// Sign convention: each component's entry of largest magnitude is positive.
    public let components: [[Double]]
    /// Variance along each component (eigenvalues of the n − 1 covariance).
    public let explainedVariance: [Double]
    /// `explainedVariance / total variance` (trace of the covariance).
    public let explainedVarianceRatio: [Double]

    /// Projects `rows × columns` data onto the components: `rows × k` scores.
    public func transform(_ data: [Float], rows: Int) throws -> [Double] {
        let cols = mean.count
        guard data.count == rows * cols else {
            throw ComputeError.shapeMismatch("PCA transform: \(data.count) values for \(rows) rows × \(cols) columns")
        }
        var out = [Double](repeating: 0, count: rows * components.count)
        for r in 0..<rows {
            for (k, comp) in components.enumerated() {
                var s = 0.0
                for c in 0..<cols { s += (Double(data[r * cols + c]) - mean[c]) * comp[c] }
                out[r * components.count + k] = s
            }
        }
        return out
    }
}

/// Streaming per-column count, mean, variance (Welford/Chan merge), min and max.
public struct RunningStatistics: Sendable, Equatable {
    /// Number of columns.
    public let columns: Int
    /// Non-NaN values seen per column.
    public private(set) var counts: [Int]
    /// Running means.
    public private(set) var means: [Double]
    private var m2: [Double]
    /// Running minima (+inf before any value).
    public private(set) var minimums: [Double]
    /// Running maxima (−inf before any value).
    public private(set) var maximums: [Double]

    /// Starts empty statistics for `columns` columns.
    public init(columns: Int) {
        self.columns = columns
        counts = [Int](repeating: 0, count: columns)
        means = [Double](repeating: 0, count: columns)
        m2 = [Double](repeating: 0, count: columns)
        minimums = [Double](repeating: .infinity, count: columns)
        maximums = [Double](repeating: -.infinity, count: columns)
    }

    /// Adds a row-major block of rows (for example a `CSVRowBlock` or `NpyRowBlock`).
    public mutating func add(_ block: [Float]) throws {
        guard columns > 0, block.count % columns == 0 else {
            throw ComputeError.shapeMismatch("block of \(block.count) values is not a whole number of \(columns)-column rows")
        }
        let rows = block.count / columns
        for c in 0..<columns {
            var n = 0, mean = 0.0, m2 = 0.0, lo = Double.infinity, hi = -Double.infinity
            for r in 0..<rows {
                let v = Double(block[r * columns + c])
                if v.isNaN { continue }
                n += 1
                let d = v - mean
                mean += d / Double(n)
                m2 += d * (v - mean)
                lo = Swift.min(lo, v)
                hi = Swift.max(hi, v)
            }
            merge(column: c, n: n, mean: mean, m2: m2, lo: lo, hi: hi)
        }
    }

    private mutating func merge(column c: Int, n: Int, mean: Double, m2 other: Double, lo: Double, hi: Double) {
        guard n > 0 else { return }
        let na = Double(counts[c]), nb = Double(n), total = na + nb
        let delta = mean - means[c]
        means[c] += delta * nb / total
        m2[c] += other + delta * delta * na * nb / total
        counts[c] += n
        minimums[c] = Swift.min(minimums[c], lo)
        maximums[c] = Swift.max(maximums[c], hi)
    }

    /// Sample standard deviations (n − 1); NaN where fewer than two values.
    public var standardDeviations: [Double] {
        (0..<columns).map { counts[$0] > 1 ? (m2[$0] / Double(counts[$0] - 1)).squareRoot() : .nan }
    }
}

/// Column statistics, covariance, correlation and PCA over row-major FP32 data.
///
/// Accumulation is in FP64; covariance uses `cblas_dsyrk` on the centred data
/// and PCA uses LAPACK `dsyevd` on that covariance (exact eigen-decomposition).
public enum Statistics {
    /// Count, mean, sample std (n − 1), min, max and quantiles of every column.
    public static func describe(_ data: [Float], rows: Int, columns: Int, names: [String]? = nil,
                                quantileLevels: [Double] = [0.25, 0.5, 0.75]) throws -> [ColumnSummary] {
        try checkShape(data, rows: rows, columns: columns)
        if let names, names.count != columns {
            throw ComputeError.shapeMismatch("\(names.count) column names for \(columns) columns")
        }
        var running = RunningStatistics(columns: columns)
        try running.add(data)
        let stds = running.standardDeviations
        return try (0..<columns).map { c in
            let values = (0..<rows).map { Double(data[$0 * columns + c]) }.filter { !$0.isNaN }
            let q = values.isEmpty ? quantileLevels.map { _ in Double.nan } : try quantiles(values, levels: quantileLevels)
            return ColumnSummary(name: names?[c], count: running.counts[c],
                                 mean: running.counts[c] > 0 ? running.means[c] : .nan, std: stds[c],
                                 min: running.counts[c] > 0 ? running.minimums[c] : .nan,
                                 max: running.counts[c] > 0 ? running.maximums[c] : .nan, quantiles: q)
        }
    }

    /// Quantiles with linear interpolation between order statistics (NumPy `method="linear"`):
    /// for level q, h = (n − 1)·q, result = x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋]).
    public static func quantiles(_ values: [Double], levels: [Double]) throws -> [Double] {
        guard !values.isEmpty else { throw ComputeError.invalidArgument("quantiles of an empty column") }
        if let q = levels.first(where: { !($0 >= 0 && $0 <= 1) }) {
            throw ComputeError.invalidArgument("quantile level \(q) is outside [0, 1]")
        }
        if values.contains(where: { $0.isNaN }) { throw ComputeError.nonFiniteValue("quantiles of a column containing NaN") }
        let x = values.sorted()
        let n = x.count
        return levels.map { q in
            let h = Double(n - 1) * q
            let lo = Int(h.rounded(.down))
            let hi = Swift.min(lo + 1, n - 1)
            let t = h - Double(lo)
            let a = x[lo], b = x[hi]
            // NumPy's _lerp: symmetric form for better accuracy near t = 1.
            return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t
        }
    }

    /// Histogram like `np.histogram(values, bins, range)`; the default range is (min, max),
    /// widened by ±0.5 when all values are equal. NaN values are ignored.
    public static func histogram(_ values: [Double], bins: Int, range: ClosedRange<Double>? = nil) throws -> Histogram {
        guard bins >= 1 else { throw ComputeError.invalidArgument("histogram needs at least one bin, got \(bins)") }
        let finite = values.filter { !$0.isNaN }
        var lo = range?.lowerBound ?? finite.min() ?? 0
        var hi = range?.upperBound ?? finite.max() ?? 1
        guard lo.isFinite, hi.isFinite else { throw ComputeError.nonFiniteValue("histogram range [\(lo), \(hi)] is not finite") }
        if lo == hi { lo -= 0.5; hi += 0.5 }
        let step = (hi - lo) / Double(bins)
        var edges = (0...bins).map { lo + Double($0) * step }
        edges[bins] = hi
        var counts = [Int](repeating: 0, count: bins)
        let norm = Double(bins) / (hi - lo)
        for v in finite where v >= lo && v <= hi {
            var i = Int(((v - lo) * norm).rounded(.down))
            if i == bins { i -= 1 }
            // Same edge corrections as NumPy.
            if v < edges[i] { i -= 1 } else if i != bins - 1 && v >= edges[i + 1] { i += 1 }
            counts[i] += 1
        }
        return Histogram(edges: edges, counts: counts)
    }

    /// The column means of `data` (`rows × columns`, row-major) and `alpha · Σ (x − mean)(x − mean)ᵀ` in FP64
    /// (`cblas_dsyrk`), `columns × columns`, both triangles filled. The covariance is this with
    /// `alpha = 1/(rows − 1)`; streamed analyses take it per block with `alpha = 1` and merge the blocks.
    public static func centredGram(_ data: [Float], rows: Int, columns: Int, alpha: Double = 1) throws
        -> (means: [Double], gram: [Double])
    {
        try BLAS.checkInt32(rows, columns, columns * columns)
        var means = [Double](repeating: 0, count: columns)
        for r in 0..<rows { for c in 0..<columns { means[c] += Double(data[r * columns + c]) } }
        for c in 0..<columns { means[c] /= Double(max(1, rows)) }
        var centred = [Double](repeating: 0, count: rows * columns)
        for r in 0..<rows { for c in 0..<columns { centred[r * columns + c] = Double(data[r * columns + c]) - means[c] } }
        var gram = [Double](repeating: 0, count: columns * columns)
        centred.withUnsafeBufferPointer { a in
            gram.withUnsafeMutableBufferPointer { c in
                BLAS.gramMatrix(a, rows: rows, cols: columns, alpha: alpha, into: c)
            }
        }
        return (means, gram)
    }

    /// Sample covariance matrix (n − 1), `columns × columns` row-major.
    public static func covariance(_ data: [Float], rows: Int, columns: Int) throws -> [Double] {
        try checkShape(data, rows: rows, columns: columns)
        guard rows >= 2 else { throw ComputeError.invalidArgument("covariance needs at least 2 rows, got \(rows)") }
        if let i = data.firstIndex(where: { !$0.isFinite }) {
            throw ComputeError.nonFiniteValue("row \(i / columns) column \(i % columns) is \(data[i])")
        }
        let cov = try centredGram(data, rows: rows, columns: columns, alpha: 1 / Double(rows - 1)).gram
        return cov
    }

    /// Pearson correlation matrix, `columns × columns` row-major (NaN where a column is constant).
    public static func correlation(_ data: [Float], rows: Int, columns: Int) throws -> [Double] {
        var m = try covariance(data, rows: rows, columns: columns)
        let sd = (0..<columns).map { m[$0 * columns + $0].squareRoot() }
        for i in 0..<columns {
            for j in 0..<columns {
                m[i * columns + j] = i == j && sd[i] > 0 ? 1 : m[i * columns + j] / (sd[i] * sd[j])
            }
        }
        return m
    }

    /// The top `components` principal components.
    public static func pca(_ data: [Float], rows: Int, columns: Int, components k: Int) throws -> PCAResult {
        guard k >= 1, k <= columns else {
            throw ComputeError.invalidArgument("PCA components must be in 1...\(columns), got \(k)")
        }
        let cov = try covariance(data, rows: rows, columns: columns)
        let (comps, variances, ratios) = try principalComponents(covariance: cov, columns: columns, components: k)
        var means = [Double](repeating: 0, count: columns)
        for r in 0..<rows { for c in 0..<columns { means[c] += Double(data[r * columns + c]) } }
        return PCAResult(mean: means.map { $0 / Double(rows) }, components: comps, explainedVariance: variances,
                         explainedVarianceRatio: ratios)
    }

    /// The top `k` principal components of a covariance matrix (LAPACK `dsyevd`): decreasing variance, each
    /// component's largest-magnitude entry positive, ratios to the trace. Shared by `pca` and analyses that
    /// build the covariance block by block.
    public static func principalComponents(covariance cov: [Double], columns: Int, components k: Int) throws
        -> (components: [[Double]], variances: [Double], ratios: [Double])
    {
        let (values, vectors) = try BLAS.symmetricEigen(cov, n: columns)
        let total = (0..<columns).reduce(0.0) { $0 + cov[$1 * columns + $1] }
        var comps: [[Double]] = [], variances: [Double] = []
        for idx in (0..<columns).reversed().prefix(k) {   // LAPACK returns ascending eigenvalues
            var v = Array(vectors[(idx * columns)..<((idx + 1) * columns)])
            if let j = v.indices.max(by: { abs(v[$0]) < abs(v[$1]) }), v[j] < 0 { v = v.map { -$0 } }
            comps.append(v)
            variances.append(Swift.max(0, values[idx]))
        }
        return (comps, variances, variances.map { total > 0 ? $0 / total : 0 })
    }

    private static func checkShape(_ data: [Float], rows: Int, columns: Int) throws {
        guard rows >= 0, columns >= 1, data.count == rows * columns else {
            throw ComputeError.shapeMismatch("\(data.count) values for \(rows) rows × \(columns) columns")
        }
    }
}
