import COpenBLAS

/// Plain `cblas_sgemm` / `cblas_sgemv` calls on row-major buffers, for the benchmarks and probes that measure
/// OpenBLAS itself against the farm's own paths (everything else goes through `BLAS`). No checks: the caller
/// passes buffers of the stated shapes.
public enum RawBLAS {
    /// `c[m,n] = a[m,k] · b`, where `b` is `n×k` used transposed when `transposeB`, else `k×n`.
    public static func sgemm(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, transposeB: Bool, c: UnsafeMutablePointer<Float>
    ) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), 1,
                    a, Int32(k), b, Int32(transposeB ? k : n), 0, c, Int32(n))
    }

    /// `y[rows] = a[rows,cols] · x[cols]`.
    public static func sgemv(rows: Int, cols: Int, a: UnsafePointer<Float>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, a, Int32(cols), x, 1, 0, y, 1)
    }
}
