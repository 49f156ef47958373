import CComputeKernels

extension SmallBatchKernel {
    /// `y[i·rows + r] += Σ_c W[r, c] · x[i·cols + c]` (times the row scale for int8) by the small-batch kernels
    /// alone, whatever the batch limits say, split across `threads` threads: what `jobfarm bench blas --only kernels`
    /// times per instruction set. `weight` is `rows × cols` in any precision; `x` holds `batch` rows of `cols`, `y`
    /// `batch` rows of `rows`.
    public static func accumulate(weight: Tensor, x: UnsafeBufferPointer<Float>, batch: Int,
                                  into y: UnsafeMutableBufferPointer<Float>, threads: Int = 1) {
        precondition(weight.shape.count == 2, "a weight matrix has two dimensions, this one has \(weight.shape.count)")
        let rows = weight.shape[0], cols = weight.shape[1]
        precondition(x.count >= batch * cols && y.count >= batch * rows, "x or y is shorter than batch × its row length")
        guard batch > 0, rows > 0, cols > 0, let xp = x.baseAddress, let yp = y.baseAddress else { return }
        let threads = max(1, threads)
        switch weight.storage {
        case .float32(let w):
            w.withUnsafeBufferPointer { ck_gemm_small_f32_mt($0.baseAddress, rows, cols, xp, cols, batch, yp, rows, threads) }
        case .float16(let w):
            w.withUnsafeBufferPointer { wp in
                wp.withMemoryRebound(to: UInt16.self) { ck_gemm_small_f16_mt($0.baseAddress, rows, cols, xp, cols, batch, yp, rows, threads) }
            }
        case .int8(let q, let scales):
            q.withUnsafeBufferPointer { qp in
                scales.withUnsafeBufferPointer { sp in
                    ck_gemm_small_i8_mt(qp.baseAddress, sp.baseAddress, rows, cols, xp, cols, batch, yp, rows, threads)
                }
            }
        }
    }
}
