import Testing
@testable import Compute

extension BLASTests {
    /// Passes on several threads: measured split limits decide between the farm's split kernel and OpenBLAS on as
    /// many threads, and the OpenBLAS setting is raised only for the layers that run there. Nested in `BLASTests`
    /// (serialized) because they change the process-wide OpenBLAS thread count. Thread count 7 is used by no other
    /// test, so the limits set here touch nobody else's passes.
    @Suite struct SplitPasses {
        static let threads = 7

        @Test func measuredSplitLimitsReplaceTheScaledOnes() {
            defer { SmallBatchKernel.clearSplitLimits() }
            SmallBatchKernel.clearSplitLimits()
            #expect(SmallBatchKernel.splitLimit(.large, threads: Self.threads) == nil, "not measured: the scaled one-thread limit applies")
            SmallBatchKernel.setSplitLimits([3, 5, 96], threads: Self.threads)
            #expect(SmallBatchKernel.batchLimit(rows: 64, cols: 64, threads: Self.threads, openBLASThreads: 1) == 3)
            #expect(SmallBatchKernel.batchLimit(rows: 1024, cols: 1024, threads: Self.threads, openBLASThreads: 1) == 5)
            #expect(SmallBatchKernel.batchLimit(rows: 4096, cols: 4096, threads: Self.threads, openBLASThreads: 1) == 96)
            // Measured limits start at two rows: one row runs OpenBLAS's sgemv on the pass's threads.
            #expect(!SmallBatchKernel.preferred(batch: 1, rows: 4096, cols: 4096, threads: Self.threads))
            // Out-of-range figures are clamped; a limit of 0 means OpenBLAS even at one row.
            SmallBatchKernel.setSplitLimits([-4, 0, 10_000], threads: Self.threads)
            #expect(SmallBatchKernel.splitLimits[Self.threads] == [0, 0, SmallBatchKernel.maxSplitBatch])
            #expect(!SmallBatchKernel.preferred(batch: 1, rows: 1024, cols: 1024, threads: Self.threads))
            // One thread is not a split: nothing is stored.
            SmallBatchKernel.setSplitLimits([8, 8, 8], threads: 1)
            #expect(SmallBatchKernel.splitLimits[1] == nil)
        }

        /// FP16 and int8 layers are chosen by their own limits (their OpenBLAS path converts the weights first), and
        /// take FP32's only where theirs are not measured.
        @Test func eachPrecisionIsChosenByItsOwnLimits() {
            defer {
                SmallBatchKernel.clearSplitLimits()
                SmallBatchKernel.clearPrecisionLimits()
            }
            SmallBatchKernel.clearSplitLimits()
            SmallBatchKernel.clearPrecisionLimits()
            let (rows, cols) = (4096, 4096)
            SmallBatchKernel.setSplitLimits([0, 0, 0], threads: Self.threads)
            SmallBatchKernel.setSplitLimits([128, 128, 128], threads: Self.threads, precision: .fp16)
            #expect(SmallBatchKernel.splitLimit(.large, threads: Self.threads, precision: .fp16) == 128)
            #expect(SmallBatchKernel.splitLimit(.large, threads: Self.threads) == 0, "FP32's limits are not FP16's")
            #expect(SmallBatchKernel.splitLimit(.large, threads: Self.threads, precision: .int8) == 0, "int8 not measured: FP32's")
            #expect(SmallBatchKernel.splitLimits[Self.threads] == [0, 0, 0])
            #expect(SmallBatchKernel.splitLimits(precision: .fp16)[Self.threads] == [128, 128, 128])
            if SmallBatchKernel.accelerated {
                for batch in [1, 16, 128] {
                    #expect(SmallBatchKernel.preferred(batch: batch, rows: rows, cols: cols, threads: Self.threads, precision: .fp16), "\(batch)")
                    #expect(!SmallBatchKernel.preferred(batch: batch, rows: rows, cols: cols, threads: Self.threads), "\(batch)")
                    #expect(!SmallBatchKernel.preferred(batch: batch, rows: rows, cols: cols, threads: Self.threads, precision: .int8), "\(batch)")
                }
                #expect(!SmallBatchKernel.preferred(batch: 129, rows: rows, cols: cols, threads: Self.threads, precision: .fp16))
            }
            // One thread: FP16's own limits, FP32's untouched; int8 not measured takes FP32's.
            SmallBatchKernel.setLimits([0, 0, 0], precision: .fp16)
            SmallBatchKernel.setLimits([96, 96, 96], precision: .int8)
            #expect(SmallBatchKernel.batchLimit(rows: rows, cols: cols, threads: 1, openBLASThreads: 1, precision: .fp16) == 0)
            #expect(SmallBatchKernel.batchLimit(rows: rows, cols: cols, threads: 1, openBLASThreads: 1, precision: .int8) == 96)
            #expect(SmallBatchKernel.limits(precision: .int8) == [96, 96, 96])
            if SmallBatchKernel.accelerated {
                #expect(!SmallBatchKernel.preferred(batch: 2, rows: rows, cols: cols, precision: .fp16))
                #expect(SmallBatchKernel.preferred(batch: 96, rows: rows, cols: cols, precision: .int8))
                #expect(SmallBatchKernel.preferred(batch: 2, rows: rows, cols: cols))
            }
            // Limits out of range are clamped; FP32 set through the precision API goes to FP32's one-thread limits.
            SmallBatchKernel.setLimits([-1, 500, 7], precision: .fp16)
            #expect(SmallBatchKernel.limits(precision: .fp16) == [0, SmallBatchKernel.maxSplitBatch, 7])
            SmallBatchKernel.clearPrecisionLimits()
            #expect(SmallBatchKernel.limits(precision: .fp16) == SmallBatchKernel.limits, "cleared: FP32's again")
        }

