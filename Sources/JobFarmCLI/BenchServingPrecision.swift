import ArgumentParser
import Compute
import Foundation
import JobProtocol
import JobWorker
import Logging
import MLJobs
import ModelStore

/// The FP16 and int8 versions of `bench blas`'s queue model, made and validated the way a user makes them: a
/// `quantize` job stores the version, a `validate` job compares it with its FP32 source on a labelled data set and
/// the registry records the outcome, after which `bench-mlp:latest@fp16` (or `@int8`) resolves to it.
enum BenchServingPrecision {
    /// Runs the `quantize` and `validate` handlers on `environment` for the FP32 version just pushed as `bench-mlp`.
    /// Returns a line for the output; throws when the validation did not pass (the version would not be served).
    static func quantizeAndValidate(environment: MLEnvironment, model: MLPModel, precision: Precision) async throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // 256 rows, labelled by the FP32 model itself: the validation checks top-1 agreement with the source.
        var rng = SeededRandom(seed: 6)
        let rows = 256
        let x = (0..<(rows * model.inputSize)).map { _ in rng.nextUnitFloat() }
        let labels = try model.predict(rows: x, batch: rows)
        var text = (0..<model.inputSize).map { "f\($0)" }.joined(separator: ",") + ",label\n"
        for r in 0..<rows {
            text += x[(r * model.inputSize)..<((r + 1) * model.inputSize)].map { String($0) }.joined(separator: ",") + ",\(labels[r])\n"
        }
        let dataset = directory.appendingPathComponent("bench-validate.csv").path
        try text.write(toFile: dataset, atomically: true, encoding: .utf8)

        let source = try await environment.models.latest("bench-mlp", precision: "fp32")
        let quantized = try await QuantizeJob(environment: environment).run(
            try JSONValue(parsing: #"{"model": "\#(source.reference)", "precision": "\#(precision.rawValue)"}"#), context: context("quantize"))
        let candidate = quantized.model  // `name:version`
        let validated = try await ValidateJob(environment: environment).run(try JSONValue(parsing: """
            {"candidate": "\(candidate)", "reference": "\(source.reference)", "dataset": "\(dataset)", "labelColumn": "label",
             "thresholds": {"minTop1Agreement": 0.95}}
            """), context: context("validate"))
        guard validated.passed else {
            throw ValidationError("the \(precision.rawValue) version \(candidate) failed its validation against \(source.reference) (top-1 agreement \(validated.top1Agreement ?? 0)); it is not served")
        }
        return String(format: "%@ made by a quantize job and validated against %@ by a validate job (top-1 agreement %.3f on %d rows, minimum 0.95): served as bench-mlp:latest@%@",
                      candidate, source.reference, validated.top1Agreement ?? 0, rows, precision.rawValue)
    }

    static func context(_ kind: String) -> JobContext {
        JobContext(id: "bench-\(kind)-\(UUID().uuidString.prefix(8))", kind: kind, queue: "bench", tier: "standard", attempt: 1, maxAttempts: 1,
                   deadline: .now + .seconds(600), trace: [:], logger: Logger(label: "bench.\(kind)"))
    }
}
