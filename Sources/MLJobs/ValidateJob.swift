import Compute
import Foundation
import JobPayloads
import JobProtocol
import JobWorker
import ModelStore

/// `validate`: a candidate model against a reference model on a dataset, with thresholds → pass/fail,
/// and on pass optionally moves an alias to the candidate (promotion).
public struct ValidateJob: JobHandler {
    public static let kind = "validate"

    /// Limits a candidate must meet; every one given is checked.
    public typealias Thresholds = ValidatePayload.Thresholds
    /// What to do on pass.
    public typealias Promotion = ValidatePayload.Promotion
    /// Payload: read and checked by `ValidatePayload` (the check the dispatcher runs too).
    public typealias Parameters = JSONValue

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
        /// Set when `fallbackReference` stood in for a reference that does not exist yet.
        public var note: String?
        /// The model `sizeRatio` was measured against (the reference unless `sizeReference` was given).
        public var sizeReference: String?
        /// Rows per block the dataset was read in, and the number of blocks.
        public var blockRows: Int
        public var blocks: Int
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public func run(_ payload: Parameters, context: JobContext) async throws -> Output {
        let parameters = try parse(ValidatePayload.self, payload)
        let candidateVersion = try await classifying { try await environment.models.resolve(parameters.candidate) }
        var referenceVersion: ModelVersion?
        var note: String?
        if let text = parameters.reference {
            do {
                referenceVersion = try await environment.models.resolve(text)
            } catch let error as ModelStoreError {
                guard case .notFound = error, let fallback = parameters.fallbackReference else { throw classify(error, "") }
                referenceVersion = try await classifying { try await environment.models.resolve(fallback) }
                note = "reference \(text) does not exist yet (\(error)); compared with \(referenceVersion!.reference) instead"
            } catch {
                throw classify(error, "")
            }
        }
        var sizeModel: MLPModel?
        if let text = parameters.sizeReference {
            let version = try await classifying { try await environment.models.resolve(text) }
            sizeModel = try await classifying { try await environment.model(version, precision: nil) }
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
        let data = try await environment.openBlocks(parameters.dataset, labelColumn: parameters.labelColumn,
                                                    blockRows: parameters.blockRows ?? 65_536)
        let hasLabels = data.labelColumn != nil
        if !hasLabels, parameters.holdout != nil {
            throw JobError.nonRetryable("holdout needs labels for its stratified split; give labelColumn")
        }
        let referenceModel = reference
        // Progress is reported after every block of each pass (and a cancelled job stops at the next block).
        let metrics = try await withComputeProgress(context) { relay in
            // A held-out split needs every label first (one pass reading labels; features are not kept).
            var selected: [Int]?
            if let holdout = parameters.holdout, holdout.fraction > 0 {
                let labelPass = relay.phase(from: 0.1, to: 0.3)
                selected = try await classifying {
                    try await environment.executor.run {
                        let labels = try data.readClasses(keepingFeaturesWithin: 0, progress: labelPass).classes
                        return try LabeledDataset.stratifiedIndices(labels: labels, testFraction: holdout.fraction, seed: holdout.seed ?? 0).test
                    }
                }
            }
            guard data.columns == candidate.inputSize else {
                throw JobError.nonRetryable("shape mismatch: dataset \(parameters.dataset) has \(data.columns) feature columns, model \(candidateVersion.reference) takes \(candidate.inputSize)")
            }
            try relay.report(0.3)
            let rowsToUse = selected, metricsPass = relay.phase(from: 0.3, to: 0.8)
            return try await classifying {
                try await environment.executor.run { () throws -> ValidationMetrics in
                    var metrics = ValidationMetrics(classes: candidate.outputSize)
                    var firstRow = 0
                    // Every row, or only the held-out ones. `firstRow` numbers rows in messages; with a holdout the
                    // labels were all checked in the first pass.
                    func add(_ x: [Float], _ y: [Float]?, _ count: Int) throws {
                        metrics.blocks += 1
                        let labels = hasLabels ? try data.classes(y, firstRow: firstRow) : nil
                        firstRow += count
                        guard count > 0 else { return }
                        let a = try candidate.logits(rows: x, batch: count)
                        let b = try referenceModel.map { try $0.logits(rows: x, batch: count) }
                        metrics.add(candidate: a, reference: b, labels: labels, rows: count)
                    }
                    if let rowsToUse {
                        try data.forEachBlock(selecting: rowsToUse, progress: metricsPass, add)
                    } else {
                        try data.forEachBlock(progress: metricsPass, add)
                    }
                    return metrics
                }
            }
        }
        let rows = metrics.rows
        guard rows >= 1 else { throw JobError.nonRetryable("dataset \(parameters.dataset) has no rows to validate on") }
        await context.progress(0.8)
        let classes = candidate.outputSize
        var output = Output(candidate: candidateVersion.reference, reference: referenceVersion?.reference, rows: rows,
                            checks: [], passed: true, blockRows: data.blockRows, blocks: metrics.blocks)
        if hasLabels {
            output.accuracy = Double(metrics.correct) / Double(rows)
            if reference != nil { output.referenceAccuracy = Double(metrics.referenceCorrect) / Double(rows) }
        }
        if let reference {
            output.top1Agreement = Double(metrics.agree) / Double(rows)
            output.maxAbsDiff = metrics.maxDiff
            output.meanAbsDiff = metrics.sumDiff / Double(rows * classes)
            output.cosineSimilarity = metrics.cosineSum / Double(rows)
            output.sizeRatio = Double(candidate.tensorByteCount) / Double(max(1, reference.tensorByteCount))
            output.sizeReference = referenceVersion?.reference
        }
        if let sizeModel {
            output.sizeRatio = Double(candidate.tensorByteCount) / Double(max(1, sizeModel.tensorByteCount))
            output.sizeReference = parameters.sizeReference
        }
        output.note = note
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
        if let referenceVersion, note == nil {
            // Kept for serving by precision (`name:latest@fp16`): a validation with no check to pass counts as failed.
            let passed = output.passed && !output.checks.isEmpty
            try await classifying {
                try await environment.models.recordValidation(of: candidateVersion, against: referenceVersion, passed: passed, job: context.id)
            }
            environment.forgetResolutions()
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

/// Validation metrics accumulated block by block: sums and counts, so that the result does not depend on the blocking.
struct ValidationMetrics: Sendable {
    let classes: Int
    var rows = 0
    /// Blocks read (including blocks with no held-out row).
    var blocks = 0
    var correct = 0, referenceCorrect = 0, agree = 0
    var maxDiff = 0.0, sumDiff = 0.0, cosineSum = 0.0

    init(classes: Int) { self.classes = classes }

    private func argmax(_ z: [Float], _ r: Int) -> Int {
        var best = 0
        for j in 1..<max(1, classes) where z[r * classes + j] > z[r * classes + best] { best = j }
        return best
    }

    /// Adds a block's logits (`rows × classes`) and labels.
    mutating func add(candidate: [Float], reference: [Float]?, labels: [Int]?, rows n: Int) {
        for r in 0..<n {
            let top = argmax(candidate, r)
            if let labels, top == labels[r] { correct += 1 }
            guard let reference else { continue }
            let refTop = argmax(reference, r)
            if let labels, refTop == labels[r] { referenceCorrect += 1 }
            if top == refTop { agree += 1 }
            let a = Array(candidate[(r * classes)..<((r + 1) * classes)])
            let b = Array(reference[(r * classes)..<((r + 1) * classes)])
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
        rows += n
    }
}
