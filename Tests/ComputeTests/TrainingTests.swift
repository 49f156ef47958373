import Foundation
import Testing
@testable import Compute

@Suite struct TrainingTests {
    @Test(arguments: [Activation.tanh, .gelu, .sigmoid, .relu])
    func gradientsMatchFiniteDifferences(activation: Activation) throws {
        var rng = SeededRandom(seed: 99)
        let sizes = [5, 7, 6, 3], batch = 4, l2: Float = 0.01
        var net = Network(sizes: sizes, activation: activation, rng: &rng)
        let x = (0..<(batch * sizes[0])).map { _ in rng.nextUnitFloat() * 2 - 1 }
        let y = [0, 2, 1, 2]
        let (_, grads) = net.lossAndGradients(x: x, labels: y, l2: l2)
        let eps: Float = 1e-2
        var checked = 0, bad: [String] = []
        func check(_ analytic: Float, _ plus: Float, _ minus: Float, _ what: String) {
            let numeric = (plus - minus) / (2 * eps)
            checked += 1
            if abs(numeric - analytic) > 2e-3 + 2e-2 * abs(analytic) { bad.append("\(what): numeric \(numeric) analytic \(analytic)") }
        }
        for l in 0..<net.weights.count {
            for i in stride(from: 0, to: net.weights[l].count, by: 3) {
                let orig = net.weights[l][i]
                net.weights[l][i] = orig + eps
                let plus = net.lossAndGradients(x: x, labels: y, l2: l2).loss
                net.weights[l][i] = orig - eps
                let minus = net.lossAndGradients(x: x, labels: y, l2: l2).loss
                net.weights[l][i] = orig
                check(grads.w[l][i], plus, minus, "W\(l)[\(i)]")
            }
            for i in 0..<net.biases[l].count {
                let orig = net.biases[l][i]
                net.biases[l][i] = orig + eps
                let plus = net.lossAndGradients(x: x, labels: y, l2: l2).loss
                net.biases[l][i] = orig - eps
                let minus = net.lossAndGradients(x: x, labels: y, l2: l2).loss
                net.biases[l][i] = orig
                check(grads.b[l][i], plus, minus, "b\(l)[\(i)]")
            }
        }
        #expect(checked > 40)
        // ReLU has kinks; allow a rare crossing there, none for smooth activations.
        #expect(bad.count <= (activation == .relu ? 1 : 0), "\(bad)")
    }

    @Test func trainingIsDeterministicAndReportsProgress() throws {
        // Two Gaussian blobs in 3-D.
        var rng = SeededRandom(seed: 1)
        var x: [Float] = [], y: [Int] = []
        for i in 0..<200 {
            let c = i % 2
            for _ in 0..<3 { x.append((rng.nextUnitFloat() - 0.5) + (c == 0 ? -1 : 1)) }
            y.append(c)
        }
        let data = try LabeledDataset(features: x, labels: y, featureCount: 3)
        var config = TrainingConfig()
        config.hiddenSizes = [8]
        config.maxEpochs = 15
        config.optimizer = .sgd(momentum: 0.9)
        config.learningRate = 0.05
        config.seed = 42
        var seen: [Int] = []
        let a = try MLPTrainer.train(data, config: config) { seen.append($0.epoch) }
        let b = try MLPTrainer.train(data, config: config)
        #expect(seen == Array(1...a.history.count))
        #expect(a.history == b.history)
        #expect(try a.model.forward(rows: x, batch: 200) == b.model.forward(rows: x, batch: 200))
        #expect(a.history.last?.loss ?? 1 < a.history.first?.loss ?? 0)
        #expect((a.history.last?.valAccuracy ?? 0) >= 0.95)
        #expect(a.model.inputMean != nil)
        config.seed = 43
        let c = try MLPTrainer.train(data, config: config)
        #expect(c.history != a.history)
    }

