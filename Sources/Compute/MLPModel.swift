import Foundation

/// Numeric precision of a model's layer tensors.
public enum Precision: String, Sendable, Codable, CaseIterable {
    /// FP32 weights; the GEMM reads them in place.
    case fp32
    /// FP16 weights, converted to FP32 in row blocks right before each block's GEMM.
    case fp16
    /// Int8 weights with per-output-channel FP32 scales, dequantised in row blocks.
    case int8
}

/// A dense layer with resolved tensors.
public struct DenseLayer: Sendable, Equatable {
    /// Weight `[outFeatures, inFeatures]` (PyTorch `Linear` layout) in any `DType`.
    public let weight: Tensor
    /// Bias `[outFeatures]`, FP32 or FP16, or nil.
    public let bias: Tensor?
    /// Activation after the affine map.
    public let activation: Activation

    /// Output features (rows of the weight).
    public var outFeatures: Int { weight.shape[0] }
    /// Input features (columns of the weight).
    public var inFeatures: Int { weight.shape[1] }

    /// Creates a layer, checking that `weight` is 2-D and `bias` has `outFeatures` elements.
    public init(weight: Tensor, bias: Tensor?, activation: Activation) throws {
        guard weight.shape.count == 2 else {
            throw ComputeError.shapeMismatch("dense weight must be 2-D [out, in], got shape \(weight.shape)")
        }
        if let bias {
            guard bias.count == weight.shape[0] else {
                throw ComputeError.shapeMismatch("bias has \(bias.count) elements but the weight \(weight.shape) has \(weight.shape[0]) output features")
            }
            if case .int8 = bias.storage {
                throw ComputeError.unsupportedDType("int8 biases are not supported; store biases as FP32 or FP16")
            }
        }
        self.weight = weight
        self.bias = bias
        self.activation = activation
    }

    /// Bytes of weight and bias storage (int8 scales included).
    public var byteCount: Int { weight.byteCount + (bias?.byteCount ?? 0) }
}

/// The top-k entry of one row.
public struct ClassScore: Sendable, Equatable {
    /// Output index (class id).
    public let index: Int
    /// Softmax probability.
    public let probability: Float
    /// Class name from `ModelConfig.classLabels`, if present.
    public let label: String?
}

/// A feed-forward network of dense layers, evaluated with OpenBLAS.
///
/// FP32 layers call `cblas_sgemm` (`cblas_sgemv` for one row) directly on the
/// caller's input and the stored weights, with the bias preloaded into the
/// output (beta = 1): no extra copies on the hot path. FP16 and int8 layers
/// convert blocks of weight rows to FP32 in a scratch buffer and run one GEMM
/// per block, writing straight into the output columns; for a single row they
/// use fused kernels that read the FP16 / int8 weights directly (no FP32 copy).
public struct MLPModel: Sendable {
    /// The config this model was built from (tensor names included).
    public let config: ModelConfig
    /// Layers, input first.
    public let layers: [DenseLayer]
    /// Resolved input means, if the model standardises inputs.
    public let inputMean: [Float]?
    /// Resolved input standard deviations, if the model standardises inputs.
    public let inputStd: [Float]?

    /// Builds a model from a config and a tensor set (for example `SafetensorsFile.tensors`).
    public init(config: ModelConfig, tensors: [String: Tensor]) throws {
        guard !config.layers.isEmpty else { throw ComputeError.invalidArgument("model config has no layers") }
        func lookup(_ name: String, _ role: String) throws -> Tensor {
            guard let t = tensors[name] else {
                throw ComputeError.missingTensor("\(role) tensor \"\(name)\" is not in the tensor set (have: \(tensors.keys.sorted().joined(separator: ", ")))")
            }
            return t
        }
        var layers: [DenseLayer] = []
        for (i, lc) in config.layers.enumerated() {
            let w = try lookup(lc.weight, "layer \(i) weight")
            let b = try lc.bias.map { try lookup($0, "layer \(i) bias") }
            let layer: DenseLayer
            do { layer = try DenseLayer(weight: w, bias: b, activation: lc.activation) } catch let e as ComputeError {
                throw ComputeError.shapeMismatch("layer \(i) (\(lc.weight)): \(e.message)")
            }
            if let prev = layers.last, prev.outFeatures != layer.inFeatures {
                throw ComputeError.shapeMismatch("layer \(i) (\(lc.weight)) expects \(layer.inFeatures) inputs but layer \(i - 1) produces \(prev.outFeatures)")
            }
            layers.append(layer)
        }
        var mean: [Float]?, std: [Float]?
        if let s = config.inputStandardization {
            mean = try s.mean ?? s.meanTensor.map { try lookup($0, "standardisation mean").floats() }
            std = try s.std ?? s.stdTensor.map { try lookup($0, "standardisation std").floats() }
        }
        try self.init(config: config, layers: layers, inputMean: mean, inputStd: std)
    }

