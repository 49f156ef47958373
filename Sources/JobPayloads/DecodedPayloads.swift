import Foundation
import JobProtocol

/// Reads a `Decodable` payload with `JSONValueDecoder`, turning a decoding error into a problem at its field.
func decodePayload<T: Decodable>(_ type: T.Type, kind: String, from payload: JSONValue) throws(PayloadError) -> T {
    do {
        return try JSONValueDecoder().decode(T.self, from: payload)
    } catch let error as DecodingError {
        throw PayloadError(kind: kind, problems: [problem(error)])
    } catch {
        throw PayloadError(kind: kind, problems: [PayloadProblem("", "\(error)")])
    }
}

/// The pointer and a readable detail of a decoding error.
func problem(_ error: DecodingError) -> PayloadProblem {
    func pointer(_ path: [any CodingKey]) -> String {
        path.reduce("") { base, key in
            key.intValue.map { PayloadPointer.appending(base, $0) } ?? PayloadPointer.appending(base, key.stringValue)
        }
    }
    func noun(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "a boolean"
        case is Double.Type, is Float.Type: return "a number"
        case is Int.Type, is UInt64.Type, is Int64.Type, is UInt32.Type, is Int32.Type: return "an integer"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") || name.hasPrefix("[") { return "an array" }
            return "an object"
        }
    }
    switch error {
    case .keyNotFound(let key, let context):
        return PayloadProblem(pointer(context.codingPath + [key]), "required")
    case .typeMismatch(let type, let context):
        var found = ""
        if let range = context.debugDescription.range(of: " but found ") {
            var tail = context.debugDescription[range.upperBound...]
            if tail.hasSuffix(" instead.") { tail = tail.dropLast(" instead.".count) }
            found = ", got \(tail)"
        }
        return PayloadProblem(pointer(context.codingPath), "must be \(noun(type))\(found)")
    case .valueNotFound(let type, let context):
        return PayloadProblem(pointer(context.codingPath), "must be \(noun(type)), got null")
    case .dataCorrupted(let context):
        return PayloadProblem(pointer(context.codingPath), context.debugDescription)
    @unknown default:
        return PayloadProblem("", "\(error)")
    }
}

/// Collects problems of a decoded payload, then throws them all.
struct ProblemList {
    let kind: String
    var items: [PayloadProblem] = []

    mutating func check(_ condition: Bool, _ pointer: String, _ detail: @autoclosure () -> String) {
        if !condition { items.append(PayloadProblem(pointer, detail())) }
    }

    func throwIfAny() throws(PayloadError) {
        if !items.isEmpty { throw PayloadError(kind: kind, problems: items) }
    }
}

/// A stratified held-out split: `fraction` of each class, chosen by `seed`. The same values in `train` and
/// `validate` select the same rows.
public struct Holdout: Codable, Sendable, Equatable {
    /// Share of rows held out (0 < fraction < 1).
    public var fraction: Double
    /// Split seed (default 0).
    public var seed: UInt64?

    public init(fraction: Double, seed: UInt64? = nil) {
        self.fraction = fraction
        self.seed = seed
    }
}

/// Rows per block when reading a dataset: 1…16777216.
let blockRowsRange = 1...16_777_216

/// The `batch_analysis` payload.
public struct BatchAnalysisPayload: KindPayload, Decodable {
    public static let kind = "batch_analysis"
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
    /// Rows per block when reading the dataset (default 65536).
    public var blockRows: Int?
    /// Bytes of feature values kept for the quantiles (default 256 MiB): exact when the dataset fits, else
    /// computed on a reservoir sample of as many rows as fit.
    public var memoryBudgetBytes: Int?

    public init(parsing payload: JSONValue) throws(PayloadError) {
        self = try decodePayload(Self.self, kind: Self.kind, from: payload)
        var problems = ProblemList(kind: Self.kind)
        if let bins = histogramBins { problems.check((0...10_000).contains(bins), "/histogramBins", "must be 0…10000 (got \(bins))") }
        if let n = pcaComponents { problems.check(n >= 0, "/pcaComponents", "must be >= 0 (got \(n))") }
        if let n = memoryBudgetBytes { problems.check(n >= 0, "/memoryBudgetBytes", "must be >= 0 (got \(n))") }
        if let n = blockRows { problems.check(blockRowsRange.contains(n), "/blockRows", "must be 1…16777216 (got \(n))") }
        for (index, q) in (quantiles ?? []).enumerated() {
            problems.check(q >= 0 && q <= 1, PayloadPointer.appending("/quantiles", index), "quantile level \(q) is outside [0, 1]")
        }
        try problems.throwIfAny()
    }
}

