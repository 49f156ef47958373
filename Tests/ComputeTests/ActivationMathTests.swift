import Testing
@testable import Compute

/// ReLU runs as a select (vectorised) rather than a branch on each element's sign: the same values, whatever the
/// length (vector bodies and tails), NaN kept.
@Suite struct ActivationMathTests {
    @Test(arguments: [1, 7, 8, 17, 1000])
    func reluZeroesNegativesOnlyAtEveryLength(count: Int) {
        var rng = SeededRandom(seed: UInt64(count))
        var values = (0..<count).map { _ in rng.nextUnitFloat() * 2 - 1 }
        if count > 3 { values[1] = .nan; values[2] = -0.0; values[3] = -.infinity }
        let expected = values.map { $0 < 0 ? Float(0) : $0 }
        values.withUnsafeMutableBufferPointer { ActivationMath.apply(.relu, to: $0, rows: 1, cols: count) }
        for (got, want) in zip(values, expected) {
            #expect(got.bitPattern == want.bitPattern || (got.isNaN && want.isNaN), "\(got) vs \(want)")
        }
    }

    @Test func reluGradientIsZeroWherePreActivationIsNotPositive() {
        let z: [Float] = [-1, 0, 2, -0.0, 3, -5, 0.5, 1, -2]
        let a = z.map { max($0, 0) }
        var grad = [Float](repeating: 1.5, count: z.count)
        z.withUnsafeBufferPointer { zp in
            a.withUnsafeBufferPointer { ap in
                grad.withUnsafeMutableBufferPointer { ActivationMath.backward(.relu, z: zp, a: ap, grad: $0) }
            }
        }
        #expect(grad == z.map { $0 <= 0 ? 0 : 1.5 })
    }
}
