import Compute
@testable import Dispatcher
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import JobFarmTesting
import JobProtocol
import JobQueue
import JobWorker
import Logging
import MLJobs
import ModelStore
import RedisClient
import Testing

/// A small MLP (8 → 16 → 4), FP32, PyTorch-style names.
func inferenceTestModel(seed: UInt64 = 11) throws -> MLPModel {
    var rng = SeededRandom(seed: seed)
    func values(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextUnitFloat() - 0.5 } }
    let config = ModelConfig(layers: [
        DenseLayerConfig(weight: "0.weight", bias: "0.bias", activation: .relu),
        DenseLayerConfig(weight: "2.weight", bias: "2.bias", activation: .softmax),
    ])
    return try MLPModel(config: config, tensors: [
        "0.weight": Tensor(shape: [16, 8], float32: values(128)), "0.bias": Tensor(shape: [16], float32: values(16)),
        "2.weight": Tensor(shape: [4, 16], float32: values(64)), "2.bias": Tensor(shape: [4], float32: values(4)),
    ])
}

/// One raw HTTP exchange (bytes in, bytes out), its JSON answers checked against docs/openapi.yaml.
func rawCall(_ api: DispatcherClient, _ method: String, _ path: String, body: Data? = nil, headers: [String: String] = [:],
             checkContract: Bool = true, sourceLocation: SourceLocation = #_sourceLocation) async throws -> (status: Int, headers: [String: String], body: Data, json: JSONValue?) {
    var request = URLRequest(url: URL(string: api.base + path)!)
    request.httpMethod = method
    request.timeoutInterval = 90
    if let key = api.key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    request.httpBody = body
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = try #require(response as? HTTPURLResponse)
    var fields: [String: String] = [:]
    for (key, value) in http.allHeaderFields {
        if let key = key as? String, let value = value as? String { fields[key.lowercased()] = value }
    }
    let contentType = fields["content-type"] ?? ""
    var json: JSONValue?
    if contentType.contains("json") {
        json = try? JSONValue(parsing: data)
    } else if let length = fields["inference-header-content-length"].flatMap({ Int($0) }), length <= data.count {
        json = try? JSONValue(parsing: data.prefix(length))
    }
    let template = String(path.split(separator: "?", maxSplits: 1).first ?? "")  // the query is not part of the path
    for issue in !checkContract ? [] : api.contract.check(method: method, path: template, status: http.statusCode, contentType: contentType,
                                    body: contentType.contains("json") ? json : nil) {
        Issue.record("\(method) \(path) → \(http.statusCode): \(issue)", sourceLocation: sourceLocation)
    }
    return (http.statusCode, fields, data, json)
}

/// A JSON value from its text (for expectations).
func js(_ text: String) -> JSONValue { (try? JSONValue(parsing: text)) ?? .null }

/// Little-endian bytes of float32 values, and of the same values as float16.
func float32Bytes(_ values: [Float]) -> Data { values.map { $0.bitPattern.littleEndian }.withUnsafeBytes { Data($0) } }
func float16Bytes(_ values: [Float]) -> Data { values.map { Float16($0).bitPattern.littleEndian }.withUnsafeBytes { Data($0) } }

/// Float32 values of little-endian bytes.
func floats(_ data: Data) -> [Float] {
    data.withUnsafeBytes { raw in (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) } }
}

@Suite("Open Inference Protocol: reading requests")
struct InferenceRequestTests {
    func parse(_ json: String, binary: Data = Data()) throws -> InferenceRequestV2 {
        let body = [UInt8](Data(json.utf8) + binary)
        let length = binary.isEmpty ? nil : json.utf8.count
        return try body.withUnsafeBytes { raw in try InferenceRequestV2.parse(raw, headerLength: length) }
    }

    func message(_ json: String, binary: Data = Data(), headerLength: Int? = nil) -> String {
        do {
            if let headerLength {
                _ = try [UInt8](json.utf8).withUnsafeBytes { raw in try InferenceRequestV2.parse(raw, headerLength: headerLength) }
            } else {
                _ = try parse(json, binary: binary)
            }
            return "no error"
        } catch let error as Problem {
            #expect(error.json["status"] == .number(400))
            return error.detail
        } catch {
            return "\(error)"
        }
    }