/// The `quantize` payload.
public struct QuantizePayload: KindPayload, Decodable {
    public static let kind = "quantize"
    /// The source model reference.
    public var model: String
    /// `fp16` or `int8` (or `fp32`, with pruning).
    public var precision: String
    /// Zero this share of each weight tensor's smallest-magnitude entries first (0 ≤ s < 1).
    public var pruneSparsity: Double?
    /// Name of the new model (default: the source's name, as its next version).
    public var name: String?
    /// Point this alias of the new model's name at the new version.
    public var alias: String?

    public init(parsing payload: JSONValue) throws(PayloadError) {
        self = try decodePayload(Self.self, kind: Self.kind, from: payload)
        var problems = ProblemList(kind: Self.kind)
        problems.check(["fp16", "int8", "fp32"].contains(precision.lowercased()), "/precision", "precision '\(precision)' is not fp16, int8 or fp32")
        if let s = pruneSparsity { problems.check(s >= 0 && s < 1, "/pruneSparsity", "must be in [0, 1) (got \(s))") }
        if let name { problems.check(isValidPayloadName(name), "/name", "model name '\(name)' must be 1–64 of A–Z a–z 0–9 _ - .") }
        if let alias { problems.check(isValidPayloadName(alias), "/alias", "alias '\(alias)' must be 1–64 of A–Z a–z 0–9 _ - .") }
        try problems.throwIfAny()
    }
}

/// The `validate` payload.
public struct ValidatePayload: KindPayload, Decodable {
    public static let kind = "validate"

    /// Limits a candidate must meet; every one given is checked.
    public struct Thresholds: Codable, Sendable, Equatable {
        /// Candidate accuracy ≥ this (needs labels).
        public var minAccuracy: Double?
        /// Share of rows where candidate and reference agree on the top class ≥ this.
        public var minTop1Agreement: Double?
        /// Largest |candidate − reference| over all output probabilities ≤ this.
        public var maxAbsDiff: Double?
        /// Mean per-row cosine similarity of the logits ≥ this.
        public var minCosine: Double?
        /// Candidate tensor bytes / reference tensor bytes ≤ this.
        public var maxSizeRatio: Double?
    }

    /// What to do on pass.
    public struct Promotion: Codable, Sendable, Equatable {
        /// The alias to move to the candidate's version (e.g. `production`).
        public var alias: String
    }

    public var candidate: String
    /// Reference model (omit to check only accuracy and size).
    public var reference: String?
    /// Compared with instead when `reference` does not exist yet (an alias not set: the first night of a pipeline,
    /// before any `production`); the result says so in `note`.
    public var fallbackReference: String?
    /// The model `sizeRatio` is measured against, when not the reference (a quantized candidate against its own
    /// FP32 source).
    public var sizeReference: String?
    /// `farm:NAME` or a path.
    public var dataset: String
    /// The class column; accuracy is reported when given.
    public var labelColumn: String?
    /// Evaluate only on this held-out split (the same as `train`'s `holdout`).
    public var holdout: Holdout?
    public var thresholds: Thresholds?
    public var promote: Promotion?
    /// Rows per block when reading the dataset (default 65536); metrics are accumulated block by block.
    public var blockRows: Int?

