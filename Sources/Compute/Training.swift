import Foundation

/// Parameter update rule.
public enum Optimizer: Sendable, Equatable {
    /// SGD with classical momentum: `v = μ·v − lr·g; w += v`.
    case sgd(momentum: Float)
    /// Adam (Kingma & Ba) with bias correction.
    case adam(beta1: Float, beta2: Float, epsilon: Float)

    /// Adam with the usual defaults (0.9, 0.999, 1e-8).
    public static let adamDefault = Optimizer.adam(beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
}

/// Hyper-parameters of `MLPTrainer.train`.
public struct TrainingConfig: Sendable, Equatable {
    /// Hidden layer widths, input side first.
    public var hiddenSizes: [Int] = [64]
    /// Hidden activation: relu, gelu, tanh or sigmoid.
    public var activation: Activation = .relu
    /// Update rule.
    public var optimizer: Optimizer = .adamDefault
    /// Step size.
    public var learningRate: Float = 1e-3
    /// L2 penalty λ: the loss adds (λ/2)·Σ‖W‖² over weights (not biases).
    public var l2: Float = 1e-4
    /// Rows per mini-batch.
    public var batchSize: Int = 32
    /// Upper bound on epochs.
    public var maxEpochs: Int = 100
    /// Seed for initialisation, shuffling and the validation split.
    public var seed: UInt64 = 0
    /// Share of the training rows held out (stratified) for validation when no
    /// separate validation set is given; 0 disables validation and early stopping.
    public var validationFraction: Double = 0.1
    /// Stop after this many epochs without validation improvement and restore the
    /// best weights; nil trains `maxEpochs` and keeps the best-validation weights.
    public var earlyStoppingPatience: Int? = 10
    /// Fit per-feature standardisation on the training rows and store it in the model.
    public var standardize: Bool = true
    /// Optional class names stored in the model config.
    public var classLabels: [String]?

