import Foundation
import JobProtocol
import JobWorker
import ModelStore

/// `promote`: moves a model alias (e.g. `production`) to the smallest candidate that passed validation, with a
/// compare-and-set on the alias (a promotion racing another one fails and is retried rather than overwriting it);
/// the alias's previous target is kept for `jobfarm model rollback NAME`.
///
/// Payload: `name` (the model), `alias`, `candidates` (the results of `validate` jobs, as a pipeline passes them with
/// `${steps.<validate step>.result}`; a candidate that did not run is `null` and is left out), optional `run`.
public struct PromoteJob: JobHandler {
    public static let kind = "promote"
    public typealias Parameters = JSONValue

    /// One candidate as promotion saw it.
    public struct Candidate: Encodable, Sendable {
        public var model: String
        public var passed: Bool
        public var precision: String?
        public var tensorBytes: Int?
        public var note: String?
    }

    /// Result.
    public struct Output: Encodable, Sendable {
        /// `name:alias`.
        public var alias: String
        /// The version the alias points at now.
        public var model: String
        /// The version it pointed at before (`none` the first time).
        public var previous: String
        /// False when the smallest passing candidate was already the alias's target.
        public var changed: Bool
        public var precision: String
        public var tensorBytes: Int
        public var candidates: [Candidate]
        public var run: String?
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public func run(_ payload: Parameters, context: JobContext) async throws -> Output {
        guard case .object(let fields) = payload else { throw JobError.nonRetryable("promote: the payload must be an object with name, alias and candidates") }
        guard let name = fields["name"]?.stringValue, isValidRegistryName(name) else {
            throw JobError.nonRetryable("promote: `name` must be a model name (1–64 of A–Z a–z 0–9 _ - .)")
        }
        guard let alias = fields["alias"]?.stringValue, isValidRegistryName(alias), Int(alias) == nil, alias != "latest" else {
            throw JobError.nonRetryable("promote: `alias` must be 1–64 of A–Z a–z 0–9 _ - ., not a number and not 'latest'")
        }
        guard case .array(let given)? = fields["candidates"] else {
            throw JobError.nonRetryable("promote: `candidates` must be a list of validate results")
        }
        var seen: [Candidate] = []
        var best: (version: ModelVersion, candidate: Candidate)?
        for entry in given {
            // A validation that did not run or did not succeed gives null.
            guard case .object(let result) = entry, let model = result["candidate"]?.stringValue else { continue }
            let passed = result["passed"] == .bool(true)
            var candidate = Candidate(model: model, passed: passed)
            if passed {
                let version = try await classifying { try await environment.models.resolve(model) }
                guard version.name == name else {
                    throw JobError.nonRetryable("promote: candidate \(model) is not a version of \(name)")
                }
                candidate.precision = version.precision
                candidate.tensorBytes = version.tensorBytes
                if best == nil || version.tensorBytes < best!.version.tensorBytes { best = (version, candidate) }
            } else {
                candidate.note = "did not pass validation"
            }
            seen.append(candidate)
        }
        guard let (chosen, _) = best else {
            let current = try await classifying { try await environment.models.aliases(name)[alias] }
            throw JobError.nonRetryable("promote: no candidate passed validation (\(seen.map(\.model).joined(separator: ", ")))"
                + "; \(name):\(alias) stays at \(current.map { "\(name):\($0)" } ?? "nothing")")
        }
        let current = try await classifying { try await environment.models.aliases(name)[alias] }
        let (moved, now) = try await classifying {
            try await environment.models.switchAlias(alias, name: name, expected: current, to: chosen.version)
        }
        guard moved else {
            // Another promotion moved it between the read and the switch: this attempt is retried from the start.
            throw JobError.retryable("promote: \(name):\(alias) moved to \(now.map { "\(name):\($0)" } ?? "nothing") while this promotion ran; trying again")
        }
        environment.forgetResolutions()
        await context.progress(1)
        return Output(alias: "\(name):\(alias)", model: chosen.reference,
                      previous: current.map { "\(name):\($0)" } ?? "none", changed: current != chosen.version,
                      precision: chosen.precision, tensorBytes: chosen.tensorBytes, candidates: seen,
                      run: fields["run"]?.stringValue)
    }
}
