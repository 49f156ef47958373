import Testing
@testable import Compute

@Suite struct QuantizationTests {
    @Test func int8PerChannelScalesAndErrorBound() throws {
        var rng = SeededRandom(seed: 11)
        let rows = 8, cols = 50
        var w = (0..<(rows * cols)).map { _ in (rng.nextUnitFloat() - 0.5) * 4 }
        for c in 0..<cols { w[3 * cols + c] = 0 }   // an all-zero row
        let t = try Tensor(shape: [rows, cols], float32: w)
        let q = try Quantization.int8PerChannel(t)
        guard case .int8(let values, let scales) = q.storage else { Issue.record("not int8"); return }
        let back = q.floats()
        for r in 0..<rows {
            let maxAbs = (0..<cols).map { abs(w[r * cols + $0]) }.max() ?? 0
            #expect(scales[r] == maxAbs / 127)
            #expect(values[(r * cols)..<((r + 1) * cols)].allSatisfy { $0 >= -127 && $0 <= 127 })
            for c in 0..<cols { #expect(abs(back[r * cols + c] - w[r * cols + c]) <= scales[r] * 0.5 + 1e-6) }
        }
        #expect(scales[3] == 0)
        #expect(computeError { _ = try Quantization.int8PerChannel(Tensor(shape: [1, 2], float32: [1, .nan])) } != nil)
    }

    @Test func pruningReachesTargetSparsity() throws {
        let w: [Float] = [0.1, -5, 0.2, 3, -0.05, 0.3, 7, -0.01, 2, 0.4]
        let pruned = try Quantization.prune(Tensor(shape: [2, 5], float32: w), sparsity: 0.5).floats()
        #expect(pruned.filter { $0 == 0 }.count == 5)
        #expect(pruned == [0, -5, 0, 3, 0, 0, 7, 0, 2, 0.4])
        #expect(computeError { _ = try Quantization.prune(Tensor(shape: [1], float32: [1]), sparsity: 1) } != nil)
    }

    @Test func modelReportBytesAndErrors() throws {
        let cfg = ModelConfig(layers: [DenseLayerConfig(weight: "a", bias: "ab", activation: .relu),
                                       DenseLayerConfig(weight: "b", bias: nil, activation: .none)])
        var rng = SeededRandom(seed: 5)
        let tensors: [String: Tensor] = [
            "a": try Tensor(shape: [16, 8], float32: (0..<128).map { _ in rng.nextUnitFloat() - 0.5 }),
            "ab": try Tensor(shape: [16], float32: (0..<16).map { _ in rng.nextUnitFloat() }),
            "b": try Tensor(shape: [4, 16], float32: (0..<64).map { _ in rng.nextUnitFloat() - 0.5 }),
        ]
        let model = try MLPModel(config: cfg, tensors: tensors)
        let fp32Bytes = (128 + 16 + 64) * 4
        #expect(model.tensorByteCount == fp32Bytes)

        let (h, hr) = try Quantization.convert(model, to: .fp16)
        #expect(hr.bytesBefore == fp32Bytes)
        #expect(hr.bytesAfter == fp32Bytes / 2)
        #expect(h.tensorByteCount == hr.bytesAfter)
        #expect(hr.tensors.map(\.name) == ["a", "ab", "b"])
        #expect(hr.tensors.allSatisfy { $0.maxAbsError <= 1e-3 && $0.meanAbsError <= $0.maxAbsError })

        let (q, qr) = try Quantization.convert(model, to: .int8, pruneSparsity: 0.25)
        // int8 weights + FP32 scales per row; FP32 bias unchanged.
        #expect(qr.bytesAfter == 128 + 16 * 4 + 16 * 4 + 64 + 4 * 4)
        #expect(q.tensorByteCount == qr.bytesAfter)
        let weightReport = qr.tensors[0]
        #expect(weightReport.sparsity >= 0.25)
        #expect(weightReport.maxAbsError > 0)
        #expect(qr.tensors[1].maxAbsError == 0)   // bias untouched
        #expect(qr.sizeRatio < 0.5)
    }
}
