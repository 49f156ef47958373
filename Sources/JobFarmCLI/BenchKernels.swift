import Compute
import Foundation

extension BenchBLASCommand {
    /// `--only kernels`: the small-batch kernels alone on one 4096 × 4096 layer, GFLOP/s per instruction set this CPU
    /// has (capped one after the other) and weight precision, beside raw `cblas_sgemm` on the same weights as FP32 in
    /// the same run.
    func kernels() throws {
        let rows = 4096, cols = 4096, maxBatch = 128
        var rng = SeededRandom(seed: 5)
        let w32 = try Tensor(shape: [rows, cols], float32: (0..<(rows * cols)).map { _ in rng.nextUnitFloat() - 0.5 })
        let weights: [(String, Tensor)] = [("fp32", w32), ("fp16", w32.toFloat16()), ("int8", try Quantization.int8PerChannel(w32))]
        let w32values = w32.floats()
        let x = (0..<(maxBatch * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        var y = [Float](repeating: 0, count: maxBatch * rows)
        let best = SmallBatchKernel.limitInstructionSet(.avx512)
        defer { SmallBatchKernel.limitInstructionSet(.avx512) }
        let sets = SmallBatchKernel.InstructionSet.allCases.filter { $0 <= best && $0 > .scalar }
        guard !sets.isEmpty else {
            print("small-batch kernels: not vectorised on this CPU (no AVX2/FMA/F16C): sgemm is used\n")
            return
        }
        print("Small-batch kernels alone, one \(rows)×\(cols) layer, \(BLASThreads.current) OpenBLAS thread(s) and 1 kernel thread, GFLOP/s (best of 3 interleaved rounds)")
        print("raw = cblas_sgemm on the FP32 weights; each kernel column ÷ raw in brackets")
        var header = "batch |    raw"
        for (name, _) in weights { for isa in sets { header += String(format: " | %@ %@", name, isa.description.padding(toLength: 7, withPad: " ", startingAt: 0)) } }
        print(header)
        for batch in [1, 2, 4, 8, 16, 32, 64, 128] {
            let flops = 2.0 * Double(batch * rows * cols)
            var bodies: [() throws -> Void] = []
            bodies.append {
                x.withUnsafeBufferPointer { xp in
                    w32values.withUnsafeBufferPointer { wp in
                        y.withUnsafeMutableBufferPointer { yp in
                            RawBLAS.sgemm(m: batch, n: rows, k: cols, a: xp.baseAddress!, b: wp.baseAddress!, transposeB: true, c: yp.baseAddress!)
                        }
                    }
                }
            }
            for (_, weight) in weights {
                for isa in sets {
                    bodies.append {
                        SmallBatchKernel.limitInstructionSet(isa)
                        x.withUnsafeBufferPointer { xp in
                            y.withUnsafeMutableBufferPointer { yp in
                                SmallBatchKernel.accumulate(weight: weight, x: xp, batch: batch, into: yp)
                            }
                        }
                    }
                }
            }
            let times = try BenchTiming.interleaved(rounds: 3, minTime: 0.03, bodies)
            let raw = flops / times[0] / 1e9
            var line = String(format: "%5d | %6.1f", batch, raw)
            for t in times.dropFirst() {
                let rate = flops / t / 1e9
                line += String(format: " | %6.1f (%4.2f)", rate, rate / raw)
            }
            print(line)
        }
        print("")
    }
}
