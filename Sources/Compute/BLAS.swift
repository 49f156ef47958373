import CComputeKernels
import COpenBLAS
import Foundation
import Synchronization

/// Controls the number of threads OpenBLAS uses (process-wide).
public enum BLASThreads {
    /// Sets the OpenBLAS thread count (`openblas_set_num_threads`); values < 1 are clamped to 1.
    public static func set(_ count: Int) {
        openblas_set_num_threads(Int32(clamping: max(1, count)))
    }

    /// The current OpenBLAS thread count (`openblas_get_num_threads`).
    public static var current: Int { Int(openblas_get_num_threads()) }
}

/// Describes the OpenBLAS build in use.
public enum BLASInfo {
    /// Kernel family chosen at run time, e.g. "Haswell" (`openblas_get_corename`).
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p).trimmingSpaces()
    }

    /// Build configuration string, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ..." (`openblas_get_config`).
    public static var config: String {
        guard let p = openblas_get_config() else { return "unknown" }
        return String(cString: p).trimmingSpaces()
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\n" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\n" { s.removeLast() }
        return String(s)
    }
}

/// When the farm's small-batch kernels (`ck_gemm_small_*`) beat OpenBLAS's `sgemm` on the inference shape.
///
/// `sgemm` packs the whole weight matrix before multiplying; for a few input rows the packing costs more than the
/// product (measured here on a 4096 × 4096 layer: 12 ms at batch 2 where reading the weights once takes 3.3 ms).
/// The small kernels read each weight once and reach 40–50 GFLOP/s on one core, below `sgemm`'s 60–90 for big
/// batches, so they are used up to a batch limit that grows with the weight matrix (bigger matrices pay more for
/// packing): measured here, 8 rows under 1 MiB of FP32 weights, 16 under 16 MiB, 32 above (8 whenever OpenBLAS
/// runs more than one thread). A worker re-measures these limits on its own machine at start (`calibrate()`), since
/// they move with the CPU and the OpenBLAS kernels in use. A single row keeps `sgemv`.
/// `jobfarm bench blas --only passes` shows the farm's path beside raw `sgemm` for each batch.
public enum SmallBatchKernel {
    /// Whether the vectorised kernels run on this CPU (AVX2 + FMA + F16C); without them `sgemm` is always used.
    public static let accelerated = ck_gemm_small_accelerated() != 0

    /// The instruction sets the kernels are written for.
    public enum InstructionSet: Int, Sendable, CaseIterable, Comparable, CustomStringConvertible {
        /// Portable C.
        case scalar = 0
        /// AVX2 + FMA + F16C: 4 weight rows × 3 input rows of 8 lanes.
        case avx2 = 1
        /// AVX-512F: 8 weight rows × 3 input rows of 16 lanes, every operand of the inner loop 64-byte aligned.
        case avx512 = 2

        public var description: String { ["scalar", "AVX2", "AVX-512"][rawValue] }
        public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    }

    /// The instruction set the kernels use now: the best this CPU has, unless capped by `limitInstructionSet`.
    public static var instructionSet: InstructionSet { InstructionSet(rawValue: Int(ck_gemm_small_isa())) ?? .scalar }

    /// Caps the kernels' instruction set (process-wide; `.avx512` lifts the cap) and returns the one now in use. For
    /// comparing the paths on one machine: their results agree to rounding. Measured limits belong to the instruction
    /// set they were measured with (`SmallBatchLimitsCache.key`): calibrate again after a change.
    @discardableResult
    public static func limitInstructionSet(_ isa: InstructionSet) -> InstructionSet {
        InstructionSet(rawValue: Int(ck_gemm_small_limit_isa(Int32(isa.rawValue)))) ?? .scalar
    }