    /// Builds a model from a safetensors file; the config defaults to the JSON stored under
    /// `ModelConfig.metadataKey` in the file's metadata, else to the layers of a PyTorch `nn.Sequential` of
    /// `nn.Linear` read from the tensor names (`ModelConfig.sequential`, ReLU between the layers).
    public init(file: SafetensorsFile, config: ModelConfig? = nil) throws {
        if let config {
            try self.init(config: config, tensors: file.tensors)
        } else if let json = file.metadata[ModelConfig.metadataKey] {
            try self.init(config: ModelConfig(jsonString: json), tensors: file.tensors)
        } else {
            try self.init(config: ModelConfig.sequential(tensors: file.tensors), tensors: file.tensors)
        }
    }

    /// Reads a model from a safetensors file on disk.
    public init(contentsOf url: URL, config: ModelConfig? = nil) throws {
        try self.init(file: SafetensorsFile(contentsOf: url), config: config)
    }

    init(config: ModelConfig, layers: [DenseLayer], inputMean: [Float]?, inputStd: [Float]?) throws {
        guard let first = layers.first else { throw ComputeError.invalidArgument("a model needs at least one layer") }
        if (inputMean == nil) != (inputStd == nil) {
            throw ComputeError.invalidArgument("input standardisation needs both mean and std")
        }
        if let m = inputMean, let s = inputStd {
            guard m.count == first.inFeatures, s.count == first.inFeatures else {
                throw ComputeError.shapeMismatch("standardisation has \(m.count) means and \(s.count) stds but the model takes \(first.inFeatures) inputs")
            }
            if let i = m.firstIndex(where: { !$0.isFinite }) {
                throw ComputeError.nonFiniteValue("standardisation mean[\(i)] is \(m[i])")
            }
            if let i = s.firstIndex(where: { !($0.isFinite && $0 > 0) }) {
                throw ComputeError.invalidArgument("standardisation std[\(i)] is \(s[i]); it must be finite and > 0")
            }
        }
        if let labels = config.classLabels, let last = layers.last, labels.count != last.outFeatures {
            throw ComputeError.shapeMismatch("\(labels.count) class labels for \(last.outFeatures) outputs")
        }
        self.config = config
        self.layers = layers
        self.inputMean = inputMean
        self.inputStd = inputStd
    }

    /// Number of input features.
    public var inputSize: Int { layers[0].inFeatures }
    /// Number of outputs.
    public var outputSize: Int { layers[layers.count - 1].outFeatures }

    /// The precision of the layer weights, or nil when layers differ.
    public var precision: Precision? {
        let kinds = Set(layers.map { $0.weight.dtype })
        guard kinds.count == 1, let k = kinds.first else { return nil }
        switch k {
        case .float32: return .fp32
        case .float16: return .fp16
        case .int8: return .int8
        }
    }

    /// Bytes of all layer tensors (weights, biases, int8 scales).
    public var tensorByteCount: Int { layers.reduce(0) { $0 + $1.byteCount } }

    // MARK: - Inference

    /// Runs the network exactly as configured (every layer's activation applied).
    /// `rows` holds `batch × inputSize` values row-major; returns `batch × outputSize`.
    public func forward(rows: [Float], batch: Int) throws -> [Float] {
        try run(rows, batch: batch, finalSoftmax: true, threads: 1)
    }

    /// Runs the network on a `[batch, in]` (or `[in]`) tensor of any dtype; returns `[batch, out]` FP32.
    public func forward(_ input: Tensor) throws -> Tensor {
        let batch: Int
        switch input.shape.count {
        case 1: batch = 1
        case 2: batch = input.shape[0]
        default: throw ComputeError.shapeMismatch("model input must be [batch, \(inputSize)] or [\(inputSize)], got \(input.shape)")
        }
        guard input.rowLength == inputSize || (input.shape.count == 1 && input.count == inputSize) else {
            throw ComputeError.shapeMismatch("model takes \(inputSize) features per row, input shape is \(input.shape)")
        }
        let out = try run(input.floats(), batch: batch, finalSoftmax: true, threads: 1)
        return try Tensor(shape: [batch, outputSize], float32: out)
    }