        @Test(.enabled(if: SmallBatchKernel.accelerated, "no AVX2/FMA/F16C on this CPU: nothing to calibrate"),
              arguments: [Precision.fp16, .int8])
        func precisionCalibrationSetsThatPrecisionsLimitsOnly(precision: Precision) throws {
            defer {
                SmallBatchKernel.clearSplitLimits()
                SmallBatchKernel.clearPrecisionLimits()
            }
            let before = BLASThreads.current
            BLASThreads.set(1)
            defer { BLASThreads.set(before) }
            SmallBatchKernel.clearSplitLimits()
            let batches = [2, 4]
            for threads in [1, Self.threads] {
                let results = SmallBatchKernel.calibrate(precision: precision, threads: threads, batches: batches, minTime: 0.0005)
                #expect(BLASThreads.current == 1, "the OpenBLAS setting is put back")
                #expect(results.map(\.sizeClass) == SmallBatchKernel.SizeClass.allCases)
                for result in results {
                    #expect(result.precision == precision && result.threads == threads)
                    #expect(!result.timings.isEmpty && result.timings.allSatisfy { $0.kernel > 0 && $0.openBLAS > 0 })
                    #expect(result.timings.map(\.batch) == Array(batches.prefix(result.timings.count)), "in order, stopping at the first loss")
                    let lead = result.timings.prefix { $0.kernel <= $0.openBLAS }.last?.batch ?? 0
                    #expect(result.limit == lead)
                    if threads == 1 {
                        #expect(SmallBatchKernel.measuredLimit(result.sizeClass, precision: precision) == result.limit)
                    } else {
                        #expect(SmallBatchKernel.splitLimits(precision: precision)[threads]?[result.sizeClass.rawValue] == result.limit)
                    }
                }
            }
            #expect(SmallBatchKernel.splitLimits[Self.threads] == nil, "FP32's split limits untouched")
            #expect(SmallBatchKernel.calibrate(precision: .fp32, threads: 1).isEmpty, "FP32 is calibrate()'s")
        }

        @Test func cachedPrecisionLimitsAreAppliedToTheirPrecisionOnly() {
            // 13 threads: a count no other test uses. Here, not in the cache's suite: the one-thread FP16/int8 limits
            // are process-wide and other tests of this serialized suite set them.
            defer {
                SmallBatchKernel.setLimits(SmallBatchKernel.defaultLimits)
                SmallBatchKernel.clearSplitLimits()
                SmallBatchKernel.clearPrecisionLimits()
            }
            SmallBatchLimitsCache.Entry(measuredAt: "x", limits: [16, 24, 32], detail: "injected", splitLimits: ["13": [4, 8, 8]],
                                        precisions: ["fp16": .init(limits: [64, 96, 128], splitLimits: ["13": [128, 120, 112]]),
                                                     "int8": .init(limits: [0, 48, 64])]).apply()
            #expect(SmallBatchKernel.limits == [16, 24, 32])
            #expect(SmallBatchKernel.limits(precision: .fp16) == [64, 96, 128])
            #expect(SmallBatchKernel.limits(precision: .int8) == [0, 48, 64])
            #expect(SmallBatchKernel.splitLimits[13] == [4, 8, 8])
            #expect(SmallBatchKernel.splitLimits(precision: .fp16)[13] == [128, 120, 112])
            #expect(SmallBatchKernel.splitLimits(precision: .int8)[13] == nil)
            #expect(SmallBatchKernel.batchLimit(rows: 4096, cols: 4096, threads: 13, openBLASThreads: 1, precision: .fp16) == 112)
            #expect(SmallBatchKernel.batchLimit(rows: 4096, cols: 4096, threads: 13, openBLASThreads: 1, precision: .int8) == 8, "int8 split not measured: FP32's")
            #expect(SmallBatchKernel.batchLimit(rows: 4096, cols: 4096, threads: 13, openBLASThreads: 1) == 8)
        }

