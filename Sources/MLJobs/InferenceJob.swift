import Compute
import Foundation
import JobProtocol
import JobWorker
import ModelStore

/// The `inference` payload, read straight from the `JSONValue` tree.
///
/// Numbers may also be written as the strings "NaN", "Infinity" or "-Infinity" (JSON has no literal for them),
/// so such inputs are refused with a message naming the row and feature instead of a parse error.
struct InferenceRequest: Sendable {
    /// `name`, `name:7`, `name:production`, `name:latest`.
    var model: String
    /// Input rows, each `inputs` numbers long.
    var inputs: [[Double]]
    /// `fp32`, `fp16`, `int8`; default: the stored model's precision.
    var precision: String?
    /// Classes per row in `topK` (default 3).
    var topK: Int?
    /// Include the raw logits (default true).
    var returnLogits: Bool?
    /// Include every class probability (default false; top-k always has them).
    var returnProbabilities: Bool?

    init(_ payload: JSONValue) throws {
        guard case .object(let fields) = payload else {
            throw JobError.nonRetryable("payload does not fit kind 'inference': expected an object with 'model' and 'inputs'")
        }
        guard case .string(let model)? = fields["model"] else {
            throw JobError.nonRetryable("payload does not fit kind 'inference': missing field 'model' (a string such as \"digits-mlp:production\")")
        }
        self.model = model
        guard case .array(let rows)? = fields["inputs"] else {
            throw JobError.nonRetryable("payload does not fit kind 'inference': missing field 'inputs' (an array of rows of numbers)")
        }
        inputs = try rows.enumerated().map { index, row in
            guard case .array(let values) = row else {
                throw JobError.nonRetryable("'inputs' row \(index) is not an array of numbers")
            }
            return try values.enumerated().map { column, value in
                switch value {
                case .number(let number): return number
                case .string(let text):
                    switch text.lowercased() {
                    case "nan": return .nan
                    case "infinity", "inf", "+infinity": return .infinity
                    case "-infinity", "-inf": return -.infinity
                    default: break
                    }
                    if let number = Double(text) { return number }
                    throw JobError.nonRetryable("'inputs' row \(index) feature \(column) is \"\(text)\", not a number")
                default:
                    throw JobError.nonRetryable("'inputs' row \(index) feature \(column) is \(value.jsonText), not a number")
                }
            }
        }
        func optional<T>(_ key: String, _ read: (JSONValue) -> T?) throws -> T? {
            guard let value = fields[key], value != .null else { return nil }
            guard let result = read(value) else {
                throw JobError.nonRetryable("payload does not fit kind 'inference': '\(key)' has the wrong type (\(value.jsonText))")
            }
            return result
        }
        precision = try optional("precision") { $0.stringValue }
        topK = try optional("topK") { $0.intValue }
        returnLogits = try optional("returnLogits") { if case .bool(let b) = $0 { return b } else { return nil } }
        returnProbabilities = try optional("returnProbabilities") { if case .bool(let b) = $0 { return b } else { return nil } }
    }
}

/// `inference`: rows through a stored model → logits, probabilities, top-k. Dynamically batched.
public struct InferenceJob: JobHandler {
    public static let kind = "inference"

    /// Payload: taken as the raw `JSONValue` (no `Codable` pass over the rows) and read by `InferenceRequest`.
    public typealias Parameters = JSONValue

    /// One class in a row's top-k.
    public struct Score: Encodable, Sendable {
        public var index: Int
        public var label: String?
        public var probability: Float
    }

    /// Result.
    public struct Output: Encodable, Sendable {
        public var model: String
        public var sha256: String
        public var precision: String
        public var rows: Int
        public var predictions: [Int]
        public var topK: [[Score]]
        public var logits: [[Float]]?
        public var probabilities: [[Float]]?
        /// Rows and requests in the forward pass this job joined (dynamic batching).
        public var batchRows: Int
        public var batchRequests: Int
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public var retryPolicy: RetryPolicy { .exponentialJitter(base: .milliseconds(200), cap: .seconds(10), maxAttempts: 3) }

    public func run(_ payload: Parameters, context: JobContext) async throws -> Output {
        let parameters = try InferenceRequest(payload)
        let rowCount = parameters.inputs.count
        guard rowCount >= 1 else { throw JobError.nonRetryable("'inputs' is empty: give at least one row") }
        guard rowCount <= environment.options.maxInferenceRows else {
            throw JobError.nonRetryable("'inputs' has \(rowCount) rows, over the limit of \(environment.options.maxInferenceRows) per job; split it, or use batch jobs")
        }
        let precision: Precision?
        if let text = parameters.precision {
            guard let value = Precision(rawValue: text.lowercased()) else {
                throw JobError.nonRetryable("precision '\(text)' is not fp32, fp16 or int8")
            }
            precision = value
        } else {
            precision = nil
        }
        let k = parameters.topK ?? 3
        guard k >= 1 else { throw JobError.nonRetryable("topK must be at least 1 (got \(k))") }
        let version = try await classifying { try await environment.resolve(parameters.model) }
        let model = try await classifying { try await environment.model(version, precision: precision) }
        let width = model.inputSize
        var rows = [Float]()
        rows.reserveCapacity(rowCount * width)
        for (index, row) in parameters.inputs.enumerated() {
            guard row.count == width else {
                throw JobError.nonRetryable("shape mismatch: input row \(index) has \(row.count) values, model \(version.reference) takes \(width)")
            }
            for (column, number) in row.enumerated() {
                let value = Float(number)
                guard value.isFinite else {
                    throw JobError.nonRetryable("input row \(index) feature \(column) is \(number)\(number.isFinite ? " (overflows float32)" : ""); inputs must be finite")
                }
                rows.append(value)
            }
        }
        let key = version.sha256 + "|" + (precision?.rawValue ?? "stored")
        let answer = try await classifying {
            try await environment.batcher.submit(key: key, model: model, rows: rows, count: rowCount)
        }
        let classes = model.outputSize
        let labels = model.config.classLabels
        var predictions: [Int] = []
        var top: [[Score]] = []
        var logitRows: [[Float]] = []
        var probabilityRows: [[Float]] = []
        for r in 0..<rowCount {
            let z = Array(answer.logits[(r * classes)..<((r + 1) * classes)])
            let p = softmax(z)
            let order = (0..<classes).sorted { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
            predictions.append(order[0])
            top.append(order.prefix(k).map { Score(index: $0, label: labels?[$0], probability: p[$0]) })
            logitRows.append(z)
            probabilityRows.append(p)
        }
        return Output(
            model: version.reference, sha256: version.sha256, precision: (precision ?? model.precision ?? .fp32).rawValue,
            rows: rowCount, predictions: predictions, topK: top,
            logits: parameters.returnLogits ?? true ? logitRows : nil,
            probabilities: parameters.returnProbabilities ?? false ? probabilityRows : nil,
            batchRows: answer.batchRows, batchRequests: answer.batchRequests)
    }
}

/// Numerically stable softmax of one row.
func softmax(_ z: [Float]) -> [Float] {
    let m = z.max() ?? 0
    let e = z.map { Foundation.exp($0 - m) }
    let s = e.reduce(0, +)
    return e.map { $0 / s }
}