    /// The largest batch the small kernel takes for a `rows × cols` weight matrix, run on `threads` threads.
    /// `openBLASThreads` is the OpenBLAS setting sgemm would run with.
    ///
    /// `precision` is the layer's weights': FP16 and int8 layers have limits of their own (`calibrate(precision:threads:)`),
    /// since what the kernel competes with there is converting the weights to FP32 and then `sgemm`, not `sgemm`
    /// alone. Until measured they fall back to FP32's.
    public static func batchLimit(rows: Int, cols: Int, threads: Int = 1, openBLASThreads: Int = BLASThreads.current,
                                  precision: Precision = .fp32) -> Int {
        let sizeClass = SizeClass(rows: rows, cols: cols)
        if threads > 1, let measured = splitLimit(sizeClass, threads: threads, precision: precision) { return measured }
        if threads <= 1, precision != .fp32, let measured = measuredLimit(sizeClass, precision: precision) { return measured }
        // With more than one OpenBLAS thread, sgemm splits the work across cores while a one-thread kernel runs on
        // one: measured, sgemm wins from 16 rows there.
        if threads <= 1 && openBLASThreads > 1 { return min(8, limit(.small)) }
        // Not measured for this thread count: split across `threads` threads, the kernel keeps its lead up to about
        // `threads` times the one-thread limit.
        return min(64, limit(sizeClass) * max(1, threads))
    }

    /// The measured limit of a split pass on `threads` threads for a size class and weight precision
    /// (`calibrateSplit`, `calibrate(precision:threads:)`): the largest batch at which the split kernel beat
    /// OpenBLAS running on as many threads. 0: the split kernel lost even at two rows. Nil: not measured for this
    /// thread count; an FP16 or int8 layer then takes FP32's.
    public static func splitLimit(_ sizeClass: SizeClass, threads: Int, precision: Precision = .fp32) -> Int? {
        splitLimitTable.withLock { table in
            table[precision]?[threads]?[sizeClass.rawValue] ?? (precision == .fp32 ? nil : table[.fp32]?[threads]?[sizeClass.rawValue])
        }
    }

    /// Sets the split limits of a thread count and weight precision, one per size class (`SizeClass` order), each
    /// clamped to 0…`maxSplitBatch`.
    public static func setSplitLimits(_ limits: [Int], threads: Int, precision: Precision = .fp32) {
        guard threads > 1, limits.count == SizeClass.allCases.count else { return }
        splitLimitTable.withLock { $0[precision, default: [:]][threads] = limits.map { min(maxSplitBatch, max(0, $0)) } }
    }

    /// Every measured split limit of a weight precision, by thread count.
    public static func splitLimits(precision: Precision) -> [Int: [Int]] { splitLimitTable.withLock { $0[precision] ?? [:] } }

    /// Every measured FP32 split limit, by thread count.
    public static var splitLimits: [Int: [Int]] { splitLimits(precision: .fp32) }

    /// Forgets the measured split limits of every precision (back to the scaled one-thread limits).
    public static func clearSplitLimits() { splitLimitTable.withLock { $0 = [:] } }

    /// The measured one-thread limit of an FP16 or int8 layer's size class (nil: not measured, or FP32, whose
    /// limits are `limit(_:)`).
    public static func measuredLimit(_ sizeClass: SizeClass, precision: Precision) -> Int? {
        precisionLimitTable.withLock { $0[precision]?[sizeClass.rawValue] }
    }

    /// The one-thread limits of a weight precision in force, per size class (FP32's where not measured).
    public static func limits(precision: Precision) -> [Int] {
        SizeClass.allCases.map { precision == .fp32 ? limit($0) : measuredLimit($0, precision: precision) ?? limit($0) }
    }

    /// Sets the one-thread limits of FP16 or int8 layers, one per size class, each clamped to 0…`maxSplitBatch`
    /// (0 or 1: converting the weights and `sgemm` from two rows on). FP32 goes through `setLimits(_:)`.
    public static func setLimits(_ limits: [Int], precision: Precision) {
        guard limits.count == SizeClass.allCases.count else { return }
        if precision == .fp32 { setLimits(limits); return }
        precisionLimitTable.withLock { $0[precision] = limits.map { min(maxSplitBatch, max(0, $0)) } }
    }

    /// Forgets the measured one-thread limits of FP16 and int8 layers (back to FP32's).
    public static func clearPrecisionLimits() { precisionLimitTable.withLock { $0 = [:] } }

    /// The largest split limit a calibration can find (the largest batch it times).
    public static let maxSplitBatch = 128
    private static let splitLimitTable = Mutex<[Precision: [Int: [Int]]]>([:])
    private static let precisionLimitTable = Mutex<[Precision: [Int]]>([:])

