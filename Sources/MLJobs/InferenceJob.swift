import Compute
import Foundation
import JobPayloads
import JobProtocol
import JobWorker
import ModelStore

/// `inference`: rows through a stored model → logits, probabilities, top-k. Dynamically batched.
public struct InferenceJob: JobHandler {
    public static let kind = "inference"

    /// Payload: taken as the raw `JSONValue` (no `Codable` pass over the rows) and read by `InferencePayload`, the
    /// check the dispatcher runs too.
    public typealias Parameters = JSONValue

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public var retryPolicy: RetryPolicy { .exponentialJitter(base: .milliseconds(200), cap: .seconds(10), maxAttempts: 3) }

    public func run(_ payload: Parameters, context: JobContext) async throws -> Output {
        let parameters = try parse(InferencePayload.self, payload)
        let rowCount = parameters.rows
        guard rowCount <= environment.options.maxInferenceRows else {
            throw JobError.nonRetryable("'inputs' has \(rowCount) rows, over the limit of \(environment.options.maxInferenceRows) per job; split it, or use batch jobs")
        }
        let precision = parameters.precision.flatMap { Precision(rawValue: $0.lowercased()) }
        let version = try await classifying { try await environment.resolve(parameters.model, forServing: true) }
        let model = try await classifying { try await environment.model(version, precision: precision) }
        let width = model.inputSize
        guard parameters.width == width else {
            switch parameters.inputs {
            case .values: throw JobError.nonRetryable("shape mismatch: input rows have \(parameters.width) values, model \(version.reference) takes \(width)")
            case .tensor: throw JobError.nonRetryable("shape mismatch: /inputs/shape is [\(rowCount), \(parameters.width)], model \(version.reference) takes \(width) features per row")
            }
        }
        let rows = try Self.inputRows(parameters.inputs)
        let key = version.sha256 + "|" + (precision?.rawValue ?? "stored")
        let answer = try await classifying {
            try await environment.batcher.submit(key: key, model: model, rows: rows, count: rowCount)
        }
        return Self.output(parameters, model: model, version: version, precision: precision, logits: answer.logits,
                           batchRows: answer.batchRows, batchRequests: answer.batchRequests)
    }

    /// The result of a forward pass: predictions, top-k, and logits and probabilities as asked.
    static func output(
        _ parameters: InferencePayload, model: MLPModel, version: ModelVersion, precision: Precision?, logits: [Float],
        batchRows: Int, batchRequests: Int
    ) -> Output {
        let rowCount = parameters.rows
        let classes = model.outputSize
        let wantLogits = parameters.returnLogits ?? true, wantProbabilities = parameters.returnProbabilities ?? false
        // Every row's probabilities only when the answer carries them; otherwise one row's scratch.
        var probabilities = wantProbabilities ? [Float](repeating: 0, count: rowCount * classes) : []
        let (predictions, scores) = logits.withUnsafeBufferPointer { logits in
            guard wantProbabilities else {
                return topScores(logits: logits, rows: rowCount, classes: classes, k: parameters.topK ?? 3,
                                 labels: model.config.classLabels, probabilities: nil)
            }
            return probabilities.withUnsafeMutableBufferPointer {
                topScores(logits: logits, rows: rowCount, classes: classes, k: parameters.topK ?? 3, labels: model.config.classLabels,
                          probabilities: $0)
            }
        }
        let encoding: FloatMatrix.Encoding = parameters.outputFormat == .binary ? .float32Base64 : .numbers
        return Output(
            model: version.reference, sha256: version.sha256, precision: (precision ?? model.precision ?? .fp32).rawValue,
            rows: rowCount, predictions: predictions, scores: scores,
            logits: wantLogits ? FloatMatrix(rows: rowCount, columns: classes, values: logits, encoding: encoding) : nil,
            probabilities: wantProbabilities ? FloatMatrix(rows: rowCount, columns: classes, values: probabilities, encoding: encoding) : nil,
            batchRows: batchRows, batchRequests: batchRequests)
    }