    /// Creates a config with the defaults above.
    public init() {}
}

/// What the progress callback receives after each epoch.
public struct EpochProgress: Sendable, Equatable {
    /// 1-based epoch number.
    public let epoch: Int
    /// Mean training loss over the epoch (cross-entropy + L2 term).
    public let loss: Float
    /// Accuracy on the validation rows, nil without validation.
    public let valAccuracy: Float?
}

/// Outcome of training.
public struct TrainingResult: Sendable {
    /// The trained FP32 model (standardisation included when enabled).
    public let model: MLPModel
    /// One entry per epoch run.
    public let history: [EpochProgress]
    /// Epoch whose weights were kept.
    public let bestEpoch: Int
    /// Whether early stopping ended training before `maxEpochs`.
    public let stoppedEarly: Bool
}

/// Trains MLP classifiers (softmax cross-entropy) with BLAS GEMMs.
public enum MLPTrainer {
    /// Trains a classifier on `data`.
    /// - Parameters:
    ///   - classCount: number of outputs; defaults to the largest label + 1 over train and validation.
    ///   - validation: a separate validation set; when nil, `config.validationFraction` of `data` is split off.
    ///   - progress: called after every epoch with `(epoch, loss, valAccuracy)`; throwing from it stops training
    ///     and `train` rethrows the error.
    public static func train(_ data: LabeledDataset, classCount: Int? = nil, validation: LabeledDataset? = nil,
                             config: TrainingConfig,
                             progress: (EpochProgress) throws -> Void = { _ in }) throws -> TrainingResult {
        try validate(config)
        guard data.count > 0 else { throw ComputeError.invalidArgument("training set is empty") }
        if let v = validation, v.featureCount != data.featureCount {
            throw ComputeError.shapeMismatch("validation rows have \(v.featureCount) features, training rows \(data.featureCount)")
        }
        if let i = data.features.firstIndex(where: { !$0.isFinite }) {
            throw ComputeError.nonFiniteValue("training row \(i / data.featureCount) feature \(i % data.featureCount) is \(data.features[i])")
        }
        let classes = classCount ?? max(data.classCount, validation?.classCount ?? 0)
        guard classes >= 2 else { throw ComputeError.invalidArgument("need at least 2 classes, got \(classes)") }
        if let bad = (data.labels + (validation?.labels ?? [])).first(where: { $0 >= classes }) {
            throw ComputeError.invalidArgument("label \(bad) is out of range for \(classes) classes")
        }

        var train = data
        var val = validation
        if val == nil, config.validationFraction > 0 {
            let split = try data.stratifiedSplit(testFraction: config.validationFraction, seed: config.seed ^ 0x5EED)
            train = split.train
            val = split.test
        }

        let f = train.featureCount
        var mean: [Float]?, std: [Float]?
        var xTrain = train.features
        var xVal = val?.features ?? []
        if config.standardize {
            let (m, s) = fitStandardization(train.features, rows: train.count, cols: f)
            mean = m
            std = s
            xTrain = applyStandardization(xTrain, cols: f, mean: m, std: s)
            xVal = applyStandardization(xVal, cols: f, mean: m, std: s)
        }

        var rng = SeededRandom(seed: config.seed)
        var net = Network(sizes: [f] + config.hiddenSizes + [classes], activation: config.activation, rng: &rng)
        var opt = OptimizerState(net: net, optimizer: config.optimizer, learningRate: config.learningRate)

        var history: [EpochProgress] = []
        var best = (accuracy: -Float.infinity, loss: Float.infinity, epoch: 0, net: net)
        var sinceImprovement = 0
        var stoppedEarly = false
        var order = Array(0..<train.count)
        let bs = min(config.batchSize, train.count)
        var xb = [Float](repeating: 0, count: bs * f)
        var yb = [Int](repeating: 0, count: bs)

        for epoch in 1...config.maxEpochs {
            rng.shuffle(&order)
            var lossSum: Double = 0
            var start = 0
            while start < order.count {
                let n = min(bs, order.count - start)
                if n != xb.count / f { xb = [Float](repeating: 0, count: n * f); yb = [Int](repeating: 0, count: n) }
                xTrain.withUnsafeBufferPointer { src in
                    xb.withUnsafeMutableBufferPointer { dst in
                        for r in 0..<n {
                            let i = order[start + r]
                            (dst.baseAddress! + r * f).update(from: src.baseAddress! + i * f, count: f)
                            yb[r] = train.labels[i]
                        }
                    }
                }
                let (loss, grads) = net.lossAndGradients(x: xb, labels: yb, l2: config.l2)
                lossSum += Double(loss) * Double(n)
                opt.step(&net, grads)
                start += n
            }
            let epochLoss = Float(lossSum / Double(order.count))
            guard epochLoss.isFinite else {
                throw ComputeError.nonFiniteValue("training loss diverged to \(epochLoss) at epoch \(epoch); lower the learning rate")
            }
            var valAcc: Float?
            if let val, val.count > 0 {
                let (acc, vloss) = net.evaluate(x: xVal, labels: val.labels)
                valAcc = acc
                if acc > best.accuracy || (acc == best.accuracy && vloss < best.loss) {
                    best = (acc, vloss, epoch, net)
                    sinceImprovement = 0
                } else {
                    sinceImprovement += 1
                }
            } else {
                best = (0, epochLoss, epoch, net)
            }
            let p = EpochProgress(epoch: epoch, loss: epochLoss, valAccuracy: valAcc)
            history.append(p)
            try progress(p)  // a callback that throws stops training (a cancelled or timed-out job)
            if let patience = config.earlyStoppingPatience, valAcc != nil, sinceImprovement >= patience {
                stoppedEarly = epoch < config.maxEpochs
                break
            }
        }

        let model = try best.net.model(mean: mean, std: std, classLabels: config.classLabels)
        return TrainingResult(model: model, history: history, bestEpoch: best.epoch, stoppedEarly: stoppedEarly)
    }