    /// Logits: the network output with a final `softmax` activation (if configured) left out.
    public func logits(rows: [Float], batch: Int) throws -> [Float] {
        try run(rows, batch: batch, finalSoftmax: false, threads: 1)
    }

    /// Logits computed on up to `threads` threads: a layer whose batch is within `SmallBatchKernel`'s split limit
    /// (measured per thread count, `SmallBatchKernel.calibrateSplit`) is split by weight rows across the farm's
    /// kernel threads, each streaming its own share of the weights; a bigger batch runs OpenBLAS with `threads`
    /// threads for that layer (`BLASThreads.raised`: the setting is per process, so a BLAS call made meanwhile by
    /// another thread of the process runs on as many threads). Used by the dynamic batcher, which runs one pass at
    /// a time across the cores.
    public func logits(rows: [Float], batch: Int, threads: Int) throws -> [Float] {
        try run(rows, batch: batch, finalSoftmax: false, threads: max(1, threads))
    }

    /// Softmax probabilities of the logits, `batch × outputSize`.
    public func probabilities(rows: [Float], batch: Int) throws -> [Float] {
        var z = try logits(rows: rows, batch: batch)
        let cols = outputSize
        z.withUnsafeMutableBufferPointer { ActivationMath.softmaxRows($0, rows: batch, cols: cols) }
        return z
    }

    /// Arg-max class of each row.
    public func predict(rows: [Float], batch: Int) throws -> [Int] {
        let z = try logits(rows: rows, batch: batch)
        let cols = outputSize
        return (0..<batch).map { r in
            var best = 0
            for j in 1..<max(1, cols) where z[r * cols + j] > z[r * cols + best] { best = j }
            return best
        }
    }

    /// The `k` most probable classes of each row, most probable first.
    public func topK(rows: [Float], batch: Int, k: Int) throws -> [[ClassScore]] {
        guard k >= 1 else { throw ComputeError.invalidArgument("top-k needs k >= 1, got \(k)") }
        let p = try probabilities(rows: rows, batch: batch)
        let cols = outputSize, kk = min(k, cols)
        let labels = config.classLabels
        return (0..<batch).map { r in
            let idx = (0..<cols).sorted { a, b in
                let pa = p[r * cols + a], pb = p[r * cols + b]
                return pa != pb ? pa > pb : a < b
            }
            return idx.prefix(kk).map { ClassScore(index: $0, probability: p[r * cols + $0], label: labels?[$0]) }
        }
    }

    private func run(_ rows: [Float], batch: Int, finalSoftmax: Bool, threads: Int) throws -> [Float] {
        guard batch >= 1 else { throw ComputeError.invalidArgument("batch must be >= 1, got \(batch)") }
        let inSize = inputSize
        guard rows.count == batch * inSize else {
            throw ComputeError.shapeMismatch("input has \(rows.count) values, expected batch \(batch) × \(inSize) features = \(batch * inSize)")
        }
        if let i = MLPModel.firstNonFinite(rows) {
            throw ComputeError.nonFiniteValue("input row \(i / inSize) feature \(i % inSize) is \(rows[i])")
        }
        var current = rows
        if let mean = inputMean, let std = inputStd {
            current = standardized(rows, batch: batch, mean: mean, std: std)
        }
        // A layer above its split limit runs OpenBLAS on `threads` threads. Changing OpenBLAS's thread count costs
        // about 0.1 ms each way (its helpers park and wake), so a pass with such a layer raises it once for all its
        // layers instead of around each; the split kernel's own pool runs the other layers as before.
        let raise = threads > 1 && layers.contains { $0.usesOpenBLASThreads(batch: batch, threads: threads) } ? threads : 1
        return try BLASThreads.raised(to: raise) {
            for (i, layer) in layers.enumerated() {
                let skipSoftmax = !finalSoftmax && i == layers.count - 1 && layer.activation == .softmax
                current = try layer.evaluate(current, batch: batch, applyActivation: !skipSoftmax, threads: threads)
            }
            return current
        }
    }

