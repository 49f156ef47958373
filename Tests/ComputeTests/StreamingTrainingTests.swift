import Foundation
import Synchronization
import Testing
@testable import Compute

/// `MLPTrainer.train(streaming:…)`: rows read block by block, labels known up front.
@Suite struct StreamingTrainingTests {
    /// Digits, its stratified 25 % holdout (seed 0) as row flags, and a small, quick recipe.
    func digitsSetup() throws -> (digits: LabeledDataset, excluded: [Bool], train: LabeledDataset, test: LabeledDataset, config: TrainingConfig) {
        let digits = try digitsDataset(from: Fixtures.digitsCSV)
        let split = try LabeledDataset.stratifiedIndices(labels: digits.labels, testFraction: 0.25, seed: 0)
        var excluded = [Bool](repeating: false, count: digits.count)
        for row in split.test { excluded[row] = true }
        var config = TrainingConfig()
        config.hiddenSizes = [32]
        config.seed = 1
        config.maxEpochs = 6
        config.batchSize = 64
        config.learningRate = 3e-3
        config.validationFraction = 0.1
        config.earlyStoppingPatience = 3
        return (digits, excluded, digits.subset(split.train), digits.subset(split.test), config)
    }

    func accuracy(_ model: MLPModel, _ data: LabeledDataset) throws -> Double {
        let predicted = try model.predict(rows: data.features, batch: data.count)
        return Double(zip(predicted, data.labels).filter { $0 == $1 }.count) / Double(data.count)
    }

    @Test("one block, holdout rows excluded: the first epoch is exactly the in-memory trainer's on the training split")
    func oneBlockEqualsInMemory() throws {
        // Same split, standardisation, validation rows, initialisation, shuffle and mini-batches. (Later epochs differ
        // by their shuffle alone: the in-memory trainer reshuffles the previous epoch's order, the streaming one
        // shuffles each block's rows afresh.)
        let (digits, excluded, train, test, recipe) = try digitsSetup()
        var config = recipe
        config.maxEpochs = 1
        let inMemory = try MLPTrainer.train(train, config: config)
        let source = try RowBlockSource(digits, blockRows: digits.count)
        for budget in [1 << 30, 0] {
            let streamed = try MLPTrainer.train(streaming: source, excluding: excluded, memoryBudgetBytes: budget, config: config)
            #expect(streamed.history == inMemory.history, "budget \(budget)")
            #expect(try streamed.model.logits(rows: test.features, batch: test.count) == inMemory.model.logits(rows: test.features, batch: test.count))
            #expect(streamed.model.inputMean == inMemory.model.inputMean && streamed.model.inputStd == inMemory.model.inputStd)
        }
        // A separate validation set, kept in memory or streamed in blocks of 100, gives the same accuracy and loss.
        config.validationFraction = 0
        config.maxEpochs = 3
        let (fit, val) = try train.stratifiedSplit(testFraction: 0.2, seed: 5)
        let reference = try MLPTrainer.train(fit, validation: val, config: config)
        for budget in [1 << 30, 0] {
            let streamed = try MLPTrainer.train(streaming: try RowBlockSource(fit, blockRows: fit.count),
                                                validation: try RowBlockSource(val, blockRows: 100), memoryBudgetBytes: budget, config: config)
            #expect(streamed.history.first == reference.history.first, "budget \(budget)")
            #expect(streamed.history.count == 3 && streamed.history.allSatisfy { ($0.valAccuracy ?? 0) > 0.5 })
        }
    }

