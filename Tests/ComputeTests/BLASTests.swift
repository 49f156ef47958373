import Testing
@testable import Compute

/// Naive reference: y[b, o] = Σ_i x[b, i] w[o, i] + bias[o], in Double.
private func referenceLinear(_ x: [Float], batch: Int, _ w: [Float], out: Int, inF: Int, bias: [Float]?) -> [Double] {
    var y = [Double](repeating: 0, count: batch * out)
    for b in 0..<batch {
        for o in 0..<out {
            var s = Double(bias?[o] ?? 0)
            for i in 0..<inF { s += Double(x[b * inF + i]) * Double(w[o * inF + i]) }
            y[b * out + o] = s
        }
    }
    return y
}

@Suite struct BLASTests {
    @Test(arguments: [1, 3, 17])
    func linearMatchesReference(batch: Int) throws {
        var rng = SeededRandom(seed: UInt64(batch))
        let inF = 37, out = 23
        let x = (0..<(batch * inF)).map { _ in rng.nextUnitFloat() - 0.5 }
        let w = (0..<(out * inF)).map { _ in rng.nextUnitFloat() - 0.5 }
        let bias = (0..<out).map { _ in rng.nextUnitFloat() }
        let y = try BLAS.linear(input: x, batch: batch, weight: w, outFeatures: out, inFeatures: inF, bias: bias)
        let ref = referenceLinear(x, batch: batch, w, out: out, inF: inF, bias: bias)
        #expect(maxNormRelativeError(y.map(Double.init), ref) < 1e-5)
        let noBias = try BLAS.linear(input: x, batch: batch, weight: w, outFeatures: out, inFeatures: inF)
        let ref0 = referenceLinear(x, batch: batch, w, out: out, inF: inF, bias: nil)
        #expect(maxNormRelativeError(noBias.map(Double.init), ref0) < 1e-5)
    }

    @Test func gemmTransposes() throws {
        // a: 2×3, b: 3×2 → c = a·b ; and aᵀ stored as 3×2.
        let a: [Float] = [1, 2, 3, 4, 5, 6]
        let b: [Float] = [7, 8, 9, 10, 11, 12]
        var c = [Float](repeating: 0, count: 4)
        try BLAS.gemm(a, b, into: &c, m: 2, n: 2, k: 3)
        #expect(c == [58, 64, 139, 154])
        let at: [Float] = [1, 4, 2, 5, 3, 6]
        var c2 = [Float](repeating: 1, count: 4)
        try BLAS.gemm(at, b, into: &c2, m: 2, n: 2, k: 3, transposeA: true, beta: 1)
        #expect(c2 == [59, 65, 140, 155])
        #expect(computeError { try BLAS.gemm(a, b, into: &c, m: 2, n: 3, k: 3) } != nil)
    }

    @Test func linearRejectsBadShapes() {
        let e = computeError { _ = try BLAS.linear(input: [1, 2, 3], batch: 1, weight: [1, 2], outFeatures: 1, inFeatures: 2) }
        #expect(e?.message.contains("input has 3 elements") == true)
    }

    @Test func threadsAndInfo() {
        let before = BLASThreads.current
        BLASThreads.set(1)
        #expect(BLASThreads.current == 1)
        BLASThreads.set(before)
        #expect(BLASThreads.current == before)
        #expect(!BLASInfo.coreName.isEmpty)
        #expect(BLASInfo.config.contains("OpenBLAS"))
    }
}
