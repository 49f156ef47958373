import Compute
import Foundation
import JobPayloads
import JobProtocol
import Synchronization
import JobQueue
import JobWorker
import ModelStore

/// `train`: an MLP classifier on a labelled dataset → a new model version in the registry.
public struct TrainJob: JobHandler {
    public static let kind = "train"

    /// Payload: read and checked by `TrainPayload` (the check the dispatcher runs too).
    public typealias Parameters = JSONValue

    /// One epoch.
    public struct Epoch: Encodable, Sendable {
        public var epoch: Int
        public var loss: Float
        public var validationAccuracy: Float?
    }

    /// Result.
    public struct Output: Encodable, Sendable {
        public var model: String
        public var version: Int
        public var sha256: String
        public var trainRows: Int
        public var features: Int
        public var classes: Int
        public var epochs: Int
        public var bestEpoch: Int
        public var stoppedEarly: Bool
        public var finalLoss: Float
        public var validationAccuracy: Float?
        /// Accuracy on the `holdout` rows (not seen in training).
        public var holdoutAccuracy: Double?
        public var holdoutRows: Int?
        public var seconds: Double
        /// The last 20 epochs (the whole history is short but bounded here).
        public var history: [Epoch]
        /// Whether the dataset was larger than `memoryBudgetBytes` and streamed from its file every epoch.
        public var streamed: Bool
        /// Rows per block read, when streamed (shuffling was within blocks of this many rows).
        public var blockRows: Int?
    }

    /// What either training path hands back.
    private struct Trained: Sendable {
        var result: TrainingResult
        var trainRows: Int
        var holdoutAccuracy: Double?
        var holdoutRows: Int?
        var seconds: Double
        var streamed: Bool
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public var retryPolicy: RetryPolicy { .exponentialJitter(base: .seconds(5), cap: .seconds(120), maxAttempts: 3) }

