import Compute
import Foundation
import JobFarmTesting
import JobPayloads
import JobProtocol
import JobQueue
import MLJobs
import ModelStore
import Testing

/// Base64 of little-endian float32 values, as `base64.b64encode(array.astype("<f4").tobytes())` gives.
func base64Float32(_ values: [Float]) -> String {
    values.map { $0.bitPattern.littleEndian }.withUnsafeBytes { Data($0).base64EncodedString() }
}

/// Base64 of little-endian float16 values.
func base64Float16(_ values: [Float]) -> String {
    values.map { Float16($0).bitPattern.littleEndian }.withUnsafeBytes { Data($0).base64EncodedString() }
}

/// The float32 values of a result's tensor object.
func floats(ofTensor value: JSONValue?) throws -> [Float] {
    let text = try #require(value?["data"]?.stringValue)
    let data = try #require(Data(base64Encoded: text))
    return data.withUnsafeBytes { raw in (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) } }
}

@Suite("Binary tensors: payload checks")
struct TensorPayloadTests {
    func problems(_ text: String) throws -> [PayloadProblem] { InferencePayload.problems(in: try JSONValue(parsing: text)) }

    @Test func jsonRowsAndTensorsReadTheSameValues() throws {
        let values: [Float] = [0.5, -1.25, 3, 1e-3, 7, 8]
        let json = try InferencePayload(parsing: try JSONValue(parsing: #"{"model": "m", "inputs": [[0.5, -1.25, 3], [0.001, 7, 8]]}"#))
        let tensor = try InferencePayload(parsing: try JSONValue(parsing: """
            {"model": "m", "inputs": {"dtype": "float32", "shape": [2, 3], "data": "\(base64Float32(values))"}, "outputFormat": "binary"}
            """))
        guard case .values(let read) = json.inputs, case .tensor(let t) = tensor.inputs else { Issue.record("wrong forms"); return }
        #expect(read == values)
        #expect(try t.floats() == values)
        #expect((json.rows, json.width) == (2, 3) && (tensor.rows, tensor.width) == (2, 3))
        #expect(tensor.outputFormat == .binary && json.outputFormat == .json)
        let half = try InferencePayload(parsing: try JSONValue(parsing: """
            {"model": "m", "inputs": {"dtype": "float16", "shape": [2, 3], "data": "\(base64Float16(values))"}}
            """))
        guard case .tensor(let h) = half.inputs else { Issue.record("not a tensor"); return }
        #expect(try h.floats() == values.map { Float(Float16($0)) })
    }

    @Test func everyProblemNamesItsField() throws {
        let data = base64Float32([1, 2, 3, 4])
        #expect(try problems(#"{"model": "m", "inputs": [[1, 2], [3, 4], [5, 6], [7]]}"#) == [
            PayloadProblem("/inputs/3", "row 3 has 1 values, row 0 has 2: every row needs the same number of features")])
        #expect(try problems(#"{"model": "m", "inputs": [[1, "x"], [1e39, 2]]}"#).map(\.pointer) == ["/inputs/0/1", "/inputs/1/0"])
        #expect(try problems(#"{"model": "m", "inputs": {"dtype": "float64", "shape": [2, 2], "data": "\#(data)"}}"#) == [
            PayloadProblem("/inputs/dtype", "dtype 'float64' is not float32 or float16")])
        let shape = try problems(#"{"model": "m", "inputs": {"dtype": "float32", "shape": [3, 2], "data": "\#(data)"}}"#)
        #expect(shape.map(\.pointer) == ["/inputs/data"])
        #expect(shape.first?.detail.contains("holds 16 bytes, but shape [3, 2] of float32 needs 24") == true)
        #expect(try problems(#"{"model": "m", "inputs": {"dtype": "float32", "shape": [2], "data": "\#(data)"}}"#).map(\.pointer) == ["/inputs/shape"])
        let bad = try problems(#"{"model": "m", "inputs": {"dtype": "float32", "shape": [1, 3], "data": "AAAAAAAA!AAAAAAA"}}"#)
        #expect(bad.map(\.pointer) == ["/inputs/data"])
        #expect(bad.first?.detail.contains("not base64: character 8 is '!'") == true)
        let nan = base64Float32([1, .nan, 3, 4])
        #expect(try problems(#"{"model": "m", "inputs": {"dtype": "float32", "shape": [2, 2], "data": "\#(nan)"}}"#) == [
            PayloadProblem("/inputs/data", "row 0 feature 1 is nan; inputs must be finite")])
        #expect(try problems(#"{"model": "m", "inputs": [[1]], "outputFormat": "numpy", "extra": 1}"#).map(\.pointer) == ["/extra", "/outputFormat"])
        #expect(try problems(#"{"inputs": []}"#).map(\.pointer) == ["/model", "/inputs"])
        #expect(try problems("[1]").map(\.pointer) == [""])
    }

    @Test func base64DecoderAgreesWithFoundation() throws {
        var generator = SystemRandomNumberGenerator()
        for count in 0..<64 {
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var text = Data(bytes).base64EncodedString()
            var out = [UInt8](repeating: 0, count: count)
            try text.withUTF8 { utf8 in
                #expect(Base64.decodedCount(utf8) == count)
                try out.withUnsafeMutableBytes { try Base64.decode(utf8, into: $0) }
            }
            #expect(out == bytes)
        }
        for bad in ["A===", "AB=C", "ABC", "AB\nC"] {
            var text = bad
            let failed: Bool = text.withUTF8 { utf8 in
                guard let n = Base64.decodedCount(utf8) else { return true }
                var out = [UInt8](repeating: 0, count: n)
                return (try? out.withUnsafeMutableBytes { try Base64.decode(utf8, into: $0) }) == nil
            }
            #expect(failed, "\(bad)")
        }
    }

    @Test func theOtherKindsPointAtTheirFields() throws {
        #expect(TrainPayload.problems(in: try JSONValue(parsing: #"{"dataset": "d.csv", "name": "bad name!", "epochs": 0, "hiddenSizes": [4, 0]}"#))
            .map(\.pointer) == ["/name", "/epochs", "/hiddenSizes/1"])
        #expect(TrainPayload.problems(in: try JSONValue(parsing: #"{"dataset": "d.csv"}"#)) == [PayloadProblem("/name", "required")])
        #expect(BatchAnalysisPayload.problems(in: try JSONValue(parsing: #"{"dataset": 3}"#)) == [PayloadProblem("/dataset", "must be a string, got a number")])
        #expect(QuantizePayload.problems(in: try JSONValue(parsing: #"{"model": "m", "precision": "int4"}"#)).map(\.pointer) == ["/precision"])
        #expect(ValidatePayload.problems(in: try JSONValue(parsing: #"{"candidate": "m", "dataset": "d", "holdout": {"fraction": 2}}"#))
            .map(\.pointer) == ["/holdout/fraction", "/holdout"])
        #expect(KindPayloads.problems(kind: "echo", in: .null) == nil)
    }
}