    @Test("many blocks: shuffled within blocks, learns digits, reproducible; block progress rises to 1")
    func manyBlocks() throws {
        let (digits, excluded, _, test, config) = try digitsSetup()
        let source = try RowBlockSource(digits, blockRows: 50)
        var fractions: [Double] = []
        var config1 = config
        config1.earlyStoppingPatience = nil
        let a = try MLPTrainer.train(streaming: source, excluding: excluded, memoryBudgetBytes: 1 << 30, config: config1) { _ in
        } blockProgress: { fractions.append($0) }
        let b = try MLPTrainer.train(streaming: source, excluding: excluded, memoryBudgetBytes: 1 << 30, config: config1)
        #expect(a.history == b.history, "same seed, same blocks, same run")
        #expect(a.history.count == 6)
        let held = try accuracy(a.model, test)
        #expect(held >= 0.9, "held-out accuracy \(held)")
        // 36 blocks: one pass to fit standardisation and keep the validation rows (they fit the budget), then one
        // pass per epoch.
        #expect(fractions.count == 36 * 7)
        #expect(zip(fractions, fractions.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(fractions.last == 1)
        // Blocks change the shuffle, so the run differs from one block's.
        let one = try MLPTrainer.train(streaming: try RowBlockSource(digits, blockRows: digits.count), excluding: excluded, config: config1)
        #expect(one.history != a.history)
    }

    @Test("excluded rows are never used (a NaN there is harmless); a NaN in a training row names the row")
    func excludedRowsAreNotRead() throws {
        var x: [Float] = [], y: [Int] = []
        for i in 0..<60 { x += [Float(i % 2) * 2 + Float(i % 7) * 0.01, 1]; y.append(i % 2) }
        x[2 * 13] = .nan
        let data = try LabeledDataset(features: x, labels: y, featureCount: 2)
        var excluded = [Bool](repeating: false, count: 60)
        excluded[13] = true
        var config = TrainingConfig()
        config.hiddenSizes = [4]
        config.maxEpochs = 2
        let source = try RowBlockSource(data, blockRows: 8)
        _ = try MLPTrainer.train(streaming: source, excluding: excluded, config: config)
        let error = computeError { _ = try MLPTrainer.train(streaming: source, config: config) }
        #expect(error?.message.contains("training row 13 feature 0 is nan") == true, "\(String(describing: error))")
    }

    @Test("a throwing block-progress callback stops training within the pass")
    func throwingBlockProgressStops() throws {
        let (digits, _, _, _, config) = try digitsSetup()
        struct Stop: Error {}
        var calls = 0
        #expect(throws: Stop.self) {
            _ = try MLPTrainer.train(streaming: try RowBlockSource(digits, blockRows: 100), config: config) { _ in } blockProgress: { _ in
                calls += 1
                if calls == 25 { throw Stop() }
            }
        }
        #expect(calls == 25, "no block is read after the callback threw")
    }

    @Test("a source whose passes disagree is an error, not a silent misalignment")
    func sourceThatChanges() throws {
        let passes = Mutex(0)
        let source = RowBlockSource(featureCount: 1, labels: [0, 1, 0, 1]) { body in
            let pass = passes.withLock { $0 += 1; return $0 }
            try body([0, 1], 2)
            if pass == 1 { try body([0, 1], 2) }
        }
        var config = TrainingConfig()
        config.hiddenSizes = [2]
        config.validationFraction = 0
        let error = computeError { _ = try MLPTrainer.train(streaming: source, config: config) }
        #expect(error?.message.contains("change between passes") == true, "\(String(describing: error))")
    }

    @Test("standardisation merged over blocks equals fitStandardization on the whole matrix (1e-6 relative)")
    func columnMomentsMatch() throws {
        var rng = SeededRandom(seed: 4)
        let rows = 1000, columns = 5
        let x = (0..<(rows * columns)).map { i in rng.nextUnitFloat() * Float(i % columns + 1) * 100 + 1000 }
        let whole = MLPTrainer.fitStandardization(x, rows: rows, cols: columns)
        var moments = ColumnMoments(columns: columns)
        for start in stride(from: 0, to: rows, by: 37) {
            let n = min(37, rows - start)
            moments.add(Array(x[(start * columns)..<((start + n) * columns)]), rows: n)
        }
        let merged = moments.standardization()
        for c in 0..<columns {
            #expect(abs(merged.mean[c] - whole.mean[c]) <= 1e-6 * abs(whole.mean[c]))
            #expect(abs(merged.std[c] - whole.std[c]) <= 1e-5 * abs(whole.std[c]))
        }
        var one = ColumnMoments(columns: columns)
        one.add(x, rows: rows)
        #expect(one.standardization().mean == whole.mean && one.standardization().std == whole.std, "one block is exact")
    }
}
