import Foundation
import Testing
@testable import Compute

private func loadFixtureModel(_ stem: String) throws -> (MLPModel, inputs: [[Double]], outputs: [[Double]]) {
    let config = try ModelConfig(json: Data(contentsOf: Fixtures.url("\(stem).config.json")))
    let file = try SafetensorsFile(contentsOf: Fixtures.url("\(stem).safetensors"))
    let model = try MLPModel(file: file, config: config)
    let expected = try Fixtures.json("\(stem).expected.json")
    return (model, Fixtures.matrix(expected["inputs"]), Fixtures.matrix(expected["outputs"]))
}

@Suite struct MLPModelTests {
    /// Tolerance uses the max-norm relative error ‖y − y_ref‖∞ / ‖y_ref‖∞ over the whole output batch,
    /// against NumPy float64 on the same float32 parameters.
    @Test(arguments: ["mlp_64_32_10", "mlp_activations"])
    func fp32ForwardMatchesNumPy(stem: String) throws {
        let (model, inputs, outputs) = try loadFixtureModel(stem)
        #expect(model.precision == .fp32)
        let rows = inputs.flatMap { $0.map { Float($0) } }
        let y = try model.forward(rows: rows, batch: inputs.count)
        #expect(y.count == outputs.count * model.outputSize)
        #expect(maxNormRelativeError(y.map(Double.init), outputs.flatMap { $0 }) <= 1e-5)
        // Row by row (sgemv path) agrees too.
        for (i, row) in inputs.enumerated() {
            let yi = try model.forward(rows: row.map { Float($0) }, batch: 1)
            #expect(maxNormRelativeError(yi.map(Double.init), outputs[i]) <= 1e-5)
        }
    }

    @Test func tensorInputAndProbabilities() throws {
        let (model, inputs, outputs) = try loadFixtureModel("mlp_64_32_10")
        let batch = inputs.count
        let x = try Tensor(shape: [batch, 64], float32: inputs.flatMap { $0.map { Float($0) } })
        let y = try model.forward(x)
        #expect(y.shape == [batch, 10])
        let p = try model.probabilities(rows: x.floats(), batch: batch)
        let predicted = try model.predict(rows: x.floats(), batch: batch)
        let top = try model.topK(rows: x.floats(), batch: batch, k: 3)
        for r in 0..<batch {
            let rowP = p[(r * 10)..<((r + 1) * 10)]
            #expect(abs(rowP.reduce(0, +) - 1) < 1e-5)
            let refArgmax = outputs[r].indices.max { outputs[r][$0] < outputs[r][$1] }
            #expect(predicted[r] == refArgmax)
            #expect(top[r].count == 3)
            #expect(top[r][0].index == predicted[r])
            #expect(top[r][0].probability >= top[r][1].probability && top[r][1].probability >= top[r][2].probability)
        }
        // FP16 tensor input is accepted as well.
        #expect(try model.forward(x.toFloat16()).shape == [batch, 10])
    }