    /// Index of the first NaN/±Inf. The common all-finite case is a branch-free
    /// max over the magnitude bits, which the compiler vectorises.
    static func firstNonFinite(_ values: [Float]) -> Int? {
        let maxMagnitude = values.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: UInt32.self) { bits in
                var m: UInt32 = 0
                for b in bits { m = Swift.max(m, b & 0x7FFF_FFFF) }
                return m
            }
        }
        guard maxMagnitude >= 0x7F80_0000 else { return nil }
        return values.firstIndex { !$0.isFinite }
    }

    private func standardized(_ rows: [Float], batch: Int, mean: [Float], std: [Float]) -> [Float] {
        let n = mean.count
        let invStd = std.map { 1 / $0 }
        return [Float](unsafeUninitializedCapacity: rows.count) { out, initialized in
            rows.withUnsafeBufferPointer { x in
                for r in 0..<batch {
                    for j in 0..<n { out[r * n + j] = (x[r * n + j] - mean[j]) * invStd[j] }
                }
            }
            initialized = rows.count
        }
    }

    // MARK: - Saving

    /// The model as a safetensors file: its tensors under the config's names,
    /// the config JSON in metadata under `ModelConfig.metadataKey`.
    public func safetensorsFile(extraMetadata: [String: String] = [:]) throws -> SafetensorsFile {
        var tensors: [String: Tensor] = [:]
        for (layer, lc) in zip(layers, config.layers) {
            tensors[lc.weight] = layer.weight
            if let b = layer.bias, let name = lc.bias { tensors[name] = b }
        }
        var cfg = config
        if let m = inputMean, let s = inputStd {
            // Inline the resolved statistics so the file is self-contained.
            cfg.inputStandardization = StandardizationConfig(mean: m, std: s)
        }
        var meta = extraMetadata
        meta[ModelConfig.metadataKey] = try cfg.jsonString()
        return SafetensorsFile(tensors: tensors, metadata: meta)
    }

    /// Writes the model to a safetensors file.
    public func write(to url: URL) throws {
        try safetensorsFile().write(to: url)
    }

    /// A copy with different layers (same names and activations).
    func replacingLayers(_ newLayers: [DenseLayer]) throws -> MLPModel {
        try MLPModel(config: config, layers: newLayers, inputMean: inputMean, inputStd: inputStd)
    }
}

extension DenseLayer {
    /// Rows of weight converted per block for FP16 / int8 layers.
    static func blockRows(batch: Int, inFeatures: Int, outFeatures: Int) -> Int {
        // Small batches: keep the FP32 block in L2 (256 KiB); large batches: 4 MiB
        // blocks so the GEMM keeps a good shape while the scratch stays bounded.
        let elements = batch >= 32 ? 1 << 20 : 1 << 16
        return max(1, min(outFeatures, elements / max(1, inFeatures)))
    }