    /// Weight matrices by FP32 size: what sets where `sgemm`'s packing stops costing more than it saves.
    public enum SizeClass: Int, Sendable, CaseIterable, CustomStringConvertible {
        /// Under 1 MiB.
        case small
        /// 1 MiB to 16 MiB.
        case medium
        /// 16 MiB and more.
        case large

        /// The class of a `rows × cols` FP32 matrix.
        public init(rows: Int, cols: Int) {
            let bytes = rows * cols * 4
            self = bytes < 1 << 20 ? .small : bytes < 16 << 20 ? .medium : .large
        }

        /// The matrix the calibration times for this class.
        public var calibrationShape: (rows: Int, cols: Int) {
            switch self {
            case .small: return (256, 512)
            case .medium: return (1024, 1024)
            case .large: return (2048, 2560)
            }
        }

        public var description: String { ["under 1 MiB", "1–16 MiB", "16 MiB and more"][rawValue] }
    }

    /// The limits in force, per size class: measured on the project's AVX2 machines until `calibrate()` runs.
    public static let defaultLimits = [8, 16, 32]
    private static let smallLimit = Atomic<Int>(8)
    private static let mediumLimit = Atomic<Int>(16)
    private static let largeLimit = Atomic<Int>(32)

    /// The one-thread batch limit of a size class.
    public static func limit(_ sizeClass: SizeClass) -> Int {
        switch sizeClass {
        case .small: return smallLimit.load(ordering: .relaxed)
        case .medium: return mediumLimit.load(ordering: .relaxed)
        case .large: return largeLimit.load(ordering: .relaxed)
        }
    }

    /// Sets the one-thread batch limit of a size class (2…`maxSplitBatch`).
    public static func setLimit(_ value: Int, for sizeClass: SizeClass) {
        let v = min(maxSplitBatch, max(2, value))
        switch sizeClass {
        case .small: smallLimit.store(v, ordering: .relaxed)
        case .medium: mediumLimit.store(v, ordering: .relaxed)
        case .large: largeLimit.store(v, ordering: .relaxed)
        }
    }

    /// What `calibrate()` found for one size class.
    public struct Calibration: Sendable, CustomStringConvertible {
        public let sizeClass: SizeClass
        /// The largest batch at which the small kernel was at least as fast as `sgemm` (every smaller batch too).
        public let limit: Int
        /// (batch, small-kernel seconds, sgemm seconds) per batch timed.
        public let timings: [(batch: Int, small: Double, sgemm: Double)]

        public var description: String {
            "\(sizeClass): up to \(limit) rows (" + timings.map { String(format: "%d: %.2fx", $0.batch, $0.sgemm / max($0.small, 1e-12)) }.joined(separator: ", ") + " sgemm/kernel)"
        }
    }