    @Test func softmaxOutputLayerLogitsVersusForward() throws {
        let (model, inputs, _) = try loadFixtureModel("mlp_activations")
        let rows = inputs.flatMap { $0.map { Float($0) } }
        let forward = try model.forward(rows: rows, batch: inputs.count)
        let probs = try model.probabilities(rows: rows, batch: inputs.count)
        for i in 0..<forward.count { #expect(abs(forward[i] - probs[i]) < 1e-6) }
        let logits = try model.logits(rows: rows, batch: inputs.count)
        #expect(logits != forward)
    }

    @Test func rejectsShapeMismatchAndNonFiniteInput() throws {
        let (model, _, _) = try loadFixtureModel("mlp_64_32_10")
        let e1 = computeError { _ = try model.forward(rows: [Float](repeating: 1, count: 63), batch: 1) }
        guard case .shapeMismatch(let m)? = e1 else { Issue.record("expected shapeMismatch"); return }
        #expect(m.contains("63"))
        var rows = [Float](repeating: 1, count: 128)
        rows[64 + 5] = .nan
        let e2 = computeError { _ = try model.forward(rows: rows, batch: 2) }
        guard case .nonFiniteValue(let m2)? = e2 else { Issue.record("expected nonFiniteValue"); return }
        #expect(m2.contains("row 1 feature 5"))
        rows[69] = .infinity
        #expect(computeError { _ = try model.forward(rows: rows, batch: 2) } != nil)
        #expect(computeError { _ = try model.forward(rows: [], batch: 0) } != nil)
    }

    @Test func rejectsInconsistentConfigs() throws {
        let file = try SafetensorsFile(contentsOf: Fixtures.url("mlp_64_32_10.safetensors"))
        let swapped = ModelConfig(layers: [DenseLayerConfig(weight: "net.2.weight", bias: "net.2.bias", activation: .relu),
                                           DenseLayerConfig(weight: "net.0.weight", bias: "net.0.bias", activation: .none)])
        let e1 = computeError { _ = try MLPModel(file: file, config: swapped) }
        #expect(e1?.message.contains("expects 64 inputs but layer 0 produces 10") == true)
        let missing = ModelConfig(layers: [DenseLayerConfig(weight: "net.9.weight", bias: nil, activation: .none)])
        guard case .missingTensor(let m)? = computeError({ _ = try MLPModel(file: file, config: missing) }) else {
            Issue.record("expected missingTensor"); return
        }
        #expect(m.contains("net.9.weight"))
        let wrongBias = ModelConfig(layers: [DenseLayerConfig(weight: "net.0.weight", bias: "net.2.bias", activation: .none)])
        #expect(computeError { _ = try MLPModel(file: file, config: wrongBias) } != nil)
        let badJSON = computeError { _ = try ModelConfig(jsonString: #"{"layers":[{"weight":"w","activation":"swish"}]}"#) }
        #expect(badJSON?.message.contains("swish") == true)
        // Without a config (none given, none in the metadata) the PyTorch names give the layers, in index order.
        var bare = file
        bare.metadata[ModelConfig.metadataKey] = nil
        #expect(try MLPModel(file: bare).config.layers.map(\.weight) == ["net.0.weight", "net.2.weight"])
    }

    @Test func concurrentForwardFromManyTasksIsConsistent() async throws {
        let (model, inputs, _) = try loadFixtureModel("mlp_64_32_10")
        let (fp16, _) = try Quantization.convert(model, to: .fp16)
        let rows = inputs.flatMap { $0.map { Float($0) } }
        let batch = inputs.count
        let expected32 = try model.forward(rows: rows, batch: batch)
        let expected16 = try fp16.forward(rows: rows, batch: batch)
        let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<16 {
                group.addTask {
                    var bad = 0
                    for _ in 0..<20 {
                        if try model.forward(rows: rows, batch: batch) != expected32 { bad += 1 }
                        if try fp16.forward(rows: rows, batch: batch) != expected16 { bad += 1 }
                        // Single rows take the sgemv / fused paths.
                        let r = task % batch
                        let one = try fp16.forward(rows: Array(rows[(r * 64)..<((r + 1) * 64)]), batch: 1)
                        if one.count != 10 { bad += 1 }
                    }
                    return bad
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }

    @Test func saveAndReloadWithConfigInMetadata() throws {
        let (model, inputs, _) = try loadFixtureModel("mlp_64_32_10")
        let url = temporaryURL(".safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try model.write(to: url)
        let reloaded = try MLPModel(contentsOf: url)
        let rows = inputs.flatMap { $0.map { Float($0) } }
        #expect(try reloaded.forward(rows: rows, batch: inputs.count) == model.forward(rows: rows, batch: inputs.count))
    }

    @Test(arguments: [Precision.fp16, .int8])
    func reducedPrecisionForwardIsClose(precision: Precision) throws {
        let (model, inputs, outputs) = try loadFixtureModel("mlp_64_32_10")
        let (q, _) = try Quantization.convert(model, to: precision)
        #expect(q.precision == precision)
        let rows = inputs.flatMap { $0.map { Float($0) } }
        let y = try q.forward(rows: rows, batch: inputs.count)
        let err = maxNormRelativeError(y.map(Double.init), outputs.flatMap { $0 })
        #expect(err < (precision == .fp16 ? 2e-3 : 3e-2))
        #expect(err > 0)
        // Saved and reloaded quantised models give identical outputs.
        let reloaded = try MLPModel(file: SafetensorsFile(data: q.safetensorsFile().serialized()))
        #expect(reloaded.precision == precision)
        #expect(try reloaded.forward(rows: rows, batch: inputs.count) == y)
    }

    /// Batch 1 uses the fused FP16 / int8 GEMV kernels; odd sizes exercise their row and column tails.
    @Test(arguments: [(1, 1), (3, 5), (7, 13), (64, 37), (130, 1024)])
    func fusedSingleRowKernelsMatchDequantisedGEMV(out: Int, inF: Int) throws {
        var rng = SeededRandom(seed: UInt64(out * 1000 + inF))
        let w = (0..<(inF * out)).map { _ in rng.nextUnitFloat() - 0.5 }
        let b = (0..<out).map { _ in rng.nextUnitFloat() }
        let x = (0..<inF).map { _ in rng.nextUnitFloat() * 4 - 2 }
        for withBias in [true, false] {
            let cfg = ModelConfig(layers: [DenseLayerConfig(weight: "w", bias: withBias ? "b" : nil, activation: .none)])
            let model = try MLPModel(config: cfg, tensors: ["w": Tensor(shape: [out, inF], float32: w), "b": Tensor(shape: [out], float32: b)])
            for precision in [Precision.fp16, .int8] {
                let (q, _) = try Quantization.convert(model, to: precision)
                let reference = try BLAS.linear(input: x, batch: 1, weight: q.layers[0].weight.floats(), outFeatures: out,
                                                inFeatures: inF, bias: q.layers[0].bias?.floats())
                let y = try q.forward(rows: x, batch: 1)
                #expect(maxNormRelativeError(y.map(Double.init), reference.map(Double.init)) < 2e-6, "\(precision) \(out)x\(inF)")
            }
        }
    }

    @Test func blockedReducedPrecisionMatchesFullConversion() throws {
        // A layer wider than one conversion block exercises the block loop.
        var rng = SeededRandom(seed: 3)
        let inF = 300, out = 700, batch = 5
        let w = (0..<(inF * out)).map { _ in rng.nextUnitFloat() - 0.5 }
        let b = (0..<out).map { _ in rng.nextUnitFloat() }
        let x = (0..<(batch * inF)).map { _ in rng.nextUnitFloat() }
        #expect(DenseLayer.blockRows(batch: batch, inFeatures: inF, outFeatures: out) < out)
        let cfg = ModelConfig(layers: [DenseLayerConfig(weight: "w", bias: "b", activation: .none)])
        let model = try MLPModel(config: cfg, tensors: ["w": Tensor(shape: [out, inF], float32: w), "b": Tensor(shape: [out], float32: b)])
        for precision in [Precision.fp16, .int8] {
            let (q, _) = try Quantization.convert(model, to: precision)
            let dequantised = try BLAS.linear(input: x, batch: batch, weight: q.layers[0].weight.floats(),
                                              outFeatures: out, inFeatures: inF, bias: q.layers[0].bias?.floats())
            let y = try q.forward(rows: x, batch: batch)
            #expect(maxNormRelativeError(y.map(Double.init), dequantised.map(Double.init)) < 1e-6)
        }
    }
}
