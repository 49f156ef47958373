import CComputeKernels

/// Fused single-row products over FP16 / int8 weights (CComputeKernels `ck_gemv_*`).
///
/// For one input row the weights are read once, so converting them to FP32
/// first would double the memory traffic; these kernels convert in registers
/// (F16C / `vpmovsxbd`) and accumulate with FMA.
enum CompressedGEMV {
    /// `y[r] += Σ_c w[r, c] · x[c]` for FP16 `w` (`rows × cols`).
    static func f16(_ w: UnsafeBufferPointer<Float16>, rows: Int, cols: Int,
                    x: UnsafeBufferPointer<Float>, y: UnsafeMutableBufferPointer<Float>) {
        precondition(w.count >= rows * cols && x.count >= cols && y.count >= rows)
        guard rows > 0, cols > 0, let wp = w.baseAddress, let xp = x.baseAddress, let yp = y.baseAddress else { return }
        wp.withMemoryRebound(to: UInt16.self, capacity: rows * cols) { bits in
            ck_gemv_f16(bits, rows, cols, xp, yp)
        }
    }

    /// `y[r] += scales[r] · Σ_c q[r, c] · x[c]` for int8 `q` (`rows × cols`).
    static func i8(_ q: UnsafeBufferPointer<Int8>, scales: [Float], rows: Int, cols: Int,
                   x: UnsafeBufferPointer<Float>, y: UnsafeMutableBufferPointer<Float>) {
        precondition(q.count >= rows * cols && scales.count >= rows && x.count >= cols && y.count >= rows)
        guard rows > 0, cols > 0, let qp = q.baseAddress, let xp = x.baseAddress, let yp = y.baseAddress else { return }
        scales.withUnsafeBufferPointer { sp in
            ck_gemv_i8(qp, sp.baseAddress, rows, cols, xp, yp)
        }
    }
}