    /// Times the small kernel against `sgemm` (with the OpenBLAS thread setting in force: set 1 first, as workers
    /// do) for batches 2…128 on one matrix per size class until the kernel first loses, and sets each class's limit
    /// to the largest batch up to which the kernel never lost. About 0.3 s of one core. Without the vectorised
    /// kernels it changes nothing.
    @discardableResult
    public static func calibrate(batches: [Int] = [2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128], minTime: Double = 0.004) -> [Calibration] {
        guard accelerated else { return [] }
        var results: [Calibration] = []
        var rng = SeededRandom(seed: 11)
        for sizeClass in SizeClass.allCases {
            let (rows, cols) = sizeClass.calibrationShape
            let w = (0..<(rows * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
            let maxBatch = batches.max() ?? 1
            let xMax = (0..<(maxBatch * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
            var y = [Float](repeating: 0, count: maxBatch * rows)
            var timings: [(batch: Int, small: Double, sgemm: Double)] = []
            w.withUnsafeBufferPointer { wp in
                xMax.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        for batch in batches {
                            let small = bestTime(minTime) {
                                ck_gemm_small_f32(wp.baseAddress, rows, cols, xp.baseAddress, cols, batch, yp.baseAddress, rows)
                            }
                            let gemm = bestTime(minTime) {
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(rows), Int32(cols),
                                            1, xp.baseAddress, Int32(cols), wp.baseAddress, Int32(cols), 1, yp.baseAddress, Int32(rows))
                            }
                            timings.append((batch, small, gemm))
                            // The limit is the end of the leading run of wins: bigger batches need not be timed.
                            if small > gemm { break }
                        }
                    }
                }
            }
            // The limit is the last batch of the leading run of wins.
            var lead = 1
            for t in timings { if t.small <= t.sgemm { lead = t.batch } else { break } }
            let limit = max(2, lead)
            setLimit(limit, for: sizeClass)
            results.append(Calibration(sizeClass: sizeClass, limit: limit, timings: timings))
        }
        return results
    }

    /// What `calibrateSplit` found for one size class and thread count.
    public struct SplitCalibration: Sendable, CustomStringConvertible {
        public let sizeClass: SizeClass
        public let threads: Int
        /// The largest batch from two rows up to which the split kernel beat OpenBLAS on as many threads (0: it
        /// lost at two rows). A single row runs `sgemv` on the pass's OpenBLAS threads once limits are measured.
        public let limit: Int
        /// (batch, split-kernel seconds, OpenBLAS seconds) per batch timed.
        public let timings: [(batch: Int, split: Double, openBLAS: Double)]

        public var description: String {
            "\(sizeClass), \(threads) threads: split up to \(limit) rows, OpenBLAS threads above ("
                + timings.map { String(format: "%d: %.2fx", $0.batch, $0.openBLAS / max($0.split, 1e-12)) }.joined(separator: ", ")
                + " OpenBLAS/split)"
        }
    }

    /// Times a pass split across `threads` threads by the farm's kernel (OpenBLAS on one thread) against the same
    /// product by OpenBLAS raised to `threads` threads for the call (`sgemv` for one row, `sgemm` above), for batches 1…128 on one
    /// matrix per size class until the kernel first loses, and sets each class's split limit to the largest batch
    /// up to which the split kernel never lost. Restores the OpenBLAS thread setting. Under 1 s of `threads` cores.
    @discardableResult
    public static func calibrateSplit(threads: Int, batches: [Int] = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128],
                                      minTime: Double = 0.004) -> [SplitCalibration] {
        guard accelerated, threads > 1 else { return [] }
        let saved = BLASThreads.current
        defer { BLASThreads.set(saved) }
        var results: [SplitCalibration] = []
        var rng = SeededRandom(seed: 12)
        let maxBatch = batches.max() ?? 1
        for sizeClass in SizeClass.allCases {
            let (rows, cols) = sizeClass.calibrationShape
            let w = (0..<(rows * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
            let xMax = (0..<(maxBatch * cols)).map { _ in rng.nextUnitFloat() - 0.5 }
            var y = [Float](repeating: 0, count: maxBatch * rows)
            var timings: [(batch: Int, split: Double, openBLAS: Double)] = []
            w.withUnsafeBufferPointer { wp in
                xMax.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        for batch in batches {
                            BLASThreads.set(1)
                            let split = bestTime(minTime) {
                                ck_gemm_small_f32_mt(wp.baseAddress, rows, cols, xp.baseAddress, cols, batch, yp.baseAddress, rows, threads)
                            }
                            // As a pass pays for it: OpenBLAS's threads raised for the call and put back after
                            // (waking its parked helpers is part of the price of choosing them).
                            let openBLAS = bestTime(minTime) {
                                BLASThreads.raised(to: threads) {
                                    if batch == 1 {
                                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(cols), 1, wp.baseAddress, Int32(cols),
                                                    xp.baseAddress, 1, 1, yp.baseAddress, 1)
                                    } else {
                                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(rows), Int32(cols),
                                                    1, xp.baseAddress, Int32(cols), wp.baseAddress, Int32(cols), 1, yp.baseAddress, Int32(rows))
                                    }
                                }
                            }
                            timings.append((batch, split, openBLAS))
                            // The limit is the end of the leading run of wins from two rows: bigger batches need
                            // not be timed. One row is `sgemv` against the split kernel and decides nothing here.
                            if split > openBLAS && batch > 1 { break }
                        }
                    }
                }
            }
            var lead = 0
            for t in timings where t.batch > 1 { if t.split <= t.openBLAS { lead = t.batch } else { break } }
            results.append(SplitCalibration(sizeClass: sizeClass, threads: threads, limit: lead, timings: timings))
        }
        setSplitLimits(results.map(\.limit), threads: threads)
        return results
    }

    /// The best of three rounds of `body`, each repeated for at least `minTime` seconds.
    static func bestTime(_ minTime: Double, _ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        for _ in 0..<3 {
            var calls = 0
            let start = ContinuousClock.now
            var elapsed = 0.0
            repeat {
                body()
                calls += 1
                let d = ContinuousClock.now - start
                elapsed = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
            } while elapsed < minTime
            best = min(best, elapsed / Double(calls))
        }
        return best
    }

    private static let enabled = Atomic<Bool>(true)

    /// On by default; the benchmark turns it off to measure the plain `sgemm` path beside it.
    public static var isEnabled: Bool {
        get { enabled.load(ordering: .relaxed) }
        set { enabled.store(newValue, ordering: .relaxed) }
    }

    /// True when a `batch`-row product with a `rows × cols` weight matrix should use the small kernel.
    public static func preferred(batch: Int, rows: Int, cols: Int, precision: Precision = .fp32) -> Bool {
        accelerated && batch >= 2 && batch <= batchLimit(rows: rows, cols: cols, precision: precision) && isEnabled
    }

    /// As `preferred(batch:rows:cols:precision:)` for a product split across `threads` threads; a single row
    /// qualifies too (split, it streams the weights with several cores where `sgemv` uses one).
    public static func preferred(batch: Int, rows: Int, cols: Int, threads: Int, precision: Precision = .fp32) -> Bool {
        guard threads > 1 else { return preferred(batch: batch, rows: rows, cols: cols, precision: precision) }
        // Measured FP32 limits start at two rows (one row is OpenBLAS's `sgemv` on as many threads); unmeasured, a
        // single row splits too. FP16 and int8 have no threaded single-row path but the split kernel: one row splits.
        let fewest = precision == .fp32 && splitLimit(SizeClass(rows: rows, cols: cols), threads: threads) != nil ? 2 : 1
        return accelerated && batch >= fewest && batch <= batchLimit(rows: rows, cols: cols, threads: threads, precision: precision)
            && isEnabled && splits(rows: rows, cols: cols)
    }

    /// Whether a product of this weight matrix is worth spreading over threads at all: below 256 KiB of weights,
    /// waking helpers (the kernel's or OpenBLAS's) costs more than it saves.
    public static func splits(rows: Int, cols: Int) -> Bool { rows * cols >= 1 << 16 }
}