        @Test func raisedRestoresTheSettingAndNests() {
            let before = BLASThreads.current
            BLASThreads.set(1)
            defer { BLASThreads.set(before) }
            BLASThreads.raised(to: 3) {
                #expect(BLASThreads.current == 3)
                BLASThreads.raised(to: 2) { #expect(BLASThreads.current == 3, "a nested raise never lowers") }
                #expect(BLASThreads.current == 3)
            }
            #expect(BLASThreads.current == 1)
            BLASThreads.raised(to: 1) { #expect(BLASThreads.current == 1) }
            struct Thrown: Error {}
            #expect(throws: Thrown.self) { try BLASThreads.raised(to: 2) { throw Thrown() } }
            #expect(BLASThreads.current == 1, "restored after a throw")
        }

        /// Above the split limit a multi-thread pass runs OpenBLAS on its threads: the same answers as one thread,
        /// for every precision, and the OpenBLAS setting back to one thread afterwards.
        @Test(arguments: [Precision.fp32, .fp16, .int8])
        func aboveTheSplitLimitOpenBLASThreadsGiveTheSameAnswer(precision: Precision) throws {
            defer { SmallBatchKernel.clearSplitLimits() }
            let before = BLASThreads.current
            BLASThreads.set(1)
            defer { BLASThreads.set(before) }
            var rng = SeededRandom(seed: 21)
            let sizes = [96, 700, 300, 10]  // 700×300 is 820 KiB of FP32: worth splitting
            var tensors: [String: Tensor] = [:]
            var layers: [DenseLayerConfig] = []
            for i in 0..<(sizes.count - 1) {
                tensors["\(i).w"] = try Tensor(shape: [sizes[i + 1], sizes[i]], float32: (0..<(sizes[i] * sizes[i + 1])).map { _ in rng.nextUnitFloat() - 0.5 })
                tensors["\(i).b"] = try Tensor(shape: [sizes[i + 1]], float32: (0..<sizes[i + 1]).map { _ in rng.nextUnitFloat() })
                layers.append(DenseLayerConfig(weight: "\(i).w", bias: "\(i).b", activation: .relu))
            }
            let fp32 = try MLPModel(config: ModelConfig(layers: layers), tensors: tensors)
            let model = precision == .fp32 ? fp32 : try Quantization.convert(fp32, to: precision).model
            for batch in [1, 5, 40] {
                let x = (0..<(batch * sizes[0])).map { _ in rng.nextUnitFloat() - 0.5 }
                let one = try model.logits(rows: x, batch: batch, threads: 1)
                for limits in [[0, 0, 0], [128, 128, 128], [4, 4, 4]] {
                    SmallBatchKernel.setSplitLimits(limits, threads: Self.threads, precision: precision)
                    let split = try model.logits(rows: x, batch: batch, threads: Self.threads)
                    #expect(maxNormRelativeError(split.map(Double.init), one.map(Double.init)) < 1e-5, "\(precision) batch \(batch) limits \(limits)")
                    #expect(BLASThreads.current == 1, "the OpenBLAS setting is put back after the pass")
                }
            }
        }

        @Test(.enabled(if: SmallBatchKernel.accelerated, "no AVX2/FMA/F16C on this CPU: nothing to calibrate"))
        func calibrationMeasuresEveryClassAndSetsItsSplitLimit() throws {
            defer { SmallBatchKernel.clearSplitLimits() }
            let before = BLASThreads.current
            BLASThreads.set(1)
            defer { BLASThreads.set(before) }
            let batches = [1, 2, 4]
            let results = SmallBatchKernel.calibrateSplit(threads: Self.threads, batches: batches, minTime: 0.0005)
            #expect(BLASThreads.current == 1, "the OpenBLAS setting is put back")
            #expect(results.map(\.sizeClass) == SmallBatchKernel.SizeClass.allCases)
            for result in results {
                #expect(result.threads == Self.threads)
                #expect(!result.timings.isEmpty && result.timings.allSatisfy { $0.split > 0 && $0.openBLAS > 0 })
                #expect(result.timings.map(\.batch) == Array(batches.prefix(result.timings.count)), "timed in order, stopping at the first loss above one row")
                #expect(result.timings.count >= 2, "one row decides nothing: two rows are always timed")
                let lead = result.timings.filter { $0.batch > 1 }.prefix { $0.split <= $0.openBLAS }.last?.batch ?? 0
                #expect(result.limit == lead)
                #expect(SmallBatchKernel.splitLimit(result.sizeClass, threads: Self.threads) == result.limit)
            }
            // Who wins is not asserted: that is what is measured.
        }
    }
}
