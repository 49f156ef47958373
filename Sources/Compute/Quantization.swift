/// Error and size figures for one converted tensor.
public struct TensorQuantizationReport: Sendable, Equatable {
    /// Tensor name from the model config.
    public let name: String
    /// Element type after conversion.
    public let dtype: DType
    /// Storage bytes before conversion (FP32).
    public let bytesBefore: Int
    /// Storage bytes after conversion (int8 scales included).
    public let bytesAfter: Int
    /// Largest |original − reconstructed| over all elements (pruning included).
    public let maxAbsError: Float
    /// Mean |original − reconstructed| over all elements (pruning included).
    public let meanAbsError: Float
    /// Fraction of elements that are exactly zero after conversion.
    public let sparsity: Double
}

/// Totals over a model conversion.
public struct QuantizationReport: Sendable, Equatable {
    /// One entry per weight and bias tensor, in layer order.
    public let tensors: [TensorQuantizationReport]
    /// Total bytes before.
    public var bytesBefore: Int { tensors.reduce(0) { $0 + $1.bytesBefore } }
    /// Total bytes after.
    public var bytesAfter: Int { tensors.reduce(0) { $0 + $1.bytesAfter } }
    /// `bytesAfter / bytesBefore`.
    public var sizeRatio: Double { bytesBefore == 0 ? 0 : Double(bytesAfter) / Double(bytesBefore) }
}

/// Post-training conversion of FP32 models to FP16 or per-channel int8, with optional pruning.
public enum Quantization {
    /// Symmetric per-output-channel int8: for each row `r` of a 2-D (or higher) tensor,
    /// `scale[r] = max|w[r, :]| / 127` and `q = round(w / scale)` (ties to even), clamped to ±127.
    /// An all-zero row gets scale 0.
    public static func int8PerChannel(_ tensor: Tensor) throws -> Tensor {
        let w = tensor.floats()
        guard let i = w.firstIndex(where: { !$0.isFinite }) else {
            let rows = tensor.shape.first ?? 1
            let len = rows == 0 ? 0 : w.count / rows
            var q = [Int8](repeating: 0, count: w.count)
            var scales = [Float](repeating: 0, count: rows)
            for r in 0..<rows {
                var m: Float = 0
                for c in 0..<len { m = max(m, abs(w[r * len + c])) }
                let scale = m / 127
                scales[r] = scale
                guard scale > 0 else { continue }
                let inv = 1 / scale
                for c in 0..<len {
                    let v = (w[r * len + c] * inv).rounded(.toNearestOrEven)
                    q[r * len + c] = Int8(max(-127, min(127, v)))
                }
            }
            return try Tensor(shape: tensor.shape, int8: q, scales: scales)
        }
        throw ComputeError.nonFiniteValue("cannot quantise: element \(i) is \(w[i])")
    }

    /// Magnitude pruning: zeroes the `floor(sparsity × count)` elements with the
    /// smallest |value| (ties broken by position). Returns an FP32 tensor.
    public static func prune(_ tensor: Tensor, sparsity: Double) throws -> Tensor {
        guard sparsity >= 0, sparsity < 1 else {
            throw ComputeError.invalidArgument("pruning sparsity must be in [0, 1), got \(sparsity)")
        }
        var w = tensor.floats()
        let k = Int((sparsity * Double(w.count)).rounded(.down))
        if k > 0 {
            let order = w.indices.sorted { a, b in
                let x = abs(w[a]), y = abs(w[b])
                return x != y ? x < y : a < b
            }
            for i in order.prefix(k) { w[i] = 0 }
        }
        return try Tensor(shape: tensor.shape, float32: w)
    }

    /// Converts every layer of `model` to `precision`. Weights become FP16 or int8
    /// (after optional magnitude pruning to `pruneSparsity`); biases become FP16 for
    /// `.fp16` and stay FP32 for `.int8`/`.fp32`. The report compares against the
    /// model's weights as FP32.
    public static func convert(_ model: MLPModel, to precision: Precision,
                               pruneSparsity: Double? = nil) throws -> (model: MLPModel, report: QuantizationReport) {
        var layers: [DenseLayer] = []
        var reports: [TensorQuantizationReport] = []
        for (layer, lc) in zip(model.layers, model.config.layers) {
            var w = layer.weight.toFloat32()
            let original = w
            if let s = pruneSparsity { w = try prune(w, sparsity: s) }
            let newW: Tensor
            switch precision {
            case .fp32: newW = w
            case .fp16: newW = w.toFloat16()
            case .int8: newW = try int8PerChannel(w)
            }
            reports.append(report(name: lc.weight, original: original, converted: newW))
            var newB: Tensor?
            if let b = layer.bias {
                let b32 = b.toFloat32()
                newB = precision == .fp16 ? b32.toFloat16() : b32
                if let nb = newB { reports.append(report(name: lc.bias ?? "bias", original: b32, converted: nb)) }
            }
            layers.append(try DenseLayer(weight: newW, bias: newB, activation: layer.activation))
        }
        return (try model.replacingLayers(layers), QuantizationReport(tensors: reports))
    }

    private static func report(name: String, original: Tensor, converted: Tensor) -> TensorQuantizationReport {
        let a = original.floats(), b = converted.floats()
        var maxErr: Float = 0, sumErr: Double = 0, zeros = 0
        for i in 0..<a.count {
            let e = abs(a[i] - b[i])
            maxErr = max(maxErr, e)
            sumErr += Double(e)
            if b[i] == 0 { zeros += 1 }
        }
        let n = max(1, a.count)
        return TensorQuantizationReport(name: name, dtype: converted.dtype, bytesBefore: a.count * 4,
                                        bytesAfter: converted.byteCount, maxAbsError: maxErr,
                                        meanAbsError: Float(sumErr / Double(n)), sparsity: Double(zeros) / Double(n))
    }
}
