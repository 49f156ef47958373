import Foundation

/// Activation math shared by inference (`MLPModel`) and training (`MLPTrainer`).
enum ActivationMath {
    /// Applies `activation` in place to a `rows × cols` row-major buffer.
    static func apply(_ activation: Activation, to y: UnsafeMutableBufferPointer<Float>, rows: Int, cols: Int) {
        guard let p = y.baseAddress else { return }
        let n = rows * cols
        switch activation {
        case .none:
            return
        case .relu:
            // A select, not a branch: the compiler vectorises it, and a branch on the sign of GEMM output
            // mispredicts about every other element (NaN stays NaN, as before).
            for i in 0..<n { p[i] = p[i] < 0 ? 0 : p[i] }
        case .tanh:
            for i in 0..<n { p[i] = Float(Foundation.tanh(Double(p[i]))) }
        case .sigmoid:
            for i in 0..<n { p[i] = Float(1 / (1 + Foundation.exp(-Double(p[i])))) }
        case .gelu:
            // Exact GELU (PyTorch default): 0.5·x·(1 + erf(x/√2)).
            for i in 0..<n {
                let x = Double(p[i])
                p[i] = Float(0.5 * x * (1 + Foundation.erf(x * 0.7071067811865476)))
            }
        case .softmax:
            softmaxRows(y, rows: rows, cols: cols)
        }
    }

    /// Numerically stable row-wise softmax in place.
    static func softmaxRows(_ y: UnsafeMutableBufferPointer<Float>, rows: Int, cols: Int) {
        guard let p = y.baseAddress, cols > 0 else { return }
        for r in 0..<rows {
            let row = p + r * cols
            var m = row[0]
            for j in 1..<max(1, cols) where row[j] > m { m = row[j] }
            var sum: Double = 0
            for j in 0..<cols {
                let e = Foundation.exp(Double(row[j] - m))
                row[j] = Float(e)
                sum += e
            }
            let inv = Float(1 / sum)
            for j in 0..<cols { row[j] *= inv }
        }
    }

    /// Multiplies `grad` in place by the derivative of `activation`, given the
    /// pre-activation `z` and post-activation `a` (softmax is not handled here).
    static func backward(_ activation: Activation, z: UnsafeBufferPointer<Float>, a: UnsafeBufferPointer<Float>,
                         grad: UnsafeMutableBufferPointer<Float>) {
        guard let g = grad.baseAddress, let zp = z.baseAddress, let ap = a.baseAddress else { return }
        let n = grad.count
        switch activation {
        case .none, .softmax:
            return
        case .relu:
            for i in 0..<n { g[i] = zp[i] <= 0 ? 0 : g[i] }  // a select: vectorised, no mispredicted branch
        case .tanh:
            for i in 0..<n { g[i] *= 1 - ap[i] * ap[i] }
        case .sigmoid:
            for i in 0..<n { g[i] *= ap[i] * (1 - ap[i]) }
        case .gelu:
            for i in 0..<n {
                let x = Double(zp[i])
                let cdf = 0.5 * (1 + Foundation.erf(x * 0.7071067811865476))
                let pdf = Foundation.exp(-0.5 * x * x) * 0.3989422804014327
                g[i] *= Float(cdf + x * pdf)
            }
        }
    }
}
