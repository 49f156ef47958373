import Compute
import Foundation
import JobPayloads
import JobProtocol
import JobWorker
import ModelStore

/// `quantize`: a stored model → a new FP16 or per-channel int8 version (optionally magnitude-pruned).
public struct QuantizeJob: JobHandler {
    public static let kind = "quantize"

    /// Payload: read and checked by `QuantizePayload` (the check the dispatcher runs too).
    public typealias Parameters = JSONValue

    /// One tensor's figures.
    public struct TensorReport: Encodable, Sendable {
        public var name: String
        public var dtype: String
        public var bytesBefore: Int
        public var bytesAfter: Int
        public var maxAbsError: Float
        public var meanAbsError: Float
        public var sparsity: Double
    }

    /// Result.
    public struct Output: Encodable, Sendable {
        public var source: String
        public var model: String
        public var version: Int
        public var sha256: String
        public var precision: String
        /// Tensor bytes (weights, biases, int8 scales; headers aside) before and after, and their ratio.
        public var tensorBytesBefore: Int
        public var tensorBytesAfter: Int
        public var sizeRatio: Double
        /// Safetensors file bytes before and after (headers included).
        public var fileBytesBefore: Int
        public var fileBytesAfter: Int
        public var tensors: [TensorReport]
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public func run(_ payload: Parameters, context: JobContext) async throws -> Output {
        let parameters = try parse(QuantizePayload.self, payload)
        guard let precision = Precision(rawValue: parameters.precision.lowercased()) else {
            throw JobError.nonRetryable("precision '\(parameters.precision)' is not fp16, int8 or fp32")
        }
        if let s = parameters.pruneSparsity, !(s >= 0 && s < 1) {
            throw JobError.nonRetryable("pruneSparsity must be in [0, 1) (got \(s))")
        }
        if let name = parameters.name, !isValidRegistryName(name) {
            throw JobError.nonRetryable("model name '\(name)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        let source = try await classifying { try await environment.models.resolve(parameters.model) }
        await context.progress(0.1)
        let model = try await classifying { try await environment.model(source, precision: nil) }
        await context.progress(0.3)
        let (converted, report) = try await classifying {
            try await environment.executor.run { try Quantization.convert(model, to: precision, pruneSparsity: parameters.pruneSparsity) }
        }
        await context.progress(0.7)
        var metadata = ["source": source.reference, "source_sha256": source.sha256, "job": context.id, "kind": Self.kind]
        if let s = parameters.pruneSparsity { metadata["prune_sparsity"] = String(s) }
        let name = parameters.name ?? source.name
        let stored = try await classifying { try await environment.models.push(model: converted, name: name, metadata: metadata) }
        if let alias = parameters.alias {
            _ = try await classifying { try await environment.models.setAlias(alias, name: name, version: stored.version) }
        }
        await context.progress(1)
        return Output(
            source: source.reference, model: stored.reference, version: stored.version, sha256: stored.sha256,
            precision: precision.rawValue, tensorBytesBefore: report.bytesBefore, tensorBytesAfter: report.bytesAfter,
            sizeRatio: report.sizeRatio, fileBytesBefore: source.bytes, fileBytesAfter: stored.bytes,
            tensors: report.tensors.map {
                TensorReport(name: $0.name, dtype: $0.dtype.rawValue, bytesBefore: $0.bytesBefore, bytesAfter: $0.bytesAfter,
                             maxAbsError: $0.maxAbsError, meanAbsError: $0.meanAbsError, sparsity: $0.sparsity)
            })
    }
}