    @Test func aThrowingProgressCallbackStopsTraining() throws {
        var rng = SeededRandom(seed: 3)
        var x: [Float] = [], y: [Int] = []
        for i in 0..<100 {
            for _ in 0..<3 { x.append(rng.nextUnitFloat()) }
            y.append(i % 2)
        }
        let data = try LabeledDataset(features: x, labels: y, featureCount: 3)
        var config = TrainingConfig()
        config.hiddenSizes = [4]
        config.maxEpochs = 50
        struct Stop: Error {}
        var seen: [Int] = []
        #expect(throws: Stop.self) {
            _ = try MLPTrainer.train(data, config: config) { epoch in
                seen.append(epoch.epoch)
                if epoch.epoch == 3 { throw Stop() }
            }
        }
        #expect(seen == [1, 2, 3], "no epoch runs after the callback threw")
    }

    @Test func separateValidationSetAndEarlyStopping() throws {
        var rng = SeededRandom(seed: 8)
        func blobs(_ n: Int) throws -> LabeledDataset {
            var x: [Float] = [], y: [Int] = []
            for i in 0..<n {
                let c = i % 3
                x.append(Float(c) * 3 + rng.nextUnitFloat())
                x.append(rng.nextUnitFloat())
                y.append(c)
            }
            return try LabeledDataset(features: x, labels: y, featureCount: 2)
        }
        let train = try blobs(150), val = try blobs(60)
        var config = TrainingConfig()
        config.hiddenSizes = [6]
        config.activation = .tanh
        config.learningRate = 0.02
        config.maxEpochs = 400
        config.earlyStoppingPatience = 3
        let result = try MLPTrainer.train(train, validation: val, config: config)
        #expect(result.stoppedEarly)
        #expect(result.history.count < 400)
        #expect(result.history.count == result.bestEpoch + 3)
        #expect(result.history[result.bestEpoch - 1].valAccuracy == 1)
        let p = try result.model.predict(rows: val.features, batch: val.count)
        #expect(p == val.labels)
        // Without validation there is no early stopping.
        config.validationFraction = 0
        config.maxEpochs = 5
        let noVal = try MLPTrainer.train(train, config: config)
        #expect(noVal.history.count == 5 && noVal.history.allSatisfy { $0.valAccuracy == nil } && !noVal.stoppedEarly)
    }

    @Test func rejectsBadConfigurations() throws {
        let data = try LabeledDataset(features: [0, 1, 2, 3], labels: [0, 1], featureCount: 2)
        var config = TrainingConfig()
        config.activation = .softmax
        #expect(computeError { _ = try MLPTrainer.train(data, config: config) }?.message.contains("softmax") == true)
        config = TrainingConfig()
        config.learningRate = 0
        #expect(computeError { _ = try MLPTrainer.train(data, config: config) } != nil)
        let nanData = try LabeledDataset(features: [0, .nan, 2, 3], labels: [0, 1], featureCount: 2)
        #expect(computeError { _ = try MLPTrainer.train(nanData, config: TrainingConfig()) } != nil)
    }

    @Test func stratifiedSplitKeepsClassProportions() throws {
        let labels = (0..<100).map { $0 < 60 ? 0 : ($0 < 90 ? 1 : 2) }
        let (train, test) = try LabeledDataset.stratifiedIndices(labels: labels, testFraction: 0.25, seed: 3)
        #expect(Set(train).isDisjoint(with: test))
        #expect(train.count + test.count == 100)
        #expect(test.filter { labels[$0] == 0 }.count == 15)
        #expect(test.filter { labels[$0] == 1 }.count == 8)
        #expect(test.filter { labels[$0] == 2 }.count == 3)
        let again = try LabeledDataset.stratifiedIndices(labels: labels, testFraction: 0.25, seed: 3)
        #expect(again.test == test)
    }
}

@Suite struct DigitsTests {
    /// Trains on a stratified 75 % of the UCI digits and checks accuracy, FP16/int8
    /// agreement and size ratios on the held-out 25 %.
    @Test func digitsAccuracyQuantisationAgreementAndSize() throws {
        let digits = try digitsDataset(from: Fixtures.digitsCSV)
        #expect(digits.count == 1797)
        #expect(digits.classCount == 10)
        let (train, test) = try digits.stratifiedSplit(testFraction: 0.25, seed: 0)
        #expect(abs(Double(test.count) - 0.25 * 1797) <= 5)

        // The `train` job's defaults: all training rows, fixed epochs. Over 30 split/training seeds this recipe
        // scored 97.3–98.9 % held-out (release `compute-bench --digits-seeds 30`), whereas holding out 10 % for
        // early stopping scored 95–99 %.
        let config = TrainingConfig.trainJobDefault
        #expect(config.hiddenSizes == [128] && config.maxEpochs == 60 && config.batchSize == 64 && config.learningRate == 3e-3)
        #expect(config.validationFraction == 0 && config.seed == 1)
        let start = Date()
        let result = try MLPTrainer.train(train, config: config)
        let seconds = Date().timeIntervalSince(start)
        print("digits: \(result.history.count) epochs, best \(result.bestEpoch), \(String(format: "%.2f", seconds)) s")

        let fp32 = result.model
        let predicted = try fp32.predict(rows: test.features, batch: test.count)
        let accuracy = Double(zip(predicted, test.labels).filter { $0 == $1 }.count) / Double(test.count)
        print("digits: held-out accuracy \(accuracy)")
        #expect(accuracy >= 0.97)

        let (fp16, r16) = try Quantization.convert(fp32, to: .fp16)
        let (int8, r8) = try Quantization.convert(fp32, to: .int8)
        let p16 = try fp16.predict(rows: test.features, batch: test.count)
        let p8 = try int8.predict(rows: test.features, batch: test.count)
        let agree16 = Double(zip(p16, predicted).filter { $0 == $1 }.count) / Double(test.count)
        let agree8 = Double(zip(p8, predicted).filter { $0 == $1 }.count) / Double(test.count)
        print("digits: fp16 agreement \(agree16), int8 agreement \(agree8), size ratios \(r16.sizeRatio) \(r8.sizeRatio)")
        #expect(agree16 >= 0.995)
        #expect(agree8 >= 0.99)
        #expect(Double(fp16.tensorByteCount) <= 0.51 * Double(fp32.tensorByteCount))
        #expect(Double(int8.tensorByteCount) <= 0.30 * Double(fp32.tensorByteCount))
        #expect(r16.bytesBefore == fp32.tensorByteCount && r8.bytesAfter == int8.tensorByteCount)
    }
}
