import Foundation

// The small-batch limits of FP16 and int8 layers.
//
// An FP32 layer's alternative to the farm's kernel is `sgemm` on the stored weights. An FP16 or int8 layer's is
// converting its weights to FP32 block by block and then `sgemm` on each block (`DenseLayer.blocked`): the
// conversion reads the compressed weights and writes twice or four times as many bytes on one thread, whatever the
// batch. So the kernel, which reads the compressed weights once, keeps its lead to much larger batches than FP32's,
// and FP32's limits sent FP16 and int8 passes to the conversion too early (a 2-thread 16-row pass of the bench model
// at 12× its roofline bound). These limits are measured the same way, on the layer code itself.

extension SmallBatchKernel {
    /// What `calibrate(precision:threads:)` found for one size class.
    public struct PrecisionCalibration: Sendable, CustomStringConvertible {
        public let precision: Precision
        public let sizeClass: SizeClass
        public let threads: Int
        /// The largest batch from two rows up to which the kernel beat converting and OpenBLAS (0: it lost at two).
        public let limit: Int
        /// (batch, kernel seconds, convert-and-OpenBLAS seconds) per batch timed.
        public let timings: [(batch: Int, kernel: Double, openBLAS: Double)]

        public var description: String {
            "\(precision) \(sizeClass), \(threads) thread\(threads == 1 ? "" : "s"): kernel up to \(limit) rows ("
                + timings.map { String(format: "%d: %.2fx", $0.batch, $0.openBLAS / max($0.kernel, 1e-12)) }.joined(separator: ", ")
                + " convert+OpenBLAS/kernel)"
        }
    }

    /// The batches an FP16 or int8 calibration times, in order, until the kernel first loses.
    public static let precisionCalibrationBatches = [2, 4, 8, 16, 24, 32, 48, 64, 96, 128]

    /// Times an FP16 or int8 layer's two paths on `threads` threads, the farm's kernel (split across the threads
    /// when more than one) against converting the weights and OpenBLAS on as many threads, for `batches` on one
    /// matrix per size class until the kernel first loses, and sets that precision's limits (one-thread limits for
    /// `threads` 1, split limits above) to the largest batch up to which the kernel never lost. FP32 is
    /// `calibrate()` / `calibrateSplit(threads:)`: nothing is done for it here. Set OpenBLAS to one thread first,
    /// as workers do; the setting is restored. About 0.5 s of `threads` cores per precision.
    @discardableResult
    public static func calibrate(precision: Precision, threads: Int, batches: [Int] = precisionCalibrationBatches,
                                 minTime: Double = 0.004) -> [PrecisionCalibration] {
        guard accelerated, precision != .fp32, threads >= 1 else { return [] }
        let saved = BLASThreads.current
        defer { BLASThreads.set(saved) }
        BLASThreads.set(1)
        let timed = batches.filter { $0 >= 2 && $0 <= maxSplitBatch }.sorted()
        let maxBatch = timed.last ?? 2
        var rng = SeededRandom(seed: 13)
        var results: [PrecisionCalibration] = []
        for sizeClass in SizeClass.allCases {
            let (rows, cols) = sizeClass.calibrationShape
            guard let layer = try? calibrationLayer(precision: precision, rows: rows, cols: cols, rng: &rng) else { continue }
            let xMax = (0..<(maxBatch * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
            var timings: [(batch: Int, kernel: Double, openBLAS: Double)] = []
            for batch in timed {
                let x = Array(xMax[0..<(batch * cols)])
                let kernel = bestTime(minTime) { _ = try? layer.evaluate(x, batch: batch, applyActivation: false, threads: threads, path: .kernel) }
                let openBLAS = bestTime(minTime) { _ = try? layer.evaluate(x, batch: batch, applyActivation: false, threads: threads, path: .openBLAS) }
                timings.append((batch, kernel, openBLAS))
                if kernel > openBLAS { break }
            }
            let lead = timings.prefix { $0.kernel <= $0.openBLAS }.last?.batch ?? 0
            results.append(PrecisionCalibration(precision: precision, sizeClass: sizeClass, threads: threads, limit: lead, timings: timings))
        }
        guard results.count == SizeClass.allCases.count else { return results }
        if threads == 1 {
            setLimits(results.map(\.limit), precision: precision)
        } else {
            setSplitLimits(results.map(\.limit), threads: threads, precision: precision)
        }
        return results
    }

    /// A `rows × cols` layer of random weights in `precision`, no bias.
    static func calibrationLayer(precision: Precision, rows: Int, cols: Int, rng: inout SeededRandom) throws -> DenseLayer {
        let values = (0..<(rows * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
        let fp32 = try Tensor(shape: [rows, cols], float32: values)
        let weight: Tensor
        switch precision {
        case .fp32: weight = fp32
        case .fp16: weight = try Tensor(shape: [rows, cols], float16: values.map { Float16($0) })
        case .int8: weight = try Quantization.int8PerChannel(fp32)
        }
        return try DenseLayer(weight: weight, bias: nil, activation: .none)
    }
}