    @Test func jsonAndBinaryInputsBecomeTheSameTensor() throws {
        let values: [Float] = [0.5, -1.25, 3, 0.001, 7, 8]
        let json = try parse(#"{"id": "r1", "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [[0.5, -1.25, 3], [0.001, 7, 8]]}]}"#)
        let binary = try parse(#"{"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}], "parameters": {"binary_data_output": true}}"#,
                               binary: float32Bytes(values))
        #expect(json.tensor == binary.tensor)
        let text = json.tensor["data"]?.stringValue
        #expect(text == float32Bytes(values).base64EncodedString())
        #expect((json.rows, json.width, json.id) == (2, 3, "r1"))
        #expect(json.outputs.map(\.name) == ["logits", "probabilities"] && json.outputs.allSatisfy { !$0.binary })
        #expect(binary.outputs.allSatisfy { $0.binary })
        // FP16 bytes go to the worker as they came; one output asked, as JSON, overriding binary_data_output.
        let half = try parse(#"{"inputs": [{"name": "input", "shape": [6], "datatype": "FP16", "parameters": {"binary_data_size": 12}}], "parameters": {"binary_data_output": true}, "outputs": [{"name": "probabilities", "parameters": {"binary_data": false}}]}"#,
                             binary: float16Bytes(values))
        let halfText = half.tensor["data"]?.stringValue
        #expect(half.tensor["dtype"] == .string("float16") && halfText == float16Bytes(values).base64EncodedString())
        #expect((half.rows, half.width) == (1, 6))
        #expect(half.outputs.count == 1 && half.outputs[0].name == "probabilities" && !half.outputs[0].binary)
    }

    @Test func everyMistakeIsA400ThatSaysWhatToSend() {
        let input = #""name": "input", "shape": [1, 2], "datatype": "FP32""#
        #expect(message("[1]").contains("must be a JSON object"))
        #expect(message(#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}"#).contains("no input 'x'; its one input is 'input'"))
        #expect(message(#"{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]}"#).contains("datatype INT32 is not supported; send FP32 or FP16"))
        #expect(message(#"{"inputs": [{\#(input), "data": [1, 2, 3]}]}"#).contains("data has 3 numbers, but shape [1, 2] needs 2"))
        #expect(message(#"{"inputs": [{\#(input), "data": [1, "2"]}]}"#).contains("row 0 feature 1) is a string, not a number"))
        #expect(message(#"{"inputs": [{\#(input), "data": [1, 1e39]}]}"#).contains("overflows FP32"))
        #expect(message(#"{"inputs": [{\#(input), "data": [1, 2]}], "outputs": [{"name": "scores"}]}"#).contains("no output 'scores'; its outputs are logits and probabilities"))
        #expect(message(#"{"inputs": [{\#(input), "parameters": {"binary_data_size": 8}}]}"#, binary: float32Bytes([1, .nan])).contains("row 0 feature 1 is nan; inputs must be finite"))
        #expect(message(#"{"inputs": [{\#(input), "parameters": {"binary_data_size": 4}}]}"#, binary: float32Bytes([1])).contains("binary_data_size is 4, but shape [1, 2] of FP32 needs 8 bytes"))
        #expect(message(#"{"inputs": [{\#(input), "parameters": {"binary_data_size": 8}}]}"#, binary: float32Bytes([1, 2, 3])).contains("12 bytes after the JSON header, but the inputs' binary_data_size add up to 8"))
        #expect(message(#"{"inputs": [{"name": "input", "shape": [1000000, 16], "datatype": "FP32", "data": [1]}]}"#).contains("more than the"))
        #expect(message(#"{"inputs": []}"#, headerLength: 100).contains("Inference-Header-Content-Length is 100 but the body has 14 bytes"))
    }
}

@Suite("Open Inference Protocol: through a real worker", .enabled(if: TestRedis.available), .serialized)
struct InferenceProtocolTests {
    /// A worker with the ML kinds, a model `mlp` pushed, a dispatcher with API keys; `body` gets the client with an
    /// operator key allowed every tier, and the model.
    func withInferenceFarm<T: Sendable>(
        keyTiers: [String]? = nil, _ body: @Sendable (DispatcherClient, JobFarm, MLPModel) async throws -> T
    ) async throws -> T {
        let farm = try TestRedis.farm()
        let model = try inferenceTestModel()
        let registry = ModelRegistry(client: RedisClient(configuration: farm.configuration.redis, name: "test-models"), namespace: farm.configuration.namespace)
        _ = try await registry.push(model: model, name: "mlp")
        let (key, _) = try await apiKeys(farm).create(tenant: "acme", tiers: keyTiers ?? farm.configuration.tiers, isOperator: false)
        var logger = Logger(label: "test.ml")
        logger.logLevel = .error
        var handlers = HandlerRegistry()
        registerMLJobs(into: &handlers, farm: farm, options: MLJobOptions(workerConcurrency: 4, blasThreads: 1, computeThreads: 1), logger: logger)
        return try await withTestWorker(farm: farm, registry: handlers, queues: ["ml"], concurrency: 4) { _ in
            try await waitUntilRegistered(farm)
            return try await withDispatcher(farm: farm, configuration: DispatcherConfiguration(port: 0, authentication: .apiKeys)) { api in
                try await body(api.with(key: key), farm, model)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func healthMetadataAndReadiness() async throws {
        try await withInferenceFarm { api, _, _ in
            let anonymous = api.with(key: nil)
            #expect(try await rawCall(anonymous, "GET", "/v2/health/live").status == 200)
            #expect(try await rawCall(anonymous, "GET", "/v2/health/ready").json?["ready"] == .bool(true))
            let server = try await rawCall(anonymous, "GET", "/v2")
            let extensions = items(server.json?["extensions"])
            #expect(extensions.contains(.string("binary_tensor_data")))
            let refused = try await rawCall(anonymous, "GET", "/v2/models/mlp")
            #expect(refused.status == 401 && refused.json?["error"]?.stringValue?.contains("API key") == true)

            let metadata = try await rawCall(api, "GET", "/v2/models/mlp")
            #expect(metadata.status == 200)
            #expect(metadata.json?["inputs"] == js(#"[{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]"#))
            #expect(metadata.json?["outputs"] == js(#"[{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}, {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]}]"#))
            #expect(metadata.json?["versions"] == js(#"["1"]"#))
            #expect(try await rawCall(api, "GET", "/v2/models/mlp/versions/1").status == 200)
            #expect(try await rawCall(api, "GET", "/v2/models/mlp/ready").json == js(#"{"name": "mlp", "ready": true}"#))
            let missing = try await rawCall(api, "GET", "/v2/models/ghost/versions/3/ready")
            #expect(missing.status == 404 && missing.json?["error"]?.stringValue?.contains("model 'ghost' has no version 3") == true)
            let noVersion = try await rawCall(api, "GET", "/v2/models/mlp/versions/9")
            #expect(noVersion.status == 404 && noVersion.json?["error"]?.stringValue?.contains("no version 9") == true)
            let aliasInName = try await rawCall(api, "GET", "/v2/models/mlp:production")
            #expect(aliasInName.status == 400 && aliasInName.json?["error"]?.stringValue?.contains("goes in /versions/{version}") == true)
            #expect(try await rawCall(api, "GET", "/v2/models/mlp/versions/latest@fp32/ready").status == 200)
            let wrongMethod = try await rawCall(api, "DELETE", "/v2/models/mlp", checkContract: false)
            #expect(wrongMethod.status == 405 && wrongMethod.json?["error"] != nil)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func jsonAndBinaryFP32AndFP16InferenceMatchTheModel() async throws {
        try await withInferenceFarm { api, _, model in
            let rows = 3
            var rng = SeededRandom(seed: 5)
            let input = (0..<(rows * 8)).map { _ in rng.nextUnitFloat() * 2 - 1 }
            let logits = try model.logits(rows: input, batch: rows)
            let probabilities = try model.probabilities(rows: input, batch: rows)

            // JSON in, JSON out.
            let numbers = input.map { "\(FloatText.string($0))" }.joined(separator: ",")
            let json = try await rawCall(api, "POST", "/v2/models/mlp/infer", body: Data(#"{"id": "q1", "inputs": [{"name": "input", "shape": [3, 8], "datatype": "FP32", "data": [\#(numbers)]}]}"#.utf8),
                                         headers: ["Content-Type": "application/json"])
            #expect(json.status == 200, "\(String(decoding: json.body, as: UTF8.self))")
            #expect(json.json?["model_name"] == .string("mlp") && json.json?["model_version"] == .string("1") && json.json?["id"] == .string("q1"))
            #expect(json.json?["parameters"]?["tier"] == .string("standard"))
            let outputs = items(json.json?["outputs"])
            #expect(outputs.map { $0["name"] } == [.string("logits"), .string("probabilities")])
            #expect(outputs.first?["shape"] == js("[3, 4]"))
            let jsonLogits = items(outputs.first?["data"]).compactMap { $0.doubleValue.map(Float.init) }
            #expect(jsonLogits == logits, "the JSON numbers read back to the float32 values the worker computed")
            let jsonProbabilities = items(outputs.last?["data"]).compactMap { $0.doubleValue.map(Float.init) }
            #expect(zip(jsonProbabilities, probabilities).allSatisfy { abs($0 - $1) <= 1e-6 })
            #expect(json.headers["jobfarm-job-id"] != nil)

            // Binary FP32 in (no Content-Type, as tritonclient sends it), binary logits out, in the premium tier.
            let header = #"{"inputs": [{"name": "input", "shape": [3, 8], "datatype": "FP32", "parameters": {"binary_data_size": 96}}], "outputs": [{"name": "logits", "parameters": {"binary_data": true}}]}"#
            let binary = try await rawCall(api, "POST", "/v2/models/mlp/versions/1/infer", body: Data(header.utf8) + float32Bytes(input),
                                           headers: ["Inference-Header-Content-Length": "\(header.utf8.count)", "JobFarm-Tier": "premium"])
            #expect(binary.status == 200, "\(String(decoding: binary.body, as: UTF8.self))")
            #expect(binary.headers["content-type"] == "application/octet-stream")
            let length = try #require(binary.headers["inference-header-content-length"].flatMap { Int($0) })
            #expect(binary.json?["parameters"]?["tier"] == .string("premium"))
            #expect(items(binary.json?["outputs"]).map { $0["parameters"]?["binary_data_size"] } == [.number(48)])
            #expect(floats(binary.body.dropFirst(length)) == logits)
            let id = try #require(binary.headers["jobfarm-job-id"])
            #expect(try await api.get("/v1/jobs/\(id)").json?["tier"] == .string("premium"))

            // Binary FP16 in: the model sees the float16 values.
            let halfHeader = #"{"inputs": [{"name": "input", "shape": [3, 8], "datatype": "FP16", "parameters": {"binary_data_size": 48}}], "parameters": {"binary_data_output": true}}"#
            let half = try await rawCall(api, "POST", "/v2/models/mlp/infer", body: Data(halfHeader.utf8) + float16Bytes(input),
                                         headers: ["Inference-Header-Content-Length": "\(halfHeader.utf8.count)", "Content-Type": "application/octet-stream"])
            #expect(half.status == 200, "\(String(decoding: half.body, as: UTF8.self))")
            let halfLength = try #require(half.headers["inference-header-content-length"].flatMap { Int($0) })
            let halfValues = floats(half.body.dropFirst(halfLength))
            #expect(halfValues.count == 24)
            let expected = try model.logits(rows: input.map { Float(Float16($0)) }, batch: rows)
            #expect(zip(halfValues.prefix(12), expected).allSatisfy { abs($0 - $1) <= 1e-5 })
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func refusalsComeInTheProtocolsErrorShape() async throws {
        try await withInferenceFarm(keyTiers: ["standard"]) { api, farm, _ in
            let request = Data(#"{"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}"#.utf8)
            let forbidden = try await rawCall(api, "POST", "/v2/models/mlp/infer", body: request, headers: ["JobFarm-Tier": "premium"])
            #expect(forbidden.status == 403 && forbidden.json?["error"]?.stringValue?.contains("may not use tier 'premium'") == true)
            let unknownTier = try await rawCall(api, "POST", "/v2/models/mlp/infer", body: request, headers: ["JobFarm-Tier": "gold"])
            #expect(unknownTier.status == 400 && unknownTier.json?["error"]?.stringValue?.contains("not a tier of this farm") == true)
            let wide = try await rawCall(api, "POST", "/v2/models/mlp/infer",
                                         body: Data(#"{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}"#.utf8))
            #expect(wide.status == 400 && wide.json?["error"]?.stringValue?.contains("has 2 features per row, but model mlp:1 takes 8") == true)
            let ghost = try await rawCall(api, "POST", "/v2/models/ghost/infer", body: request)
            #expect(ghost.status == 404 && ghost.json?["error"] != nil)
            let notJSON = try await rawCall(api, "POST", "/v2/models/mlp/infer", body: Data("{".utf8))
            #expect(notJSON.status == 400 && notJSON.json?["error"]?.stringValue?.contains("not valid JSON") == true)
            // The key's default tier is the farm's default when it may use it.
            let ok = try await rawCall(api, "POST", "/v2/models/mlp/infer", body: request)
            #expect(ok.status == 200 && ok.json?["parameters"]?["tier"] == .string("standard"))
            #expect(try await farm.stats(queues: ["ml"]).first?.dead == 0, "nothing refused reached a worker")
        }
    }

    @Test func aKeyWithoutTheDefaultTierRunsInItsHighestTier() throws {
        let tiers = ["premium", "standard", "free"]
        let caller = Caller(tenant: "t", keyID: "k", tiers: ["free", "premium"], isOperator: false, policy: TenantPolicy())
        #expect(try Dispatcher.inferenceTier(nil, caller: caller, tiers: tiers, defaultTier: "standard") == "premium")
        #expect(try Dispatcher.inferenceTier("free", caller: caller, tiers: tiers, defaultTier: "standard") == "free")
        #expect(try Dispatcher.inferenceTier(nil, caller: .development, tiers: tiers, defaultTier: "standard") == "standard")
        #expect(throws: Problem.self) { try Dispatcher.inferenceTier("gold", caller: caller, tiers: tiers, defaultTier: "standard") }
    }

    /// The `tritonclient[http]` package (PyPI) against the dispatcher: JSON and binary tensors, FP32 and FP16,
    /// through a worker; scripts/triton-client.py prints what it sent and got, and the model checks it here.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["JOBFARM_TRITON_PYTHON"] != nil,
                   "needs JOBFARM_TRITON_PYTHON, a python3 with tritonclient[http] (scripts/test sets it)"),
          .timeLimit(.minutes(2)))
    func tritonClientGetsNumPyArraysBack() async throws {
        let python = ProcessInfo.processInfo.environment["JOBFARM_TRITON_PYTHON"]!
        let script = PackagePaths.root.appendingPathComponent("scripts/triton-client.py").path
        try await withInferenceFarm { api, _, model in
            let (status, output) = try await run(python, [script, api.base.replacingOccurrences(of: "http://", with: ""), "mlp", api.key ?? ""],
                                                 timeout: .seconds(90))
            #expect(status == 0, "\(output.suffix(3000))")
            let report = try JSONValue(parsing: String(output.split(separator: "\n").last ?? ""))
            #expect(report["live"] == .bool(true) && report["ready"] == .bool(true) && report["modelReady"] == .bool(true))
            #expect(report["inputShape"] == js("[-1, 8]"))
            let cases = items(report["cases"])
            #expect(cases.count == 4)
            for item in cases {
                let rows = try #require(item["rows"]?.intValue)
                let input = items(item["input"]).compactMap { $0.doubleValue.map(Float.init) }
                let sent = item["datatype"] == .string("FP16") ? input.map { Float(Float16($0)) } : input
                let expected = try model.logits(rows: sent, batch: rows)
                let logits = items(item["logits"]).compactMap { $0.doubleValue.map(Float.init) }
                #expect(logits.count == expected.count && zip(logits, expected).allSatisfy { abs($0 - $1) <= 1e-5 }, "\(item["name"]?.stringValue ?? "")")
                let probabilities = items(item["probabilities"]).compactMap { $0.doubleValue.map(Float.init) }
                #expect(zip(probabilities, try model.probabilities(rows: sent, batch: rows)).allSatisfy { abs($0 - $1) <= 1e-5 })
            }
        }
    }
}
