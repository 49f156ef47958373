import Foundation
import Testing
@testable import Compute

/// A PyTorch `nn.Sequential` of `nn.Linear` saved with safetensors has no config: its layers come from the names.
@Suite struct SequentialNamingTests {
    /// `Linear(3→5), ReLU, Linear(5→4), Tanh, …, Linear(4→2)` as `state_dict()` names it: indices 0, 2, 10 (the
    /// modules between are activations, and 10 sorts before 2 as text).
    func layers(prefix: String) throws -> (tensors: [String: Tensor], weights: [[Float]], biases: [[Float]]) {
        var rng = SeededRandom(seed: 3)
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextUnitFloat() - 0.5 } }
        let shapes = [(0, 5, 3), (2, 4, 5), (10, 2, 4)]
        var tensors: [String: Tensor] = [:]
        var weights: [[Float]] = [], biases: [[Float]] = []
        for (index, out, inputs) in shapes {
            let w = values(out * inputs), b = values(out)
            tensors["\(prefix)\(index).weight"] = try Tensor(shape: [out, inputs], float32: w)
            tensors["\(prefix)\(index).bias"] = try Tensor(shape: [out], float32: b)
            weights.append(w)
            biases.append(b)
        }
        return (tensors, weights, biases)
    }

    /// The naive forward pass: y = x·Wᵀ + b, `activation` between layers, none after the last.
    func reference(_ x: [Float], weights: [[Float]], biases: [[Float]], activation: (Float) -> Float) -> [Float] {
        var h = x
        for (layer, (w, b)) in zip(weights, biases).enumerated() {
            let out = b.count, inputs = h.count
            h = (0..<out).map { o in
                let z = b[o] + (0..<inputs).reduce(Float(0)) { $0 + w[o * inputs + $1] * h[$1] }
                return layer == weights.count - 1 ? z : activation(z)
            }
        }
        return h
    }

    @Test func aFileWithoutConfigRunsItsLayersInIndexOrder() throws {
        let (tensors, weights, biases) = try layers(prefix: "net.")
        let url = temporaryURL(".safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafetensorsFile(tensors: tensors, metadata: ["format": "pt"]).write(to: url)
        let model = try MLPModel(contentsOf: url)
        #expect(model.config.layers.map(\.weight) == ["net.0.weight", "net.2.weight", "net.10.weight"])
        #expect(model.config.layers.map(\.activation) == [.relu, .relu, .none])
        #expect((model.inputSize, model.outputSize) == (3, 2))
        let x: [Float] = [0.3, -0.7, 1.1]
        let expected = reference(x, weights: weights, biases: biases) { max(0, $0) }
        let got = try model.logits(rows: x, batch: 1)
        #expect(zip(got, expected).allSatisfy { abs($0 - $1) <= 1e-5 }, "\(got) vs \(expected)")
        // Another activation by flag (the CLI's --activation).
        let tanhModel = try MLPModel(config: ModelConfig.sequential(tensors: tensors, activation: .tanh), tensors: tensors)
        let tanhExpected = reference(x, weights: weights, biases: biases) { Foundation.tanh($0) }
        #expect(zip(try tanhModel.logits(rows: x, batch: 1), tanhExpected).allSatisfy { abs($0 - $1) <= 1e-5 })
    }

    @Test func namesThatAreNotOneSequentialAskForAConfig() throws {
        let (tensors, _, _) = try layers(prefix: "")
        var two = tensors
        two["head.0.weight"] = try Tensor(shape: [2, 2], float32: [1, 0, 0, 1])
        #expect(computeError { _ = try ModelConfig.sequential(tensors: two) }?.description.contains("more than one Sequential") == true)
        var broken = tensors
        broken["2.weight"] = try Tensor(shape: [4, 6], float32: [Float](repeating: 0, count: 24))
        #expect(computeError { _ = try ModelConfig.sequential(tensors: broken) }?.description.contains("do not chain") == true)
        let none = ["embedding": try Tensor(shape: [2, 2], float32: [1, 0, 0, 1])]
        #expect(computeError { _ = try MLPModel(file: SafetensorsFile(tensors: none)) }?.description.contains("give a config") == true)
    }

    /// A file as a Python user writes it without torch: NumPy arrays and the safetensors layout by hand.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["JOBFARM_TEST_PYTHON"] != nil, "needs JOBFARM_TEST_PYTHON (scripts/test sets it)"))
    func aFileWrittenByNumPyLoadsWithoutConfig() throws {
        let url = temporaryURL(".safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        let script = #"""
            import json, struct, sys
            import numpy as np
            rng = np.random.default_rng(1)
            shapes = {0: (6, 4), 2: (5, 6), 4: (3, 5)}
            tensors = {}
            for i, (out, inp) in shapes.items():
                tensors[f"model.{i}.weight"] = rng.standard_normal((out, inp)).astype("<f4")
                tensors[f"model.{i}.bias"] = rng.standard_normal(out).astype("<f4")
            header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
            for name, array in tensors.items():
                data = array.tobytes()
                header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
                offset += len(data)
                blobs.append(data)
            text = json.dumps(header).encode()
            text += b" " * (-len(text) % 8)
            with open(sys.argv[1], "wb") as f:
                f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
            x = np.array([[0.5, -1.0, 0.25, 2.0]], dtype=np.float32)
            h = x
            for i in (0, 2, 4):
                h = h @ tensors[f"model.{i}.weight"].T + tensors[f"model.{i}.bias"]
                if i != 4:
                    h = np.maximum(h, 0)
            print(json.dumps(h.ravel().tolist()))
            """#
        let python = ProcessInfo.processInfo.environment["JOBFARM_TEST_PYTHON"]!
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script, url.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let expected = try #require(try JSONSerialization.jsonObject(with: output) as? [Double]).map(Float.init)
        let model = try MLPModel(contentsOf: url)
        #expect(model.config.layers.map(\.weight) == ["model.0.weight", "model.2.weight", "model.4.weight"])
        let got = try model.logits(rows: [0.5, -1.0, 0.25, 2.0], batch: 1)
        #expect(got.count == 3 && zip(got, expected).allSatisfy { abs($0 - $1) <= 1e-4 }, "\(got) vs \(expected)")
    }
}