    /// Seconds an `inference` job spends in the worker outside Redis, by phase: what `jobfarm bench codec` reports.
    public struct PhaseTimes: Sendable {
        /// Envelope text → payload → float32 rows.
        public var decode: Double
        /// The forward pass (one thread, no batching).
        public var forward: Double
        /// Softmax, top-k and the result's JSON text.
        public var encode: Double
        /// Bytes of the result's JSON text.
        public var resultBytes: Int
        /// The result's JSON text, as the worker hands it to the `complete` call.
        public var result: String
    }

    /// Runs the worker's path for one envelope on `model` without Redis or batching — decode, forward pass, encode —
    /// and times each phase (`jobfarm bench codec`, "inference in the worker").
    public static func timePhases(envelope: String, model: MLPModel, version: ModelVersion) throws -> PhaseTimes {
        let clock = ContinuousClock()
        let t0 = clock.now
        let job = try JobEnvelope(decoding: envelope)
        let parameters = try parse(InferencePayload.self, job.payload)
        guard parameters.width == model.inputSize else { throw JobError.nonRetryable("shape mismatch") }
        let rows = try inputRows(parameters.inputs)
        let t1 = clock.now
        let logits = try model.logits(rows: rows, batch: parameters.rows)
        let t2 = clock.now
        let output = Self.output(parameters, model: model, version: version, precision: nil, logits: logits,
                                 batchRows: parameters.rows, batchRequests: 1)
        let text = try JSONValueEncoder().encodeText(output)
        let t3 = clock.now
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
        return PhaseTimes(decode: seconds(t1 - t0), forward: seconds(t2 - t1), encode: seconds(t3 - t2), resultBytes: text.utf8.count, result: text)
    }

    /// The rows as float32, row-major: JSON numbers as read, a float32 tensor decoded straight into the buffer the
    /// forward pass reads, a float16 tensor decoded and widened in blocks (F16C where the CPU has it).
    static func inputRows(_ inputs: InferencePayload.Inputs) throws -> [Float] {
        switch inputs {
        case .values(let values):
            return values
        case .tensor(let tensor):
            var rows: [Float]
            do {
                switch tensor.dtype {
                case .float32:
                    rows = [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
                        initialized = tensor.count
                    }
                    try rows.withUnsafeMutableBytes { try tensor.decode(into: $0) }
                    #if _endian(big)
                    for i in rows.indices { rows[i] = Float(bitPattern: UInt32(littleEndian: rows[i].bitPattern)) }
                    #endif
                case .float16:
                    var halves = [Float16](unsafeUninitializedCapacity: tensor.count) { _, initialized in initialized = tensor.count }
                    try halves.withUnsafeMutableBytes { try tensor.decode(into: $0) }
                    #if _endian(big)
                    for i in halves.indices { halves[i] = Float16(bitPattern: UInt16(littleEndian: halves[i].bitPattern)) }
                    #endif
                    rows = [Float](repeating: 0, count: tensor.count)
                    try FP16Conversion.convert(halves, into: &rows)
                }
            } catch let problem as PayloadProblem {
                throw JobError.nonRetryable(PayloadError(kind: InferencePayload.kind, problems: [problem]).description)
            }
            if let problem = rows.withUnsafeBufferPointer({ InferencePayload.nonFinite(in: $0, width: tensor.width, pointer: tensor.pointer) }) {
                throw JobError.nonRetryable(PayloadError(kind: InferencePayload.kind, problems: [problem]).description)
            }
            return rows
        }
    }
}

/// Numerically stable softmax of one row into `out`.
func softmax(_ z: UnsafeBufferPointer<Float>, into out: UnsafeMutableBufferPointer<Float>) {
    let m = z.max() ?? 0
    var s: Float = 0
    for i in z.indices {
        out[i] = Foundation.exp(z[i] - m)
        s += out[i]
    }
    for i in out.indices { out[i] /= s }
}

/// Numerically stable softmax of one row.
func softmax(_ z: [Float]) -> [Float] {
    let m = z.max() ?? 0
    let e = z.map { Foundation.exp($0 - m) }
    let s = e.reduce(0, +)
    return e.map { $0 / s }
}
