import Foundation
import RedisClient

/// The outcome of a `validate` job, kept per candidate version (the latest validation of a version replaces the one
/// before): what serving a compressed version by its precision checks (`ModelRegistry.resolveForServing`).
public struct ModelValidation: Sendable, Codable, Equatable {
    /// The validated version, `name:version`.
    public var candidate: String
    /// The version it was compared with, `name:version`.
    public var reference: String
    /// The reference's precision (`fp32`, …).
    public var referencePrecision: String
    /// Whether every check of the job passed.
    public var passed: Bool
    /// The `validate` job's id.
    public var job: String
    /// Milliseconds since 1970.
    public var at: Int64

    public init(candidate: String, reference: String, referencePrecision: String, passed: Bool, job: String, at: Int64) {
        self.candidate = candidate
        self.reference = reference
        self.referencePrecision = referencePrecision
        self.passed = passed
        self.job = job
        self.at = at
    }
}

extension ModelRegistry {
    /// `jf:models:<name>:validations` HASH version → `ModelValidation` JSON.
    func validationsKey(_ name: String) -> String { "\(namespace):models:\(name):validations" }

    /// Records a validation of `candidate` against `reference` (one `HSET`).
    public func recordValidation(of candidate: ModelVersion, against reference: ModelVersion, passed: Bool, job: String) async throws {
        let record = ModelValidation(candidate: candidate.reference, reference: reference.reference, referencePrecision: reference.precision,
                                     passed: passed, job: job, at: nowMilliseconds())
        let json = String(decoding: try JSONEncoder().encode(record), as: UTF8.self)
        let reply = try await client.execute(RedisCommand("HSET", validationsKey(candidate.name), String(candidate.version), json))
        if let message = reply.errorMessage { throw RedisError(reply: message, context: "model validation record") }
    }

    /// The latest validation of a version, if any.
    public func validation(of version: ModelVersion) async throws -> ModelValidation? {
        let reply = try await client.execute(RedisCommand("HGET", validationsKey(version.name), String(version.version)))
        guard let bytes = reply.bytes else { return nil }
        return try? JSONDecoder().decode(ModelValidation.self, from: Data(bytes))
    }

    /// Whether `version` may be served by its precision: its latest validation passed against the FP32 version it
    /// was derived from (`metadata["source"]`, written by `quantize`).
    public func servable(_ version: ModelVersion, validation: ModelValidation?) -> Bool {
        guard let source = version.metadata["source"], let validation else { return false }
        return validation.passed && validation.reference == source && validation.referencePrecision == "fp32"
    }

    /// Resolves a reference for an inference request. As `resolve`, except that a precision asked for by name
    /// (`name:latest@fp16`, `name:latest@int8`) selects the highest version in that precision whose `validate`
    /// against its FP32 source passed, and is refused, saying which job to run, when there is none. Versions and
    /// aliases select the version they name, as everywhere.
    public func resolveForServing(_ reference: ModelReference) async throws -> ModelVersion {
        guard reference.selector == .latest, let precision = reference.precision, precision != "fp32" else {
            return try await resolve(reference)
        }
        let candidates = try await versions(reference.name).filter { $0.precision == precision }
        guard !candidates.isEmpty else { return try await resolve(reference) }  // its "has no … version" error
        var refused: [String] = []
        for candidate in candidates.reversed() {
            let validation = try await validation(of: candidate)
            if servable(candidate, validation: validation) { return candidate }
            let why: String
            if let source = candidate.metadata["source"] {
                if let validation {
                    why = validation.reference == source ? "failed validation against \(source) (job \(validation.job))"
                        : "validated against \(validation.reference), not its source \(source)"
                } else {
                    why = "not validated against its source \(source)"
                }
            } else {
                why = "no FP32 source recorded (pushed, not made by quantize)"
            }
            refused.append("\(candidate.reference) \(why)")
        }
        let example = candidates.last!
        let sourceHint = example.metadata["source"].map { " and reference \($0)" } ?? " and reference its FP32 source"
        throw ModelStoreError.notFound(
            "model '\(reference.name)' has no \(precision) version validated against its FP32 source (\(refused.joined(separator: "; "))): "
                + "run a validate job with candidate \(example.reference)\(sourceHint) that passes, or name a version (\(example.reference)) to run it unvalidated")
    }
}
