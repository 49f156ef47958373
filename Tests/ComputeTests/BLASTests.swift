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

/// Serialized: some of its tests (and `SplitPasses` below) change the process-wide OpenBLAS thread setting.
@Suite(.serialized) struct BLASTests {
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

/// Models whose layers go through the small-batch kernels (`ck_gemm_small_*`, below sgemm's crossover) give the
/// naive reference's products, with and without the split across threads. The kernels' every tail is covered by
/// `SmallBatchKernelCTests`, which calls the C entry points directly.
@Suite struct SmallBatchKernelTests {
    static let shapes: [(out: Int, inF: Int, batch: Int)] = [
        (23, 37, 2), (4, 8, 3), (5, 7, 4), (130, 1029, 5), (67, 520, 8), (9, 3, 16), (33, 100, 50), (1, 1, 2),
    ]

    @Test(arguments: 0..<shapes.count)
    func fp32MatchesReference(_ index: Int) throws {
        let (out, inF, batch) = Self.shapes[index]
        var rng = SeededRandom(seed: UInt64(index + 100))
        let x = (0..<(batch * inF)).map { _ in rng.nextUnitFloat() - 0.5 }
        let w = (0..<(out * inF)).map { _ in rng.nextUnitFloat() - 0.5 }
        let bias = (0..<out).map { _ in rng.nextUnitFloat() }
        let ref = referenceLinear(x, batch: batch, w, out: out, inF: inF, bias: bias)
        let model = try MLPModel(
            config: ModelConfig(layers: [DenseLayerConfig(weight: "w", bias: "b", activation: .none)]),
            tensors: ["w": Tensor(shape: [out, inF], float32: w), "b": Tensor(shape: [out], float32: bias)])
        for threads in [1, 2, 3] {
            let y = try model.logits(rows: x, batch: batch, threads: threads)
            #expect(maxNormRelativeError(y.map(Double.init), ref) < 1e-5, "threads \(threads)")
        }
    }

    @Test func compressedWeightsMatchTheirFP32Expansion() throws {
        var rng = SeededRandom(seed: 7)
        let out = 70, inF = 530, batch = 7
        let x = (0..<(batch * inF)).map { _ in rng.nextUnitFloat() - 0.5 }
        let w = (0..<(out * inF)).map { _ in rng.nextUnitFloat() - 0.5 }
        let model = try MLPModel(
            config: ModelConfig(layers: [DenseLayerConfig(weight: "w", bias: nil, activation: .none)]),
            tensors: ["w": Tensor(shape: [out, inF], float32: w)])
        for precision in [Precision.fp16, .int8] {
            let compressed = try Quantization.convert(model, to: precision).model
            // The reference: the compressed weights expanded to FP32, multiplied in Double.
            let expanded = compressed.layers[0].weight.floats()
            let ref = referenceLinear(x, batch: batch, expanded, out: out, inF: inF, bias: nil)
            #expect(SmallBatchKernel.preferred(batch: batch, rows: out, cols: inF) == SmallBatchKernel.accelerated)
            for threads in [1, 2] {
                let y = try compressed.logits(rows: x, batch: batch, threads: threads)
                #expect(maxNormRelativeError(y.map(Double.init), ref) < 1e-5, "\(precision) threads \(threads)")
            }
        }
    }

    @Test func batchLimitGrowsWithTheWeights() {
        for (sizeClass, value) in zip(SmallBatchKernel.SizeClass.allCases, SmallBatchKernel.defaultLimits) {
            SmallBatchKernel.setLimit(value, for: sizeClass)
        }
        #expect(SmallBatchKernel.batchLimit(rows: 64, cols: 64, openBLASThreads: 1) == 8)
        #expect(SmallBatchKernel.batchLimit(rows: 1024, cols: 1024, openBLASThreads: 1) == 16)
        #expect(SmallBatchKernel.batchLimit(rows: 4096, cols: 4096, openBLASThreads: 1) == 32)
        #expect(SmallBatchKernel.batchLimit(rows: 4096, cols: 4096, openBLASThreads: 2) == 8)  // sgemm runs on 2 cores
        #expect(SmallBatchKernel.batchLimit(rows: 4096, cols: 4096, threads: 2, openBLASThreads: 2) == 64)
        #expect(!SmallBatchKernel.preferred(batch: 1, rows: 4096, cols: 4096))  // one row keeps sgemv
    }
}

/// The worker's start-up measurement of where the small-batch kernel stops beating `sgemm`.
@Suite struct SmallBatchCalibrationTests {
    @Test(.enabled(if: SmallBatchKernel.accelerated, "no AVX2/FMA/F16C on this CPU: nothing to calibrate"))
    func calibrationMeasuresEveryClassAndSetsItsLimit() throws {
        defer {
            for (sizeClass, value) in zip(SmallBatchKernel.SizeClass.allCases, SmallBatchKernel.defaultLimits) {
                SmallBatchKernel.setLimit(value, for: sizeClass)
            }
        }
        let previous = BLASThreads.current
        BLASThreads.set(1)
        defer { BLASThreads.set(previous) }
        let results = SmallBatchKernel.calibrate(batches: [2, 4, 8, 16], minTime: 0.001)
        #expect(results.map(\.sizeClass) == SmallBatchKernel.SizeClass.allCases)
        for result in results {
            #expect((2...16).contains(result.limit))
            #expect(SmallBatchKernel.limit(result.sizeClass) == result.limit)
            // Timed in order until the kernel first lost: bigger batches are not timed after that.
            let timed = result.timings.map(\.batch)
            #expect(!timed.isEmpty && timed == Array([2, 4, 8, 16].prefix(timed.count)))
            #expect(timed.count == 4 || result.timings.last.map { $0.small > $0.sgemm } == true)
            #expect(result.timings.allSatisfy { $0.small > 0 && $0.sgemm > 0 })
            // The limit is the end of the leading run of batches where the kernel was not slower.
            let lead = result.timings.prefix { $0.small <= $0.sgemm }.last?.batch ?? 1
            #expect(result.limit == max(2, lead))
        }
        // Who wins is not asserted: it is what is being measured, and a debug build compiles the kernels at -O0
        // (there sgemm wins everywhere and every limit falls to 2; release builds measure 8–32 on this project's VMs).
    }
}