    private static func validate(_ c: TrainingConfig) throws {
        guard c.hiddenSizes.allSatisfy({ $0 > 0 }) else { throw ComputeError.invalidArgument("hidden sizes must be > 0, got \(c.hiddenSizes)") }
        guard [.relu, .gelu, .tanh, .sigmoid].contains(c.activation) else {
            throw ComputeError.invalidArgument("hidden activation must be relu, gelu, tanh or sigmoid, got \(c.activation.rawValue)")
        }
        guard c.learningRate > 0, c.learningRate.isFinite else { throw ComputeError.invalidArgument("learning rate must be > 0, got \(c.learningRate)") }
        guard c.l2 >= 0 else { throw ComputeError.invalidArgument("l2 must be >= 0, got \(c.l2)") }
        guard c.batchSize >= 1 else { throw ComputeError.invalidArgument("batch size must be >= 1, got \(c.batchSize)") }
        guard c.maxEpochs >= 1 else { throw ComputeError.invalidArgument("maxEpochs must be >= 1, got \(c.maxEpochs)") }
        guard c.validationFraction >= 0, c.validationFraction < 1 else {
            throw ComputeError.invalidArgument("validation fraction must be in [0, 1), got \(c.validationFraction)")
        }
        if let p = c.earlyStoppingPatience, p < 1 { throw ComputeError.invalidArgument("patience must be >= 1, got \(p)") }
    }

    /// Per-column mean and population std (like scikit-learn's StandardScaler); a zero std becomes 1.
    static func fitStandardization(_ x: [Float], rows: Int, cols: Int) -> (mean: [Float], std: [Float]) {
        var sum = [Double](repeating: 0, count: cols), sq = [Double](repeating: 0, count: cols)
        for r in 0..<rows { for c in 0..<cols { sum[c] += Double(x[r * cols + c]) } }
        let mean = sum.map { $0 / Double(max(1, rows)) }
        for r in 0..<rows { for c in 0..<cols { let d = Double(x[r * cols + c]) - mean[c]; sq[c] += d * d } }
        let std = sq.map { v -> Float in
            let s = (v / Double(max(1, rows))).squareRoot()
            return s > 1e-12 ? Float(s) : 1
        }
        return (mean.map { Float($0) }, std)
    }

    static func applyStandardization(_ x: [Float], cols: Int, mean: [Float], std: [Float]) -> [Float] {
        var out = x
        let inv = std.map { 1 / $0 }
        for i in 0..<out.count { let c = i % cols; out[i] = (out[i] - mean[c]) * inv[c] }
        return out
    }
}

/// FP32 parameters of an MLP classifier plus forward/backward passes (internal).
struct Network: Sendable {
    var sizes: [Int]
    var activation: Activation
    /// Per layer `[out × in]`, PyTorch layout.
    var weights: [[Float]]
    var biases: [[Float]]