extension BLASThreads {
    private static let raise = Mutex<(depth: Int, saved: Int)>((0, 1))

    /// Runs `body` with OpenBLAS on at least `count` threads, then puts the setting back.
    ///
    /// The setting is per process: while `body` runs, a BLAS call from another thread of the process runs with
    /// the raised count too (OpenBLAS 0.3.x queues threaded calls from several threads on its one thread pool).
    /// Nested and concurrent raises share the first caller's saved setting; the last to leave restores it.
    public static func raised<R>(to count: Int, _ body: () throws -> R) rethrows -> R {
        guard count > 1 else { return try body() }
        raise.withLock { state in
            if state.depth == 0 { state.saved = current }
            state.depth += 1
            if current < count { set(count) }
        }
        defer {
            raise.withLock { state in
                state.depth -= 1
                if state.depth == 0 && current != state.saved { set(state.saved) }
            }
        }
        return try body()
    }
}

/// Priority of compute threads: a forward pass should yield the core at once to the coordination around it.
public enum ComputeThreadPriority {
    /// Sets the calling thread's nice value (Linux: per thread). Returns false when the system refused.
    @discardableResult
    public static func setCurrentThread(nice: Int) -> Bool {
        ck_set_thread_nice(Int32(clamping: nice)) == 0
    }

    /// The nice value the small-batch kernels' helper threads take when they start.
    public static func setKernelHelpers(nice: Int) {
        ck_compute_thread_nice(Int32(clamping: nice))
    }
}

