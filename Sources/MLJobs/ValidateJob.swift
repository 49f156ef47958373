import Compute
import Foundation
import JobWorker
import ModelStore

/// `validate`: a candidate model against a reference model on a dataset, with thresholds → pass/fail,
/// and on pass optionally moves an alias to the candidate (promotion).
public struct ValidateJob: JobHandler {
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

    /// Payload.
    public struct Parameters: Decodable, Sendable {
        public var candidate: String
        /// Reference model (omit to check only accuracy and size).
        public var reference: String?
        /// `farm:NAME` or a path.
        public var dataset: String
        /// The class column; accuracy is reported when given.
        public var labelColumn: String?
        /// Evaluate only on this held-out split (the same as `train`'s `holdout`).
        public var holdout: Holdout?
        public var thresholds: Thresholds?
        public var promote: Promotion?
    }

    /// One threshold check.
    public struct Check: Encodable, Sendable {
        public var metric: String
        public var threshold: Double
        public var value: Double?
        public var passed: Bool
    }

    /// Result.
    public struct Output: Encodable, Sendable {
        public var candidate: String
        public var reference: String?
        public var rows: Int
        public var accuracy: Double?
        public var referenceAccuracy: Double?
        public var top1Agreement: Double?
        public var maxAbsDiff: Double?
        public var meanAbsDiff: Double?
        public var cosineSimilarity: Double?
        public var sizeRatio: Double?
        public var checks: [Check]
        public var passed: Bool
        /// Set when the alias was moved: `{alias, model, previous}`.
        public var promoted: [String: String]?
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public func run(_ parameters: Parameters, context: JobContext) async throws -> Output {
        let candidateVersion = try await classifying { try await environment.models.resolve(parameters.candidate) }
        var referenceVersion: ModelVersion?
        if let text = parameters.reference {
            referenceVersion = try await classifying { try await environment.models.resolve(text) }
        }
        let candidate = try await classifying { try await environment.model(candidateVersion, precision: nil) }
        var reference: MLPModel?
        if let version = referenceVersion {
            reference = try await classifying { try await environment.model(version, precision: nil) }
        }
        if let reference, reference.inputSize != candidate.inputSize || reference.outputSize != candidate.outputSize {
            throw JobError.nonRetryable("shape mismatch: candidate takes \(candidate.inputSize) → \(candidate.outputSize), reference \(reference.inputSize) → \(reference.outputSize)")
        }
        await context.progress(0.1)
        let table = try await environment.loadTable(parameters.dataset, labelColumn: parameters.labelColumn)
        var features = table.features
        var rows = table.rows
        var labels: [Int]?
        if table.labels != nil {
            let (train, test) = try await classifying { try table.split(parameters.holdout) }
            let evaluated = test ?? train
            features = evaluated.features
            rows = evaluated.count
            labels = evaluated.labels
        } else if parameters.holdout != nil {
            throw JobError.nonRetryable("holdout needs labels for its stratified split; give labelColumn")
        }
        guard table.columns == candidate.inputSize else {
            throw JobError.nonRetryable("shape mismatch: dataset \(parameters.dataset) has \(table.columns) feature columns, model \(candidateVersion.reference) takes \(candidate.inputSize)")
        }
        guard rows >= 1 else { throw JobError.nonRetryable("dataset \(parameters.dataset) has no rows to validate on") }
        await context.progress(0.3)
        let inputs = features, count = rows
        let candidateLogits = try await classifying {
            try await environment.executor.run { try candidate.logits(rows: inputs, batch: count) }
        }
        var referenceLogits: [Float]?
        if let model = reference {
            referenceLogits = try await classifying { try await environment.executor.run { try model.logits(rows: inputs, batch: count) } }
        }
        await context.progress(0.8)
        let classes = candidate.outputSize
        func argmax(_ z: [Float], _ r: Int) -> Int {
            var best = 0
            for j in 1..<max(1, classes) where z[r * classes + j] > z[r * classes + best] { best = j }
            return best
        }
        var output = Output(candidate: candidateVersion.reference, reference: referenceVersion?.reference, rows: rows,
                            checks: [], passed: true)
        if let labels {
            output.accuracy = Double((0..<rows).filter { argmax(candidateLogits, $0) == labels[$0] }.count) / Double(rows)
            if let referenceLogits {
                output.referenceAccuracy = Double((0..<rows).filter { argmax(referenceLogits, $0) == labels[$0] }.count) / Double(rows)
            }
        }
        if let referenceLogits, let reference {
            var agree = 0
            var maxDiff = 0.0, sumDiff = 0.0, cosineSum = 0.0
            for r in 0..<rows {
                if argmax(candidateLogits, r) == argmax(referenceLogits, r) { agree += 1 }
                let a = Array(candidateLogits[(r * classes)..<((r + 1) * classes)])
                let b = Array(referenceLogits[(r * classes)..<((r + 1) * classes)])
                let pa = softmax(a), pb = softmax(b)
                var dot = 0.0, na = 0.0, nb = 0.0
                for j in 0..<classes {
                    let d = Double(abs(pa[j] - pb[j]))
                    maxDiff = max(maxDiff, d)
                    sumDiff += d
                    dot += Double(a[j]) * Double(b[j])
                    na += Double(a[j]) * Double(a[j])
                    nb += Double(b[j]) * Double(b[j])
                }
                cosineSum += na > 0 && nb > 0 ? dot / (na.squareRoot() * nb.squareRoot()) : (na == nb ? 1 : 0)
            }
            output.top1Agreement = Double(agree) / Double(rows)
            output.maxAbsDiff = maxDiff
            output.meanAbsDiff = sumDiff / Double(rows * classes)
            output.cosineSimilarity = cosineSum / Double(rows)
            output.sizeRatio = Double(candidate.tensorByteCount) / Double(max(1, reference.tensorByteCount))
        }
        if let t = parameters.thresholds {
            func check(_ metric: String, _ threshold: Double?, _ value: Double?, atLeast: Bool) {
                guard let threshold else { return }
                let passed = value.map { atLeast ? $0 >= threshold : $0 <= threshold } ?? false
                output.checks.append(Check(metric: metric, threshold: threshold, value: value, passed: passed))
            }
            check("accuracy", t.minAccuracy, output.accuracy, atLeast: true)
            check("top1Agreement", t.minTop1Agreement, output.top1Agreement, atLeast: true)
            check("maxAbsDiff", t.maxAbsDiff, output.maxAbsDiff, atLeast: false)
            check("cosineSimilarity", t.minCosine, output.cosineSimilarity, atLeast: true)
            check("sizeRatio", t.maxSizeRatio, output.sizeRatio, atLeast: false)
            output.passed = output.checks.allSatisfy(\.passed)
        }
        if output.passed, let promote = parameters.promote {
            let previous = try await classifying {
                try await environment.models.setAlias(promote.alias, name: candidateVersion.name, version: candidateVersion.version)
            }
            environment.forgetResolutions()
            output.promoted = ["alias": "\(candidateVersion.name):\(promote.alias)", "model": candidateVersion.reference,
                               "previous": previous.map { "\(candidateVersion.name):\($0)" } ?? "none"]
        }
        await context.progress(1)
        return output
    }
}
