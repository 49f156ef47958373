import CComputeKernels
import Testing
@testable import Compute

/// The C entry points of the small-batch kernels, called directly (the model-level tests only reach the shapes the
/// batch limits let through): every tail — rows not a multiple of 4 or 8, columns not a multiple of 8 or 16 or of the
/// 512-column block, batches around the 3-row tile, the 8-row limit of reading FP32 weights in place and the 64-row
/// sweep — for FP32, FP16 and int8 weights, on 1 to 5 threads, with every instruction set this CPU has (capped one
/// after the other: the scalar, AVX2 and AVX-512 paths are each checked wherever the CPU runs them).
@Suite(.serialized) struct SmallBatchKernelCTests {
    static let shapes: [(rows: Int, cols: Int, batch: Int)] = [
        (1, 7, 1), (3, 8, 2), (4, 520, 3), (5, 1029, 47), (130, 7, 64), (130, 520, 65), (67, 1029, 97), (9, 8, 49),
        (130, 1029, 5), (256, 64, 1), (13, 48, 8), (16, 1040, 4), (24, 1040, 9),
    ]

    /// y += W·x in Double for `rows × cols` weights `w` (already expanded to FP32), `batch` rows of x.
    static func reference(_ w: [Float], scales: [Float]?, rows: Int, cols: Int, x: [Float], batch: Int, y0: [Float]) -> [Double] {
        var y = y0.map(Double.init)
        for i in 0..<batch {
            for r in 0..<rows {
                var s = 0.0
                for c in 0..<cols { s += Double(w[r * cols + c]) * Double(x[i * cols + c]) }
                y[i * rows + r] += s * Double(scales?[r] ?? 1)
            }
        }
        return y
    }

    @Test(arguments: 0..<shapes.count)
    func everyKindAndThreadCountMatchesTheReference(_ index: Int) {
        let (rows, cols, batch) = Self.shapes[index]
        var rng = SeededRandom(seed: UInt64(1000 + index))
        let x = (0..<(batch * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        let y0 = (0..<(batch * rows)).map { _ in rng.nextUnitFloat() }  // the kernels accumulate into y
        let w32 = (0..<(rows * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        let w16 = w32.map { Float16($0) }
        let q = (0..<(rows * cols)).map { _ in Int8(truncatingIfNeeded: Int(rng.nextUnitFloat() * 255) - 127) }
        let scales = (0..<rows).map { _ in rng.nextUnitFloat() * 0.02 + 0.001 }
        let expected: [(String, [Double])] = [
            ("f32", Self.reference(w32, scales: nil, rows: rows, cols: cols, x: x, batch: batch, y0: y0)),
            ("f16", Self.reference(w16.map(Float.init), scales: nil, rows: rows, cols: cols, x: x, batch: batch, y0: y0)),
            ("i8", Self.reference(q.map(Float.init), scales: scales, rows: rows, cols: cols, x: x, batch: batch, y0: y0)),
        ]
        let best = SmallBatchKernel.limitInstructionSet(.avx512)
        defer { SmallBatchKernel.limitInstructionSet(.avx512) }
        for isa in SmallBatchKernel.InstructionSet.allCases where isa <= best {
            #expect(SmallBatchKernel.limitInstructionSet(isa) == isa)
            for threads in [1, 2, 3, 5] {
                for (kind, want) in expected {
                    var y = y0
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { yp in
                            switch kind {
                            case "f32":
                                w32.withUnsafeBufferPointer {
                                    ck_gemm_small_f32_mt($0.baseAddress, rows, cols, xp.baseAddress, cols, batch, yp.baseAddress, rows, threads)
                                }
                            case "f16":
                                w16.withUnsafeBufferPointer { wp in
                                    wp.withMemoryRebound(to: UInt16.self) {
                                        ck_gemm_small_f16_mt($0.baseAddress, rows, cols, xp.baseAddress, cols, batch, yp.baseAddress, rows, threads)
                                    }
                                }
                            default:
                                q.withUnsafeBufferPointer { qp in
                                    scales.withUnsafeBufferPointer { sp in
                                        ck_gemm_small_i8_mt(qp.baseAddress, sp.baseAddress, rows, cols, xp.baseAddress, cols, batch, yp.baseAddress, rows, threads)
                                    }
                                }
                            }
                        }
                    }
                    #expect(maxNormRelativeError(y.map(Double.init), want) < 1e-5, "\(kind) \(rows)×\(cols) batch \(batch) threads \(threads) \(isa)")
                }
            }
        }
    }

    /// A later call asking for fewer threads than an earlier one still computes every row once (the extra helpers
    /// stay out), and calls from several threads at once are serialised correctly.
    @Test func fewerThreadsAfterMoreAndConcurrentCallers() async {
        let rows = 200, cols = 300, batch = 4
        var rng = SeededRandom(seed: 77)
        let w = (0..<(rows * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        let x = (0..<(batch * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        let want = Self.reference(w, scales: nil, rows: rows, cols: cols, x: x, batch: batch, y0: [Float](repeating: 0, count: batch * rows))
        func run(_ threads: Int) -> [Float] {
            var y = [Float](repeating: 0, count: batch * rows)
            w.withUnsafeBufferPointer { wp in
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        ck_gemm_small_f32_mt(wp.baseAddress, rows, cols, xp.baseAddress, cols, batch, yp.baseAddress, rows, threads)
                    }
                }
            }
            return y
        }
        for threads in [6, 2, 1, 4] {
            #expect(maxNormRelativeError(run(threads).map(Double.init), want) < 1e-5)
        }
        let results = await withTaskGroup(of: [Float].self) { group in
            for i in 0..<8 { group.addTask { run(2 + i % 3) } }
            return await group.reduce(into: [[Float]]()) { $0.append($1) }
        }
        #expect(results.count == 8)
        for y in results { #expect(maxNormRelativeError(y.map(Double.init), want) < 1e-5) }
    }
}