    public init(parsing payload: JSONValue) throws(PayloadError) {
        self = try decodePayload(Self.self, kind: Self.kind, from: payload)
        var problems = ProblemList(kind: Self.kind)
        if let h = holdout {
            problems.check(h.fraction > 0 && h.fraction < 1, "/holdout/fraction", "must be between 0 and 1 (got \(h.fraction))")
            problems.check(labelColumn != nil, "/holdout", "holdout needs labels for its stratified split; give labelColumn")
        }
        if let n = blockRows { problems.check(blockRowsRange.contains(n), "/blockRows", "must be 1…16777216 (got \(n))") }
        if let alias = promote?.alias {
            problems.check(isValidPayloadName(alias), "/promote/alias", "alias '\(alias)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        try problems.throwIfAny()
    }
}

/// The `train` payload. Defaults are the worker's `TrainingConfig.trainJobDefault`.
public struct TrainPayload: KindPayload, Decodable {
    public static let kind = "train"
    /// `farm:NAME` or a path.
    public var dataset: String
    /// The class column (default `target`).
    public var labelColumn: String?
    /// Model name to push the new version under.
    public var name: String
    /// Hidden layer widths (default [128]).
    public var hiddenSizes: [Int]?
    /// relu (default), gelu, tanh, sigmoid.
    public var activation: String?
    /// `adam` (default) or `sgd`.
    public var optimizer: String?
    /// SGD momentum (default 0.9).
    public var momentum: Float?
    /// Default 0.003.
    public var learningRate: Float?
    /// L2 penalty λ (default 1e-4).
    public var l2: Float?
    /// Rows per mini-batch (default 64).
    public var batchSize: Int?
    /// Most epochs (default 60).
    public var epochs: Int?
    /// Initialisation, shuffling and validation split seed (default 1).
    public var seed: UInt64?
    /// Share of the training rows used for validation / early stopping (default 0: none).
    public var validationFraction: Double?
    /// A separate validation dataset (same columns), instead of `validationFraction`.
    public var validationDataset: String?
    /// Epochs without validation improvement before stopping (default 10; needs validation).
    public var earlyStoppingPatience: Int?
    /// Fit standardisation on the training rows and store it in the model (default true).
    public var standardize: Bool?
    /// Hold out a stratified share of the dataset for testing (use the same in `validate`).
    public var holdout: Holdout?
    /// Class names stored in the model config.
    public var classLabels: [String]?
    /// Point this alias at the new version (e.g. `candidate`).
    public var alias: String?
    /// Bytes of features the job may hold (default 256 MiB): a dataset whose `rows × features × 4` fits is trained
    /// in memory, a larger one is streamed from its file block by block.
    public var memoryBudgetBytes: Int?
    /// Rows per block when reading the dataset (default 65536); when streaming, rows are shuffled within blocks.
    public var blockRows: Int?

    public init(parsing payload: JSONValue) throws(PayloadError) {
        self = try decodePayload(Self.self, kind: Self.kind, from: payload)
        var problems = ProblemList(kind: Self.kind)
        problems.check(isValidPayloadName(name), "/name", "model name '\(name)' must be 1–64 of A–Z a–z 0–9 _ - .")
        if let text = activation {
            problems.check(["relu", "gelu", "tanh", "sigmoid"].contains(text.lowercased()), "/activation", "activation '\(text)' is not relu, gelu, tanh or sigmoid")
        }
        if let text = optimizer {
            problems.check(["adam", "sgd"].contains(text.lowercased()), "/optimizer", "optimizer '\(text)' is not adam or sgd")
        }
        if let n = epochs { problems.check((1...100_000).contains(n), "/epochs", "must be 1…100000 (got \(n))") }
        if let n = batchSize { problems.check(n >= 1, "/batchSize", "must be at least 1 (got \(n))") }
        for (index, size) in (hiddenSizes ?? []).enumerated() {
            problems.check((1...65_536).contains(size), PayloadPointer.appending("/hiddenSizes", index), "hidden layer widths must be 1…65536 (got \(size))")
        }
        if let h = holdout {
            problems.check(h.fraction > 0 && h.fraction < 1, "/holdout/fraction", "must be between 0 and 1 (got \(h.fraction))")
        }
        if let f = validationFraction { problems.check(f >= 0 && f < 1, "/validationFraction", "must be in [0, 1) (got \(f))") }
        if let n = memoryBudgetBytes { problems.check(n >= 0, "/memoryBudgetBytes", "must be >= 0 (got \(n))") }
        if let n = blockRows { problems.check(blockRowsRange.contains(n), "/blockRows", "must be 1…16777216 (got \(n))") }
        if let alias { problems.check(isValidPayloadName(alias), "/alias", "alias '\(alias)' must be 1–64 of A–Z a–z 0–9 _ - .") }
        try problems.throwIfAny()
    }
}