    init(sizes: [Int], activation: Activation, rng: inout SeededRandom) {
        self.sizes = sizes
        self.activation = activation
        weights = []
        biases = []
        for l in 0..<(sizes.count - 1) {
            let fanIn = sizes[l], fanOut = sizes[l + 1]
            // Glorot/Xavier uniform, as scikit-learn's MLP (factor 2 for sigmoid).
            let factor: Float = activation == .sigmoid ? 2 : 6
            let bound = (factor / Float(fanIn + fanOut)).squareRoot()
            weights.append((0..<(fanIn * fanOut)).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound })
            biases.append((0..<fanOut).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound })
        }
    }

    var layerCount: Int { weights.count }

    /// Pre-activations `z` and activations `a` per layer (the last `a` is the softmax output).
    func forward(_ x: [Float], batch: Int) -> (z: [[Float]], a: [[Float]]) {
        var zs: [[Float]] = [], acts: [[Float]] = []
        var input = x
        for l in 0..<layerCount {
            let out = sizes[l + 1], inF = sizes[l]
            var z = [Float](repeating: 0, count: batch * out)
            input.withUnsafeBufferPointer { xp in
                weights[l].withUnsafeBufferPointer { wp in
                    biases[l].withUnsafeBufferPointer { bp in
                        z.withUnsafeMutableBufferPointer { zp in
                            BLAS.linear(x: xp.baseAddress, batch: batch, inFeatures: inF, w: wp.baseAddress,
                                        rows: out, bias: bp.baseAddress, y: zp.baseAddress, ldy: out)
                        }
                    }
                }
            }
            var a = z
            let act: Activation = l == layerCount - 1 ? .softmax : activation
            a.withUnsafeMutableBufferPointer { ActivationMath.apply(act, to: $0, rows: batch, cols: out) }
            zs.append(z)
            acts.append(a)
            input = a
        }
        return (zs, acts)
    }

    /// Mean cross-entropy + (λ/2)·Σ‖W‖², and its gradients (weights, biases) per layer.
    func lossAndGradients(x: [Float], labels: [Int], l2: Float) -> (loss: Float, grads: (w: [[Float]], b: [[Float]])) {
        let batch = labels.count
        let (zs, acts) = forward(x, batch: batch)
        let classes = sizes[sizes.count - 1]
        let probs = acts[layerCount - 1]
        var loss: Double = 0
        // dL/dz for softmax + cross-entropy: (p - onehot) / batch.
        var delta = probs
        let invB = 1 / Float(batch)
        for r in 0..<batch {
            let y = labels[r]
            loss -= Foundation.log(max(Double(probs[r * classes + y]), 1e-30))
            delta[r * classes + y] -= 1
        }
        for i in 0..<delta.count { delta[i] *= invB }
        loss /= Double(batch)
        if l2 > 0 { for w in weights { var s: Double = 0; for v in w { s += Double(v) * Double(v) }; loss += 0.5 * Double(l2) * s } }

        var gw = [[Float]](repeating: [], count: layerCount), gb = [[Float]](repeating: [], count: layerCount)
        for l in stride(from: layerCount - 1, through: 0, by: -1) {
            let out = sizes[l + 1], inF = sizes[l]
            let input = l == 0 ? x : acts[l - 1]
            var g = weights[l]   // start from W so that adding l2·W is folded into beta
            if l2 > 0 {
                for i in 0..<g.count { g[i] *= l2 }
            }
            // gW = deltaᵀ · input  ([out × batch] · [batch × in]) + l2·W
            delta.withUnsafeBufferPointer { dp in
                input.withUnsafeBufferPointer { ip in
                    g.withUnsafeMutableBufferPointer { gp in
                        BLAS.sgemm(transposeA: true, transposeB: false, m: out, n: inF, k: batch, alpha: 1,
                                   a: dp.baseAddress, lda: out, b: ip.baseAddress, ldb: inF,
                                   beta: l2 > 0 ? 1 : 0, c: gp.baseAddress, ldc: inF)
                    }
                }
            }
            var bgrad = [Float](repeating: 0, count: out)
            for r in 0..<batch { for j in 0..<out { bgrad[j] += delta[r * out + j] } }
            gw[l] = g
            gb[l] = bgrad
            if l > 0 {
                // delta_prev = delta · W  ([batch × out] · [out × in]), then × act'(z_prev).
                var prev = [Float](repeating: 0, count: batch * inF)
                delta.withUnsafeBufferPointer { dp in
                    weights[l].withUnsafeBufferPointer { wp in
                        prev.withUnsafeMutableBufferPointer { pp in
                            BLAS.sgemm(transposeA: false, transposeB: false, m: batch, n: inF, k: out, alpha: 1,
                                       a: dp.baseAddress, lda: out, b: wp.baseAddress, ldb: inF,
                                       beta: 0, c: pp.baseAddress, ldc: inF)
                        }
                    }
                }
                zs[l - 1].withUnsafeBufferPointer { zp in
                    acts[l - 1].withUnsafeBufferPointer { ap in
                        prev.withUnsafeMutableBufferPointer { pp in
                            ActivationMath.backward(activation, z: zp, a: ap, grad: pp)
                        }
                    }
                }
                delta = prev
            }
        }
        return (Float(loss), (gw, gb))
    }

    /// Accuracy and mean cross-entropy on a (standardised) set.
    func evaluate(x: [Float], labels: [Int]) -> (accuracy: Float, loss: Float) {
        let batch = labels.count
        guard batch > 0 else { return (0, 0) }
        let probs = forward(x, batch: batch).a[layerCount - 1]
        let classes = sizes[sizes.count - 1]
        var correct = 0
        var loss: Double = 0
        for r in 0..<batch {
            var best = 0
            for j in 1..<classes where probs[r * classes + j] > probs[r * classes + best] { best = j }
            if best == labels[r] { correct += 1 }
            loss -= Foundation.log(max(Double(probs[r * classes + labels[r]]), 1e-30))
        }
        return (Float(correct) / Float(batch), Float(loss / Double(batch)))
    }

    /// The parameters as an inference model (final layer outputs logits; activation `none`).
    func model(mean: [Float]?, std: [Float]?, classLabels: [String]?) throws -> MLPModel {
        var layerConfigs: [DenseLayerConfig] = []
        var tensors: [String: Tensor] = [:]
        for l in 0..<layerCount {
            let w = "layers.\(l).weight", b = "layers.\(l).bias"
            layerConfigs.append(DenseLayerConfig(weight: w, bias: b, activation: l == layerCount - 1 ? .none : activation))
            tensors[w] = try Tensor(shape: [sizes[l + 1], sizes[l]], float32: weights[l])
            tensors[b] = try Tensor(shape: [sizes[l + 1]], float32: biases[l])
        }
        var standardization: StandardizationConfig?
        if let mean, let std { standardization = StandardizationConfig(mean: mean, std: std) }
        let config = ModelConfig(layers: layerConfigs, inputStandardization: standardization, classLabels: classLabels)
        return try MLPModel(config: config, tensors: tensors)
    }
}

