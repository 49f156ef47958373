import Compute
import Foundation
import Synchronization
import JobQueue
import JobWorker
import ModelStore

/// `train`: an MLP classifier on a labelled dataset → a new model version in the registry.
public struct TrainJob: JobHandler {
    public static let kind = "train"

    /// Payload. Defaults are the recipe that scores 97.3–98.9 % held-out on digits over 30 seeds.
    public struct Parameters: Decodable, Sendable {
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
    }

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
    }

    let environment: MLEnvironment

    public init(environment: MLEnvironment) { self.environment = environment }

    public var retryPolicy: RetryPolicy { .exponentialJitter(base: .seconds(5), cap: .seconds(120), maxAttempts: 3) }

    public func run(_ parameters: Parameters, context: JobContext) async throws -> Output {
        guard isValidRegistryName(parameters.name) else {
            throw JobError.nonRetryable("model name '\(parameters.name)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        let config = try trainingConfig(parameters)
        let labelColumn = parameters.labelColumn ?? "target"
        await context.progress(0.01)
        let table = try await environment.loadTable(parameters.dataset, labelColumn: labelColumn)
        let (train, holdout) = try await classifying { try table.split(parameters.holdout) }
        var validation: LabeledDataset?
        if let reference = parameters.validationDataset {
            validation = try await classifying { try await environment.loadTable(reference, labelColumn: labelColumn).labeled() }
        }
        await context.progress(0.05)
        let (stream, continuation) = AsyncStream<Double>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let reporter = Task {
            for await fraction in stream { await context.progress(fraction) }
        }
        let maxEpochs = Double(config.maxEpochs)
        let start = ContinuousClock.now
        let result: TrainingResult
        // The epochs run on a compute thread, outside this task: a cancel or a timeout reaches them through this
        // flag, checked after every epoch, so the thread is freed instead of training on for nothing.
        let stop = Mutex(false)
        do {
            result = try await withTaskCancellationHandler {
                try await classifying {
                    try await environment.executor.run { [validation] in
                        try MLPTrainer.train(train, validation: validation, config: config) { epoch in
                            if stop.withLock({ $0 }) { throw CancellationError() }
                            continuation.yield(0.05 + 0.85 * Double(epoch.epoch) / maxEpochs)
                        }
                    }
                }
            } onCancel: {
                stop.withLock { $0 = true }
            }
        } catch {
            continuation.finish()
            await reporter.value
            throw error
        }
        continuation.finish()
        await reporter.value
        let seconds = (ContinuousClock.now - start).seconds
        var holdoutAccuracy: Double?
        if let holdout {
            let model = result.model
            let predicted = try await classifying {
                try await environment.executor.run { try model.predict(rows: holdout.features, batch: holdout.count) }
            }
            holdoutAccuracy = Double(zip(predicted, holdout.labels).filter { $0 == $1 }.count) / Double(holdout.count)
        }
        var metadata = ["job": context.id, "kind": Self.kind, "dataset": parameters.dataset,
                        "train_rows": String(train.count), "epochs": String(result.history.count)]
        if let holdoutAccuracy { metadata["holdout_accuracy"] = String(format: "%.4f", holdoutAccuracy) }
        if let h = parameters.holdout { metadata["holdout"] = "fraction=\(h.fraction) seed=\(h.seed ?? 0)" }
        let model = result.model
        let stored = try await classifying {
            try await environment.models.push(model: model, name: parameters.name, metadata: metadata)
        }
        if let alias = parameters.alias {
            _ = try await classifying { try await environment.models.setAlias(alias, name: parameters.name, version: stored.version) }
        }
        await context.progress(1)
        return Output(
            model: stored.reference, version: stored.version, sha256: stored.sha256, trainRows: train.count,
            features: train.featureCount, classes: model.outputSize, epochs: result.history.count,
            bestEpoch: result.bestEpoch, stoppedEarly: result.stoppedEarly, finalLoss: result.history.last?.loss ?? 0,
            validationAccuracy: result.history.last?.valAccuracy, holdoutAccuracy: holdoutAccuracy,
            holdoutRows: holdout?.count, seconds: seconds,
            history: result.history.suffix(20).map { Epoch(epoch: $0.epoch, loss: $0.loss, validationAccuracy: $0.valAccuracy) })
    }

    private func trainingConfig(_ p: Parameters) throws -> TrainingConfig {
        var config = TrainingConfig()
        config.hiddenSizes = p.hiddenSizes ?? [128]
        if let text = p.activation {
            guard let activation = Activation(rawValue: text.lowercased()), [.relu, .gelu, .tanh, .sigmoid].contains(activation) else {
                throw JobError.nonRetryable("activation '\(text)' is not relu, gelu, tanh or sigmoid")
            }
            config.activation = activation
        }
        switch (p.optimizer ?? "adam").lowercased() {
        case "adam": config.optimizer = .adamDefault
        case "sgd": config.optimizer = .sgd(momentum: p.momentum ?? 0.9)
        default: throw JobError.nonRetryable("optimizer '\(p.optimizer ?? "")' is not adam or sgd")
        }
        config.learningRate = p.learningRate ?? 3e-3
        config.l2 = p.l2 ?? 1e-4
        config.batchSize = p.batchSize ?? 64
        config.maxEpochs = p.epochs ?? 60
        config.seed = p.seed ?? 1
        config.validationFraction = p.validationDataset == nil ? (p.validationFraction ?? 0) : 0
        config.earlyStoppingPatience = p.earlyStoppingPatience ?? 10
        config.standardize = p.standardize ?? true
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