    public func run(_ payload: Parameters, context: JobContext) async throws -> Output {
        let parameters = try parse(TrainPayload.self, payload)
        guard isValidRegistryName(parameters.name) else {
            throw JobError.nonRetryable("model name '\(parameters.name)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        let config = try trainingConfig(parameters)
        let labelColumn = parameters.labelColumn ?? "target"
        let budget = parameters.memoryBudgetBytes ?? (256 << 20)
        guard budget >= 0 else { throw JobError.nonRetryable("memoryBudgetBytes must be >= 0 (got \(budget))") }
        await context.progress(0.01)
        let data = try await environment.openBlocks(parameters.dataset, labelColumn: labelColumn,
                                                    blockRows: parameters.blockRows ?? 65_536)
        let trained = try await withComputeProgress(context) { relay in
            // One pass: every label (checked), and the features while they fit the budget.
            let labelPass = relay.phase(from: 0.01, to: 0.05)
            let first = try await classifying {
                try await environment.executor.run { try data.readClasses(keepingFeaturesWithin: budget, progress: labelPass) }
            }
            try relay.report(0.05)
            if let features = first.features {
                return try await trainInMemory(data, features: features, classes: first.classes, parameters: parameters,
                                               config: config, relay: relay)
            }
            return try await trainStreaming(data, classes: first.classes, parameters: parameters, config: config,
                                            budget: budget, relay: relay)
        }
        let result = trained.result
        var metadata = ["job": context.id, "kind": Self.kind, "dataset": parameters.dataset,
                        "train_rows": String(trained.trainRows), "epochs": String(result.history.count)]
        if let accuracy = trained.holdoutAccuracy { metadata["holdout_accuracy"] = String(format: "%.4f", accuracy) }
        if let h = parameters.holdout { metadata["holdout"] = "fraction=\(h.fraction) seed=\(h.seed ?? 0)" }
        let streamed = trained.streamed
        if streamed { metadata["streamed"] = "blockRows=\(data.blockRows)" }
        let model = result.model
        let stored = try await classifying {
            try await environment.models.push(model: model, name: parameters.name, metadata: metadata)
        }
        if let alias = parameters.alias {
            _ = try await classifying { try await environment.models.setAlias(alias, name: parameters.name, version: stored.version) }
        }
        await context.progress(1)
        return Output(
            model: stored.reference, version: stored.version, sha256: stored.sha256, trainRows: trained.trainRows,
            features: data.columns, classes: model.outputSize, epochs: result.history.count,
            bestEpoch: result.bestEpoch, stoppedEarly: result.stoppedEarly, finalLoss: result.history.last?.loss ?? 0,
            validationAccuracy: result.history.last?.valAccuracy, holdoutAccuracy: trained.holdoutAccuracy,
            holdoutRows: trained.holdoutRows, seconds: trained.seconds,
            history: result.history.suffix(20).map { Epoch(epoch: $0.epoch, loss: $0.loss, validationAccuracy: $0.valAccuracy) },
            streamed: streamed, blockRows: streamed ? data.blockRows : nil)
    }

    /// The whole dataset fits the budget: the in-memory trainer on a `LabeledDataset`, as before streaming existed.
    private func trainInMemory(_ data: BlockedDataset, features: [Float], classes: [Int32], parameters: TrainPayload,
                               config: TrainingConfig, relay: ComputeProgress) async throws -> Trained {
        let all = try await classifying {
            try LabeledDataset(features: features, labels: classes.map(Int.init), featureCount: data.columns, featureNames: data.names)
        }
        let (train, holdout) = try await classifying { try all.holdoutSplit(parameters.holdout) }
        var validation: LabeledDataset?
        if let reference = parameters.validationDataset {
            let labelColumn = data.labelColumn
            validation = try await classifying { try await environment.loadTable(reference, labelColumn: labelColumn).labeled() }
        }
        let maxEpochs = Double(config.maxEpochs)
        let start = ContinuousClock.now
        // The epochs run on a compute thread, outside this task: a cancel or a timeout reaches them through the
        // relay, checked after every epoch, so the thread is freed instead of training on for nothing.
        let result = try await classifying {
            try await environment.executor.run { [validation] in
                try MLPTrainer.train(train, validation: validation, config: config) { epoch in
                    try relay.report(0.05 + 0.85 * Double(epoch.epoch) / maxEpochs)
                }
            }
        }
        let seconds = (ContinuousClock.now - start).seconds
        var holdoutAccuracy: Double?
        if let holdout {
            let model = result.model
            let predicted = try await classifying {
                try await environment.executor.run { try model.predict(rows: holdout.features, batch: holdout.count) }
            }
            holdoutAccuracy = Double(zip(predicted, holdout.labels).filter { $0 == $1 }.count) / Double(holdout.count)
        }
        return Trained(result: result, trainRows: train.count, holdoutAccuracy: holdoutAccuracy, holdoutRows: holdout?.count,
                       seconds: seconds, streamed: false)
    }

    /// The dataset is larger than the budget: only its labels are held (4 bytes a row); the held-out rows are drawn
    /// from them with the same stratified split as in memory (so `validate` with the same `holdout` sees the same
    /// rows), and every epoch reads the file again, block by block (`MLPTrainer.train(streaming:…)`).
    private func trainStreaming(_ data: BlockedDataset, classes: [Int32], parameters: TrainPayload, config: TrainingConfig,
                                budget: Int, relay: ComputeProgress) async throws -> Trained {
        var excluded: [Bool]?
        var heldOut: [Int]?
        if let holdout = parameters.holdout, holdout.fraction > 0 {
            let test = try await classifying {
                try LabeledDataset.stratifiedIndices(labels: classes, testFraction: holdout.fraction, seed: holdout.seed ?? 0).test
            }
            var mask = [Bool](repeating: false, count: classes.count)
            for row in test { mask[row] = true }
            excluded = mask
            heldOut = test
        }
        let source = RowBlockSource(featureCount: data.columns, labels: classes) { body in
            try data.forEachBlock { features, _, rows in try body(features, rows) }
        }
        // A separate validation set: its labels now; the trainer keeps its features in memory if they fit the
        // budget (read once), else reads it every epoch.
        var validation: RowBlockSource?
        if let reference = parameters.validationDataset {
            let other = try await environment.openBlocks(reference, labelColumn: data.labelColumn, blockRows: data.blockRows)
            let labels = try await classifying {
                try await environment.executor.run { try other.readClasses(keepingFeaturesWithin: 0).classes }
            }
            validation = RowBlockSource(featureCount: other.columns, labels: labels) { body in
                try other.forEachBlock { features, _, rows in try body(features, rows) }
            }
        }
        let maxEpochs = Double(config.maxEpochs)
        let training = relay.phase(from: 0.05, to: 0.9)
        let start = ContinuousClock.now
        let result = try await classifying {
            try await environment.executor.run { [validation, excluded] in
                try MLPTrainer.train(streaming: source, excluding: excluded, validation: validation, memoryBudgetBytes: budget,
                                     config: config) { epoch in
                    try training(Double(epoch.epoch) / maxEpochs)
                } blockProgress: { fraction in
                    try training(fraction)
                }
            }
        }
        let seconds = (ContinuousClock.now - start).seconds
        var holdoutAccuracy: Double?
        if let heldOut, !heldOut.isEmpty {
            let model = result.model, holdoutPass = relay.phase(from: 0.9, to: 0.95)
            let correct = try await classifying {
                try await environment.executor.run { () throws -> Int in
                    var correct = 0, seen = 0
                    try data.forEachBlock(selecting: heldOut, progress: holdoutPass) { features, labels, rows in
                        guard rows > 0 else { return }
                        let predicted = try model.predict(rows: features, batch: rows)
                        let truth = try data.classes(labels, firstRow: seen)
                        correct += zip(predicted, truth).filter { $0 == $1 }.count
                        seen += rows
                    }
                    return correct
                }
            }
            holdoutAccuracy = Double(correct) / Double(heldOut.count)
        }
        return Trained(result: result, trainRows: classes.count - (heldOut?.count ?? 0), holdoutAccuracy: holdoutAccuracy,
                       holdoutRows: heldOut?.count, seconds: seconds, streamed: true)
    }

    private func trainingConfig(_ p: TrainPayload) throws -> TrainingConfig {
        let defaults = TrainingConfig.trainJobDefault
        var config = defaults
        config.hiddenSizes = p.hiddenSizes ?? defaults.hiddenSizes
        if let text = p.activation {
            guard let activation = Activation(rawValue: text.lowercased()), [.relu, .gelu, .tanh, .sigmoid].contains(activation) else {
                throw JobError.nonRetryable("activation '\(text)' is not relu, gelu, tanh or sigmoid")
            }
            config.activation = activation
        }
        switch p.optimizer?.lowercased() {
        case nil: break  // the default's Adam
        case "adam": config.optimizer = .adamDefault
        case "sgd": config.optimizer = .sgd(momentum: p.momentum ?? 0.9)
        default: throw JobError.nonRetryable("optimizer '\(p.optimizer ?? "")' is not adam or sgd")
        }
        config.learningRate = p.learningRate ?? defaults.learningRate
        config.l2 = p.l2 ?? defaults.l2
        config.batchSize = p.batchSize ?? defaults.batchSize
        config.maxEpochs = p.epochs ?? defaults.maxEpochs
        config.seed = p.seed ?? defaults.seed
        config.validationFraction = p.validationDataset == nil ? (p.validationFraction ?? defaults.validationFraction) : 0
        config.earlyStoppingPatience = p.earlyStoppingPatience ?? defaults.earlyStoppingPatience
        config.standardize = p.standardize ?? defaults.standardize
        config.classLabels = p.classLabels
        guard config.maxEpochs >= 1, config.maxEpochs <= 100_000 else { throw JobError.nonRetryable("epochs must be 1…100000") }
        guard config.batchSize >= 1 else { throw JobError.nonRetryable("batchSize must be at least 1") }
        guard config.hiddenSizes.allSatisfy({ $0 >= 1 && $0 <= 65_536 }) else {
            throw JobError.nonRetryable("hiddenSizes must each be 1…65536 (got \(config.hiddenSizes))")
        }
        if let h = p.holdout, !(h.fraction > 0 && h.fraction < 1) {
            throw JobError.nonRetryable("holdout.fraction must be between 0 and 1 (got \(h.fraction))")
        }
        return config
    }
}