/// Row-major FP32 BLAS entry points (OpenBLAS `cblas_sgemm` / `cblas_sgemv`).
///
/// This is the only type that touches OpenBLAS/LAPACK pointers; the rest of the
/// library calls its Swift-array or internal buffer-pointer methods.
public enum BLAS {
    /// General matrix multiply, row-major: `c = alpha · op(a) · op(b) + beta · c`.
    ///
    /// `op(a)` is `m × k` (`a` stored `k × m` when `transposeA`), `op(b)` is `k × n`
    /// (`b` stored `n × k` when `transposeB`), `c` is `m × n`.
    public static func gemm(_ a: [Float], _ b: [Float], into c: inout [Float],
                            m: Int, n: Int, k: Int,
                            transposeA: Bool = false, transposeB: Bool = false,
                            alpha: Float = 1, beta: Float = 0) throws {
        guard m >= 0, n >= 0, k >= 0 else {
            throw ComputeError.invalidArgument("gemm sizes must be non-negative, got m=\(m) n=\(n) k=\(k)")
        }
        try checkInt32(m, n, k)
        guard a.count == m * k else { throw ComputeError.shapeMismatch("gemm: a has \(a.count) elements, expected \(m)×\(k)=\(m * k)") }
        guard b.count == k * n else { throw ComputeError.shapeMismatch("gemm: b has \(b.count) elements, expected \(k)×\(n)=\(k * n)") }
        guard c.count == m * n else { throw ComputeError.shapeMismatch("gemm: c has \(c.count) elements, expected \(m)×\(n)=\(m * n)") }
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                          a: pa.baseAddress, lda: transposeA ? m : k,
                          b: pb.baseAddress, ldb: transposeB ? k : n,
                          beta: beta, c: pc.baseAddress, ldc: n)
                }
            }
        }
    }

    /// The inference shape: `y[batch, out] = x[batch, in] · weight[out, in]ᵀ + bias[out]`
    /// (weights in PyTorch `Linear` layout). A single row uses `cblas_sgemv`.
    public static func linear(input: [Float], batch: Int, weight: [Float],
                              outFeatures: Int, inFeatures: Int, bias: [Float]? = nil) throws -> [Float] {
        guard batch >= 0, outFeatures >= 0, inFeatures >= 0 else {
            throw ComputeError.invalidArgument("linear sizes must be non-negative")
        }
        try checkInt32(batch, outFeatures, inFeatures)
        guard input.count == batch * inFeatures else {
            throw ComputeError.shapeMismatch("linear: input has \(input.count) elements, expected batch \(batch) × in \(inFeatures)")
        }
        guard weight.count == outFeatures * inFeatures else {
            throw ComputeError.shapeMismatch("linear: weight has \(weight.count) elements, expected [\(outFeatures), \(inFeatures)]")
        }
        if let bias, bias.count != outFeatures {
            throw ComputeError.shapeMismatch("linear: bias has \(bias.count) elements, expected \(outFeatures)")
        }
        return [Float](unsafeUninitializedCapacity: batch * outFeatures) { y, initialized in
            input.withUnsafeBufferPointer { x in
                weight.withUnsafeBufferPointer { w in
                    if let bias {
                        bias.withUnsafeBufferPointer { b in
                            linear(x: x.baseAddress, batch: batch, inFeatures: inFeatures,
                                   w: w.baseAddress, rows: outFeatures, bias: b.baseAddress,
                                   y: y.baseAddress, ldy: outFeatures)
                        }
                    } else {
                        linear(x: x.baseAddress, batch: batch, inFeatures: inFeatures,
                               w: w.baseAddress, rows: outFeatures, bias: nil,
                               y: y.baseAddress, ldy: outFeatures)
                    }
                }
            }
            initialized = batch * outFeatures
        }
    }

    // MARK: - Internal pointer-level entry points

    static func checkInt32(_ values: Int...) throws {
        for v in values where v > Int(Int32.max) {
            throw ComputeError.invalidArgument("dimension \(v) exceeds the 32-bit BLAS integer range")
        }
    }

    /// Raw row-major sgemm. Pointers may be nil only when the matching dimension product is 0.
    static func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                      a: UnsafePointer<Float>?, lda: Int, b: UnsafePointer<Float>?, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>?, ldc: Int) {
        guard m > 0, n > 0 else { return }
        if k == 0 || a == nil || b == nil {
            // op(a)·op(b) is zero: only scale c.
            guard let c else { return }
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(max(1, lda)), b, Int32(max(1, ldb)),
                    beta, c, Int32(max(1, ldc)))
    }

    /// `y[i*ldy + r] = sum_c x[i*in + c] * w[r*in + c] + bias[r]` for `r < rows`, `i < batch`.
    /// `w` points at `rows` consecutive weight rows (a block of a larger matrix is fine).
    /// Uses `cblas_sgemv` when `batch == 1`, `cblas_sgemm` otherwise; no copies of x or w.
    /// `smallKernel` false: OpenBLAS whatever the batch (a caller that chose OpenBLAS's threads over the split kernel).
    static func linear(x: UnsafePointer<Float>?, batch: Int, inFeatures: Int,
                       w: UnsafePointer<Float>?, rows: Int, bias: UnsafePointer<Float>?,
                       y: UnsafeMutablePointer<Float>?, ldy: Int, smallKernel: Bool = true) {
        guard batch > 0, rows > 0, let y else { return }
        // Preload the bias (or zeros) and accumulate with beta = 1, so the result never
        // depends on how the BLAS build treats beta = 0 over uninitialised output.
        for i in 0..<batch {
            if let bias { (y + i * ldy).update(from: bias, count: rows) } else { (y + i * ldy).update(repeating: 0, count: rows) }
        }
        let beta: Float = 1
        guard inFeatures > 0, let x, let w else { return }
        if batch == 1 {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(inFeatures), 1,
                        w, Int32(inFeatures), x, 1, beta, y, 1)
        } else if smallKernel && SmallBatchKernel.preferred(batch: batch, rows: rows, cols: inFeatures) {
            ck_gemm_small_f32(w, rows, inFeatures, x, inFeatures, batch, y, ldy)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(rows), Int32(inFeatures),
                        1, x, Int32(inFeatures), w, Int32(inFeatures), beta, y, Int32(ldy))
        }
    }

    /// Lower triangle of `c = alpha · aᵀ·a + beta · c` for row-major `a` (`rows × cols`), in FP64
    /// (`cblas_dsyrk`); `c` is `cols × cols`. The upper triangle is mirrored afterwards.
    static func gramMatrix(_ a: UnsafeBufferPointer<Double>, rows: Int, cols: Int, alpha: Double,
                           into c: UnsafeMutableBufferPointer<Double>) {
        guard cols > 0, let cp = c.baseAddress else { return }
        cp.update(repeating: 0, count: cols * cols)
        if rows > 0, let ap = a.baseAddress {
            cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, Int32(cols), Int32(rows), alpha,
                        ap, Int32(cols), 0, cp, Int32(cols))
        }
        for i in 0..<cols { for j in (i + 1)..<max(i + 1, cols) { cp[i * cols + j] = cp[j * cols + i] } }
    }

    /// Eigen-decomposition of a symmetric `n × n` matrix with LAPACK `dsyevd_`.
    /// Returns eigenvalues ascending and eigenvectors as rows (`vectors[i*n ..< (i+1)*n]` pairs with `values[i]`).
    static func symmetricEigen(_ matrix: [Double], n: Int) throws -> (values: [Double], vectors: [Double]) {
        guard n > 0 else { return ([], []) }
        try checkInt32(n * n)
        // Row-major symmetric == column-major symmetric, so the matrix passes as is.
        var a = matrix
        var w = [Double](repeating: 0, count: n)
        var jobz = Int8(UInt8(ascii: "V")), uplo = Int8(UInt8(ascii: "L"))
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0
        var lwork: Int32 = -1, liwork: Int32 = -1
        var workQuery = [Double](repeating: 0, count: 1)
        var iworkQuery = [Int32](repeating: 0, count: 1)
        dsyevd_(&jobz, &uplo, &nn, &a, &lda, &w, &workQuery, &lwork, &iworkQuery, &liwork, &info)
        guard info == 0 else { throw ComputeError.numericalFailure("dsyevd workspace query failed (info=\(info))") }
        lwork = Int32(workQuery[0].rounded(.up))
        liwork = iworkQuery[0]
        var work = [Double](repeating: 0, count: Int(max(1, lwork)))
        var iwork = [Int32](repeating: 0, count: Int(max(1, liwork)))
        dsyevd_(&jobz, &uplo, &nn, &a, &lda, &w, &work, &lwork, &iwork, &liwork, &info)
        guard info == 0 else {
            throw ComputeError.numericalFailure("dsyevd failed to converge (info=\(info)) on a \(n)×\(n) matrix")
        }
        // Column-major output: column j (eigenvector j) is a[j*n ..< (j+1)*n], i.e. row j in row-major terms.
        return (w, a)
    }
}