/// Optimizer moment buffers.
struct OptimizerState {
    let optimizer: Optimizer
    let learningRate: Float
    var m: [[Float]]
    var v: [[Float]]
    var t: Int = 0

    init(net: Network, optimizer: Optimizer, learningRate: Float) {
        self.optimizer = optimizer
        self.learningRate = learningRate
        let shapes = net.weights.map { $0.count } + net.biases.map { $0.count }
        m = shapes.map { [Float](repeating: 0, count: $0) }
        v = shapes.map { [Float](repeating: 0, count: $0) }
    }

    mutating func step(_ net: inout Network, _ grads: (w: [[Float]], b: [[Float]])) {
        t += 1
        let L = net.layerCount
        for l in 0..<L {
            update(&net.weights[l], grads.w[l], slot: l)
            update(&net.biases[l], grads.b[l], slot: L + l)
        }
    }

    private mutating func update(_ p: inout [Float], _ g: [Float], slot: Int) {
        let lr = learningRate
        switch optimizer {
        case .sgd(let mu):
            p.withUnsafeMutableBufferPointer { pp in
                m[slot].withUnsafeMutableBufferPointer { mp in
                    g.withUnsafeBufferPointer { gp in
                        for i in 0..<pp.count {
                            mp[i] = mu * mp[i] - lr * gp[i]
                            pp[i] += mp[i]
                        }
                    }
                }
            }
        case .adam(let b1, let b2, let eps):
            let c1 = 1 - Foundation.pow(Double(b1), Double(t)), c2 = 1 - Foundation.pow(Double(b2), Double(t))
            let stepSize = Float(Double(lr) * c2.squareRoot() / c1)
            p.withUnsafeMutableBufferPointer { pp in
                m[slot].withUnsafeMutableBufferPointer { mp in
                    v[slot].withUnsafeMutableBufferPointer { vp in
                        g.withUnsafeBufferPointer { gp in
                            for i in 0..<pp.count {
                                let gi = gp[i]
                                mp[i] = b1 * mp[i] + (1 - b1) * gi
                                vp[i] = b2 * vp[i] + (1 - b2) * gi * gi
                                pp[i] -= stepSize * mp[i] / (vp[i].squareRoot() + eps)
                            }
                        }
                    }
                }
            }
        }
    }
}