    /// `activation(x · weightᵀ + bias)` for `batch` rows.
    ///
    /// `path` forces the farm's kernel (`.kernel`) or OpenBLAS (`.openBLAS`) instead of the measured choice: the
    /// calibration times both.
    func evaluate(_ x: [Float], batch: Int, applyActivation: Bool, threads requestedThreads: Int = 1,
                  path: KernelPath? = nil) throws -> [Float] {
        let out = outFeatures, inF = inFeatures
        try BLAS.checkInt32(batch, out, inF)
        let (threads, small) = kernelChoice(batch: batch, threads: requestedThreads, path: path)
        let biasF32: [Float]? = bias?.floats()
        var y = [Float](unsafeUninitializedCapacity: batch * out) { _, n in n = batch * out }
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                withOptionalPointer(biasF32) { bp in
                    // Above the split limit a multi-thread pass runs OpenBLAS on its threads instead (measured faster
                    // there: `SmallBatchKernel.calibrateSplit`, `calibrate(precision:threads:)`).
                    let openBLASThreads = !small && threads > 1 ? threads : 1
                    // The small-batch kernels, on `threads` threads (one: the caller's). One-thread FP32 products go
                    // through `BLAS.linear`, which makes the same choice for its other callers.
                    if small && (threads > 1 || weightPrecision != .fp32) {
                        preload(batch: batch, bias: bp, y: yp)
                        SmallBatchKernel.accumulate(weight: weight, x: xp, batch: batch, into: yp, threads: threads)
                    } else {
                        switch weight.storage {
                        case .float32(let w):
                            w.withUnsafeBufferPointer { wp in
                                BLASThreads.raised(to: openBLASThreads) {
                                    BLAS.linear(x: xp.baseAddress, batch: batch, inFeatures: inF, w: wp.baseAddress,
                                                rows: out, bias: bp, y: yp.baseAddress, ldy: out, smallKernel: openBLASThreads == 1)
                                }
                            }
                        case .float16(let w) where batch == 1:
                            preload(bias: bp, y: yp)
                            w.withUnsafeBufferPointer { wp in CompressedGEMV.f16(wp, rows: out, cols: inF, x: xp, y: yp) }
                        case .int8(let q, let scales) where batch == 1:
                            preload(bias: bp, y: yp)
                            q.withUnsafeBufferPointer { qp in CompressedGEMV.i8(qp, scales: scales, rows: out, cols: inF, x: xp, y: yp) }
                        case .float16(let w):
                            w.withUnsafeBufferPointer { wp in
                                blocked(batch: batch, x: xp, bias: bp, y: yp, openBLASThreads: openBLASThreads) { r0, nr, scratch in
                                    FP16Conversion.convert(UnsafeBufferPointer(rebasing: wp[(r0 * inF)..<((r0 + nr) * inF)]),
                                                           into: scratch)
                                }
                            }
                        case .int8(let w, let scales):
                            w.withUnsafeBufferPointer { wp in
                                blocked(batch: batch, x: xp, bias: bp, y: yp, openBLASThreads: openBLASThreads) { r0, nr, scratch in
                                    Dequantize.rows(wp, scales: scales, rowLength: inF, firstRow: r0, rowCount: nr, into: scratch)
                                }
                            }
                        }
                    }
                }
                if applyActivation { ActivationMath.apply(activation, to: yp, rows: batch, cols: out) }
            }
        }
        return y
    }

    /// The threads a `batch`-row product of this layer runs on (one for a matrix too small to be worth spreading)
    /// and whether the farm's small-batch kernel multiplies it (by the measured limits of its weight precision, unless
    /// `path` forces one side).
    func kernelChoice(batch: Int, threads requested: Int, path: KernelPath? = nil) -> (threads: Int, small: Bool) {
        let threads = requested > 1 && SmallBatchKernel.splits(rows: outFeatures, cols: inFeatures) ? requested : 1
        let small = path.map { $0 == .kernel }
            ?? SmallBatchKernel.preferred(batch: batch, rows: outFeatures, cols: inFeatures, threads: threads, precision: weightPrecision)
        return (threads, small)
    }

    /// Whether `evaluate(batch:threads:)` runs this layer on OpenBLAS's threads (above the split limit).
    func usesOpenBLASThreads(batch: Int, threads: Int) -> Bool {
        let choice = kernelChoice(batch: batch, threads: threads)
        return choice.threads > 1 && !choice.small
    }

    /// Which code multiplies a layer (`evaluate(path:)`).
    enum KernelPath { case kernel, openBLAS }

    /// The precision of the weight tensor.
    var weightPrecision: Precision {
        switch weight.dtype {
        case .float32: return .fp32
        case .float16: return .fp16
        case .int8: return .int8
        }
    }

    /// Each of the `batch` rows of y = bias (or 0), for the fused kernels that accumulate into y.
    private func preload(batch: Int = 1, bias: UnsafePointer<Float>?, y: UnsafeMutableBufferPointer<Float>) {
        guard let yp = y.baseAddress else { return }
        for i in 0..<batch {
            if let bias { (yp + i * outFeatures).update(from: bias, count: outFeatures) }
            else { (yp + i * outFeatures).update(repeating: 0, count: outFeatures) }
        }
    }

    private func blocked(batch: Int, x: UnsafeBufferPointer<Float>, bias: UnsafePointer<Float>?,
                         y: UnsafeMutableBufferPointer<Float>, openBLASThreads: Int = 1,
                         fill: (_ firstRow: Int, _ rowCount: Int, _ scratch: UnsafeMutableBufferPointer<Float>) -> Void) {
        let out = outFeatures, inF = inFeatures
        let rowsPerBlock = DenseLayer.blockRows(batch: batch, inFeatures: inF, outFeatures: out)
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, rowsPerBlock * inF))
        defer { scratch.deallocate() }
        // One raise for the whole layer, not one per block: each change of OpenBLAS's setting wakes or parks its
        // threads.
        BLASThreads.raised(to: openBLASThreads) {
            var r0 = 0
            while r0 < out {
                let nr = min(rowsPerBlock, out - r0)
                let block = UnsafeMutableBufferPointer(rebasing: scratch[0..<(nr * inF)])
                fill(r0, nr, block)
                BLAS.linear(x: x.baseAddress, batch: batch, inFeatures: inF, w: UnsafePointer(block.baseAddress),
                            rows: nr, bias: bias.map { $0 + r0 }, y: y.baseAddress.map { $0 + r0 }, ldy: out,
                            smallKernel: openBLASThreads == 1)
                r0 += nr
            }
        }
    }
}

/// Calls `body` with a pointer to the array's storage, or nil for a nil array.
func withOptionalPointer<R>(_ array: [Float]?, _ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
    if let array {
        return try array.withUnsafeBufferPointer { try body($0.baseAddress) }
    }
    return try body(nil)
}