@Suite("Binary tensors: the documented Python client")
struct TensorDocsTests {
    /// Every line of docs/JOBS.md's Python block is in scripts/tensor-client.py (which the NumPy test runs), in order.
    @Test func jobsPythonSampleIsTheTestedScript() throws {
        let jobs = try String(contentsOf: PackagePaths.root.appendingPathComponent("docs/JOBS.md"), encoding: .utf8)
        let script = try String(contentsOf: PackagePaths.root.appendingPathComponent("scripts/tensor-client.py"), encoding: .utf8)
        let lines = script.split(separator: "\n").map(String.init)
        let blocks = jobs.components(separatedBy: "```python\n").dropFirst().map { $0.components(separatedBy: "```")[0] }
        #expect(blocks.count == 1)
        var position = 0
        for line in (blocks.first ?? "").split(separator: "\n").map(String.init) where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            guard let found = lines[position...].firstIndex(of: line) else {
                Issue.record("docs/JOBS.md line not in scripts/tensor-client.py (in order): \(line)")
                return
            }
            position = found + 1
        }
    }
}

@Suite("Binary tensors through the worker", .enabled(if: TestRedis.available))
struct BinaryTensorTests {
    @Test("tensor inputs (float32, float16) and binary outputs give the JSON path's answers; bad tensors are dead-lettered naming the field")
    func tensorsEndToEnd() async throws {
        let farm = try mlTestFarm()
        let model = try randomModel(inputs: 8, hidden: 16, outputs: 4)
        var rng = SeededRandom(seed: 5)
        let rows = (0..<5).map { _ in (0..<8).map { _ in rng.nextUnitFloat() * 4 - 2 } }
        let flat = rows.flatMap { $0 }
        try await withMLWorker(farm: farm) { environment in
            _ = try await environment.models.push(model: model, name: "tiny")
            let jsonRows = "[" + rows.map { "[" + $0.map { "\($0)" }.joined(separator: ",") + "]" }.joined(separator: ",") + "]"
            let viaJSON = try await succeed(farm, "inference", #"{"model": "tiny", "inputs": \#(jsonRows), "returnProbabilities": true}"#)
            let tensor = #"{"dtype": "float32", "shape": [5, 8], "data": "\#(base64Float32(flat))"}"#
            let viaTensor = try await succeed(farm, "inference", #"{"model": "tiny", "inputs": \#(tensor), "returnProbabilities": true}"#)
            #expect(viaTensor["logits"] == viaJSON["logits"])
            #expect(viaTensor["predictions"] == viaJSON["predictions"])
            let binary = try await succeed(farm, "inference", #"{"model": "tiny", "inputs": \#(tensor), "returnProbabilities": true, "outputFormat": "binary"}"#)
            #expect(binary["logits"]?["dtype"] == .string("float32"))
            #expect(binary["logits"]?["shape"] == .array([.number(5), .number(4)]))
            let numbers = viaJSON["logits"]?.items.flatMap { $0.items.compactMap { item in item.doubleValue.map { Float($0) } } } ?? []
            #expect(try floats(ofTensor: binary["logits"]) == numbers, "the JSON text of each logit reads back as the binary value")
            let probabilities = viaJSON["probabilities"]?.items.flatMap { $0.items.compactMap { item in item.doubleValue.map { Float($0) } } } ?? []
            #expect(try floats(ofTensor: binary["probabilities"]) == probabilities)
            let half = #"{"dtype": "float16", "shape": [5, 8], "data": "\#(base64Float16(flat))"}"#
            let viaHalf = try await succeed(farm, "inference", #"{"model": "tiny", "inputs": \#(half)}"#)
            let halfRows = "[" + rows.map { "[" + $0.map { "\(Float(Float16($0)))" }.joined(separator: ",") + "]" }.joined(separator: ",") + "]"
            let viaHalfJSON = try await succeed(farm, "inference", #"{"model": "tiny", "inputs": \#(halfRows)}"#)
            #expect(viaHalf["logits"] == viaHalfJSON["logits"])

            let cases: [(String, [String])] = [
                (#"{"dtype": "int8", "shape": [5, 8], "data": "AAAA"}"#, ["/inputs/dtype", "'int8' is not float32 or float16"]),
                (#"{"dtype": "float32", "shape": [4, 8], "data": "\#(base64Float32(flat))"}"#, ["/inputs/data", "holds 160 bytes", "[4, 8]", "needs 128"]),
                (#"{"dtype": "float32", "shape": [8, 5], "data": "\#(base64Float32(flat))"}"#, ["shape mismatch", "/inputs/shape is [8, 5]", "takes 8 features"]),
                (#"{"dtype": "float32", "shape": [1, 8], "data": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*AAAAAAA="}"#, ["/inputs/data", "not base64", "character 35 is '*'"]),
            ]
            for (inputs, expected) in cases {
                let status = try await runJob(farm, "inference", #"{"model": "tiny", "inputs": \#(inputs)}"#)
                #expect(status.state == .dead && status.reason == "non_retryable", "\(inputs): \(status.state.rawValue)")
                for word in expected {
                    #expect((status.error ?? "").contains(word), "'\(status.error ?? "")' should mention '\(word)'")
                }
            }
        }
    }

    @Test("a NumPy client: inputs from ndarray.tobytes() + base64, the farm's logits within 1e-5 of NumPy's forward pass")
    func numpyClient() async throws {
        let python = try #require(ProcessInfo.processInfo.environment["JOBFARM_TEST_PYTHON"],
                                  "JOBFARM_TEST_PYTHON must name a python3 with NumPy: scripts/test sets it (ensure_numpy in scripts/lib.sh)")
        let fixtures = PackagePaths.root.appendingPathComponent("Tests/ComputeTests/Fixtures")
        let weights = fixtures.appendingPathComponent("mlp_64_32_10.safetensors")
        let configPath = fixtures.appendingPathComponent("mlp_64_32_10.config.json")
        // The layers only: the registry keeps layer tensors, not the fixture's standardisation tensors.
        let layersOnly = ModelConfig(layers: try ModelConfig(json: Data(contentsOf: configPath)).layers)
        let model = try MLPModel(contentsOf: weights, config: layersOnly)
        let configFile = FileManager.default.temporaryDirectory.appendingPathComponent("numpy-mlp-\(UUID().uuidString).json")
        try JSONEncoder().encode(layersOnly).write(to: configFile)
        defer { try? FileManager.default.removeItem(at: configFile) }
        let script = PackagePaths.root.appendingPathComponent("scripts/tensor-client.py").path
        let farm = try mlTestFarm()
        try await withMLWorker(farm: farm) { environment in
            _ = try await environment.models.push(model: model, name: "numpy-mlp")
            for (rows, seed) in [(1, 3), (512, 11)] {
                let request = try runProcess(python, [script, "request", weights.path, "\(rows)", "\(seed)"])
                #expect(request.status == 0, "\(request.errors)")
                let result = try await succeed(farm, "inference", request.output)
                let check = try runProcess(python, [script, "check", weights.path, configFile.path, "\(rows)", "\(seed)"], input: result.jsonText)
                #expect(check.status == 0, "NumPy disagrees (\(rows) rows): \(check.output) \(check.errors)")
            }
        }
    }
}

/// Runs `executable` with `arguments`, `input` on its standard input (through files: no pipes to drain on other
/// threads); its exit status and outputs.
func runProcess(_ executable: String, _ arguments: [String], input: String = "") throws -> (status: Int32, output: String, errors: String) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tensor-client-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let inputFile = directory.appendingPathComponent("in"), outputFile = directory.appendingPathComponent("out"),
        errorFile = directory.appendingPathComponent("err")
    try Data(input.utf8).write(to: inputFile)
    _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardInput = try FileHandle(forReadingFrom: inputFile)
    process.standardOutput = try FileHandle(forWritingTo: outputFile)
    process.standardError = try FileHandle(forWritingTo: errorFile)
    try process.run()
    process.waitUntilExit()
    return (process.terminationStatus, try String(contentsOf: outputFile, encoding: .utf8), try String(contentsOf: errorFile, encoding: .utf8))
}
