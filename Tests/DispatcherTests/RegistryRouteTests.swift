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

/// A model bigger than the registry's 512 KiB chunk: 64 → 4096 → 4, FP32 (about 1.1 MB of safetensors).
func largeTestModel() throws -> MLPModel {
    var rng = SeededRandom(seed: 3)
    func values(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextUnitFloat() - 0.5 } }
    let config = ModelConfig(layers: [
        DenseLayerConfig(weight: "0.weight", bias: "0.bias", activation: .relu),
        DenseLayerConfig(weight: "2.weight", bias: "2.bias", activation: .none),
    ])
    return try MLPModel(config: config, tensors: [
        "0.weight": Tensor(shape: [4096, 64], float32: values(4096 * 64)), "0.bias": Tensor(shape: [4096], float32: values(4096)),
        "2.weight": Tensor(shape: [4, 4096], float32: values(4 * 4096)), "2.bias": Tensor(shape: [4], float32: values(4)),
    ])
}

/// The bytes of a safetensors file whose header is `header` (JSON) and whose data section is `data` bytes of zeros.
func safetensorsBytes(header: String, data: Int) -> Data {
    var length = UInt64(header.utf8.count).littleEndian
    return withUnsafeBytes(of: &length) { Data($0) } + Data(header.utf8) + Data(count: data)
}

/// Keys of `namespace` matching `pattern` (after the namespace).
func keys(_ farm: JobFarm, _ pattern: String) async throws -> [String] {
    let client = RedisClient(configuration: farm.configuration.redis, name: "test-keys")
    defer { client.close() }
    return (try await client.execute(RedisCommand("KEYS", "\(farm.configuration.namespace):\(pattern)")).array ?? []).compactMap(\.string)
}

@Suite("Model and dataset registry routes", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL"))
struct RegistryRouteTests {
    /// A dispatcher with API keys on an ML worker; `body` gets an operator client and a tenant (non-operator) client.
    func withRegistryFarm<T: Sendable>(
        uploadLimit: Int? = nil, _ body: @Sendable (DispatcherClient, DispatcherClient, JobFarm) async throws -> T
    ) async throws -> T {
        let farm = try TestRedis.farm()
        let (operatorKey, _) = try await apiKeys(farm).create(tenant: "ops", tiers: farm.configuration.tiers, isOperator: true)
        let (tenantKey, _) = try await apiKeys(farm).create(tenant: "acme", tiers: farm.configuration.tiers, isOperator: false)
        var logger = Logger(label: "test.ml")
        logger.logLevel = .error
        var handlers = HandlerRegistry()
        registerMLJobs(into: &handlers, farm: farm, options: MLJobOptions(workerConcurrency: 2, blasThreads: 1, computeThreads: 1), logger: logger)
        var configuration = DispatcherConfiguration(port: 0, authentication: .apiKeys)
        if let uploadLimit { configuration.uploadLimitBytes = uploadLimit }
        return try await withTestWorker(farm: farm, registry: handlers, queues: ["ml"], concurrency: 2) { _ in
            try await waitUntilRegistered(farm)
            return try await withDispatcher(farm: farm, configuration: configuration) { api in
                try await body(api.with(key: operatorKey), api.with(key: tenantKey), farm)
            }
        }
    }

    func upload(_ api: DispatcherClient, _ path: String, _ body: Data, contentType: String = "application/octet-stream",
                sourceLocation: SourceLocation = #_sourceLocation) async throws -> (status: Int, headers: [String: String], body: Data, json: JSONValue?) {
        try await rawCall(api, "POST", path, body: body, headers: ["Content-Type": contentType], sourceLocation: sourceLocation)
    }

    func put(_ api: DispatcherClient, _ path: String, _ json: String) async throws -> (status: Int, headers: [String: String], body: Data, json: JSONValue?) {
        try await rawCall(api, "PUT", path, body: Data(json.utf8), headers: ["Content-Type": "application/json"])
    }

    @Test(.timeLimit(.minutes(1)))
    func aModelPushedOverHTTPIsByteIdenticalAndRunsAnInferenceJob() async throws {
        try await withRegistryFarm { api, tenant, farm in
            let model = try largeTestModel()
            let file = try model.safetensorsFile().serialized()
            #expect(file.count > 2 * 512 * 1024, "the body spans several chunks")
            let refused = try await upload(tenant, "/v1/models?name=big", file)
            #expect(refused.status == 403, "pushing a model needs an operator key")

            let pushed = try await upload(api, "/v1/models?name=big", file)
            #expect(pushed.status == 201, "\(String(decoding: pushed.body, as: UTF8.self))")
            #expect(pushed.json?["name"] == .string("big") && pushed.json?["version"] == .number(1))
            #expect(pushed.json?["precision"] == .string("fp32") && pushed.json?["bytes"] == .number(Double(file.count)))
            #expect(pushed.json?["sha256"]?.stringValue == sha256Hex([UInt8](file)))
            #expect(pushed.json?["inputs"] == .number(64) && pushed.json?["outputs"] == .number(4))

            let registry = ModelRegistry(client: RedisClient(configuration: farm.configuration.redis, name: "test-models"), namespace: farm.configuration.namespace)
            let stored = try await registry.resolve("big:1")
            #expect(try await registry.bytes(of: stored) == [UInt8](file), "byte-identical in the registry")
            #expect(try await keys(farm, "models:blob:upload:*").isEmpty, "no temporary upload key is left")

            var rng = SeededRandom(seed: 9)
            let row = (0..<64).map { _ in rng.nextUnitFloat() - 0.5 }
            let numbers = row.map { FloatText.string($0) }.joined(separator: ",")
            let job = try await api.post("/v1/jobs", #"{"kind": "inference", "payload": {"model": "big:1", "inputs": [[\#(numbers)]], "returnLogits": true}}"#)
            #expect(job.status == 201, "\(job.json?.jsonText ?? "")")
            let id = try #require(job.json?["id"]?.stringValue)
            let done = try await api.get("/v1/jobs/\(id)/wait?timeout=30s")
            #expect(done.json?["state"] == .string("succeeded"), "\(done.json?.jsonText ?? "")")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func anUploadOverTheLimitIs413AndStoresNothing() async throws {
        try await withRegistryFarm(uploadLimit: 256 * 1024) { api, _, farm in
            let file = try largeTestModel().safetensorsFile().serialized()
            // Told by Content-Length: refused before reading.
            let told = try await upload(api, "/v1/models?name=big", file)
            #expect(told.status == 413, "\(String(decoding: told.body, as: UTF8.self))")
            #expect(told.json?["detail"]?.stringValue?.contains("256") == true || told.json?["detail"]?.stringValue?.contains("262144") == true)
            // Sent chunked (no Content-Length): found while streaming, after some chunks went to Redis.
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("big-\(UUID().uuidString).safetensors")
            try file.write(to: path)
            defer { try? FileManager.default.removeItem(at: path) }
            let output = try await shell("""
                curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer \(api.key!)' -H 'Content-Type: application/octet-stream' \
                  -H 'Transfer-Encoding: chunked' --data-binary @\(path.path) '\(api.base)/v1/models?name=big'
                """)
            #expect(output == "413", "\(output)")
            let datasets = try await upload(api, "/v1/datasets?name=big", file)
            #expect(datasets.status == 413)
            #expect(try await api.get("/v1/models").json?["models"] == .array([]))
            #expect(try await api.get("/v1/datasets").json?["datasets"] == .array([]))
            let left = try await keys(farm, "models:*")
            #expect(left.isEmpty, "nothing stored: \(left)")
            #expect(try await keys(farm, "datasets:*").isEmpty)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aMalformedFileIs422NamingTheProblem() async throws {
        try await withRegistryFarm { api, _, farm in
            let cases: [(Data, String, String)] = [
                (safetensorsBytes(header: "{not json}", data: 0), "", "not valid JSON"),
                (Data([1, 2, 3]), "", "too short"),
                (safetensorsBytes(header: #"{"0.weight": {"dtype": "I16", "shape": [2, 2], "data_offsets": [0, 8]}}"#, data: 8), "", "I16"),
                (safetensorsBytes(header: #"{"0.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}"#, data: 4), "", "data_offsets"),
                (safetensorsBytes(header: #"{"0.weight": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]}, "2.weight": {"dtype": "F32", "shape": [2, 5], "data_offsets": [48, 88]}}"#, data: 88),
                 "", "do not chain"),
                (safetensorsBytes(header: #"{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}"#, data: 16),
                 "&config=" + #"{"layers":[{"weight":"v","bias":null,"activation":"none"}]}"#.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!,
                 "\"v\" is not in the file"),
            ]
            for (body, query, expected) in cases {
                let answer = try await upload(api, "/v1/models?name=bad" + query, body)
                #expect(answer.status == 422, "\(expected): \(String(decoding: answer.body, as: UTF8.self))")
                let detail = items(answer.json?["errors"]).first?["detail"]?.stringValue ?? ""
                #expect(detail.contains(expected), "'\(detail)' should say '\(expected)'")
            }
            let noName = try await upload(api, "/v1/models", safetensorsBytes(header: "{}", data: 0))
            #expect(noName.status == 400 && items(noName.json?["errors"]).first?["parameter"] == .string("name"))
            let wrongType = try await upload(api, "/v1/models?name=bad", Data([0]), contentType: "application/json")
            #expect(wrongType.status == 415)
            let left = try await keys(farm, "models:*")
            #expect(left.isEmpty, "nothing stored: \(left)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aliasesMoveByCompareAndSetAndTheListsShowThem() async throws {
        try await withRegistryFarm { api, tenant, _ in
            let file = try inferenceTestModel().safetensorsFile().serialized()
            let other = try inferenceTestModel(seed: 12).safetensorsFile().serialized()
            #expect(try await upload(api, "/v1/models?name=mlp", file).status == 201)
            #expect(try await upload(api, "/v1/models?name=mlp", other).status == 201)

            let first = try await put(api, "/v1/models/mlp/aliases/production", #"{"version": 1, "expected": null}"#)
            #expect(first.status == 200 && first.json == js(#"{"name": "mlp", "alias": "production", "version": 1, "previous": null}"#))
            let promoted = try await put(api, "/v1/models/mlp/aliases/production", #"{"version": 2, "expected": 1}"#)
            #expect(promoted.status == 200 && promoted.json?["previous"] == .number(1))
            // A second promotion that read the alias before the first one moved it: refused, naming the target now.
            let stale = try await put(api, "/v1/models/mlp/aliases/production", #"{"version": 1, "expected": 1}"#)
            #expect(stale.status == 409)
            #expect(stale.json?["detail"]?.stringValue?.contains("points at version 2") == true, "\(stale.json?.jsonText ?? "")")
            let fresh = try await put(api, "/v1/models/mlp/aliases/production", #"{"version": 1, "expected": null}"#)
            #expect(fresh.status == 409, "null expects no alias yet")
            let invalid = try await put(api, "/v1/models/mlp/aliases/latest", #"{"version": 0, "extra": 1}"#)
            #expect(invalid.status == 422)
            #expect(Set(items(invalid.json?["errors"]).compactMap { $0["pointer"]?.stringValue ?? $0["parameter"]?.stringValue })
                    == ["/version", "/expected", "/extra", "alias"])
            #expect(try await put(api, "/v1/models/ghost/aliases/production", #"{"version": 1, "expected": null}"#).status == 404)
            #expect(try await put(api, "/v1/models/mlp/aliases/production", #"{"version": 9, "expected": 2}"#).status == 404)
            #expect(try await put(tenant, "/v1/models/mlp/aliases/production", #"{"version": 1, "expected": 2}"#).status == 403)

            let models = try await tenant.get("/v1/models")
            #expect(models.status == 200)
            #expect(models.json == js(#"{"models": [{"name": "mlp", "latestVersion": 2, "precision": "fp32", "versions": 2, "aliases": {"production": 2}}]}"#))
            let versions = try await tenant.get("/v1/models/mlp/versions")
            #expect(items(versions.json?["versions"]).map { $0["version"] } == [.number(1), .number(2)])
            #expect(versions.json?["aliases"] == js(#"{"production": 2}"#))
            #expect(try await tenant.get("/v1/models/ghost/versions").status == 404)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func csvAndNpyDatasetsUploadedOverHTTPAreReadByJobs() async throws {
        try await withRegistryFarm { api, tenant, _ in
            let csv = Data("a,b,label\n1,2,0\n3,4,1\n5,7,0\n2,2,1\n".utf8)
            let npy = try NpyArray(shape: [3, 2], storage: .float32([1, 2, 3, 4, 5, 6])).serialized()
            let csvAnswer = try await upload(api, "/v1/datasets?name=table", csv, contentType: "text/csv")
            #expect(csvAnswer.status == 201 && csvAnswer.json?["format"] == .string("csv") && csvAnswer.json?["bytes"] == .number(Double(csv.count)))
            let npyAnswer = try await upload(api, "/v1/datasets?name=array", npy)
            #expect(npyAnswer.status == 201 && npyAnswer.json?["format"] == .string("npy"), "the format found from the bytes")
            let notNpy = try await upload(api, "/v1/datasets?name=fake", csv, contentType: "application/x-npy")
            #expect(notNpy.status == 422)
            #expect(try await upload(tenant, "/v1/datasets?name=mine", csv).status == 403)
            let listed = try await tenant.get("/v1/datasets")
            #expect(items(listed.json?["datasets"]).map { $0["name"] } == [.string("array"), .string("table")])

            let bulk = try await api.post("/v1/jobs:bulk", #"""
                {"jobs": [{"kind": "batch_analysis", "payload": {"dataset": "farm:table", "labelColumn": "label"}},
                          {"kind": "batch_analysis", "payload": {"dataset": "farm:array"}},
                          {"kind": "train", "payload": {"dataset": "farm:table", "labelColumn": "label", "name": "tiny", "hiddenSizes": [4], "epochs": 2}}]}
                """#)
            #expect(bulk.status == 201, "\(bulk.json?.jsonText ?? "")")
            for job in items(bulk.json?["jobs"]) {
                let id = try #require(job["id"]?.stringValue)
                let done = try await api.get("/v1/jobs/\(id)/wait?timeout=30s")
                #expect(done.json?["state"] == .string("succeeded"), "\(done.json?.jsonText ?? "")")
            }
            #expect(items(try await api.get("/v1/models").json?["models"]).map { $0["name"] } == [.string("tiny")], "the train job read the CSV")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aJobNamingAMissingModelOrDatasetIs422AndNeverReachesRedis() async throws {
        try await withRegistryFarm { api, _, farm in
            let single = try await api.post("/v1/jobs", #"{"kind": "inference", "payload": {"model": "ghost:production", "inputs": [[1, 2]]}}"#)
            #expect(single.status == 422)
            #expect(single.pointers == ["/payload/model"])
            #expect(items(single.json?["errors"]).first?["detail"]?.stringValue?.contains("ghost") == true)
            let bulk = try await api.post("/v1/jobs:bulk", #"""
                {"jobs": [{"kind": "echo"},
                          {"kind": "batch_analysis", "payload": {"dataset": "farm:nothing"}},
                          {"kind": "validate", "payload": {"candidate": "ghost", "dataset": "farm:nothing"}},
                          {"kind": "batch_analysis", "payload": {"dataset": "/data/on-the-worker.csv"}}]}
                """#)
            #expect(bulk.status == 422)
            #expect(Set(bulk.pointers) == ["/jobs/1/payload/dataset", "/jobs/2/payload/candidate", "/jobs/2/payload/dataset"])
            let stats = try await farm.stats(queues: ["ml", "default"])
            #expect(stats.allSatisfy { $0.tiers.allSatisfy { $0.depth == 0 } && $0.inflight == 0 }, "nothing reached Redis")
            // Once pushed, the same reference passes.
            #expect(try await upload(api, "/v1/models?name=ghost", try inferenceTestModel().safetensorsFile().serialized()).status == 201)
            #expect(try await put(api, "/v1/models/ghost/aliases/production", #"{"version": 1, "expected": null}"#).status == 200)
            let accepted = try await api.post("/v1/jobs", #"{"kind": "inference", "payload": {"model": "ghost:production", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}}"#)
            #expect(accepted.status == 201, "\(accepted.json?.jsonText ?? "")")
        }
    }
}

/// README.md's registry examples run as written, in a folder holding the files they name.
@Suite("Registry examples in README.md", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL"))
struct RegistryExamplesTests {
    @Test(.timeLimit(.minutes(1)))
    func readmeRegistryExamplesRun() async throws {
        let readme = try String(contentsOf: PackagePaths.root.appendingPathComponent("README.md"), encoding: .utf8)
        let block = try #require(codeBlock(readme, info: "sh registry-examples"), "README.md has no ```sh registry-examples block")
        #expect(block.hasPrefix("api=http://127.0.0.1:8080"))
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("registry-examples-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let model = try inferenceTestModel()
        // As PyTorch saves an nn.Sequential: the tensors alone, no embedded config.
        try SafetensorsFile(tensors: model.safetensorsFile().tensors).serialized().write(to: folder.appendingPathComponent("model.safetensors"))
        try model.config.jsonString().write(to: folder.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        try "sepal,petal,label\n5.1,1.4,0\n7.0,4.7,1\n".write(to: folder.appendingPathComponent("iris.csv"), atomically: true, encoding: .utf8)
        let farm = try TestRedis.farm()
        let (key, _) = try await apiKeys(farm).create(tenant: "acme", tiers: farm.configuration.tiers, isOperator: true)
        let output = try await withDispatcher(farm: farm, configuration: DispatcherConfiguration(port: 0, authentication: .apiKeys)) { api in
            try await shell("set -euo pipefail\ncd \(folder.path)\nexport JOBFARM_API_KEY=\(key)\n"
                            + block.replacingOccurrences(of: "api=http://127.0.0.1:8080", with: "api=\(api.base)"))
        }
        for expected in ["\"name\":\"digits\"", "\"version\":1", "\"version\":2", "\"inputs\":8", "\"latestVersion\":2",
                         "\"previous\":null", "\"previous\":1", "points at version 2, not at the expected version 1",
                         "\"format\":\"csv\"", "\"name\":\"iris\"", "\"pointer\":\"/payload/dataset\""] {
            #expect(output.contains(expected), "missing \(expected) in:\n\(output)")
        }
    }
}

/// The upload is streamed: a `jobfarm serve` process takes a 64 MiB model while its resident size is sampled from
/// `/proc/<pid>/statm`; it must grow by well under the file's size.
@Suite("Registry upload memory", .enabled(if: TestRedis.available && FileManager.default.fileExists(atPath: "/proc/self/statm"), "needs JOBFARM_TEST_REDIS_URL and /proc"))
struct RegistryUploadMemoryTests {
    static func residentBytes(_ pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    @Test(.timeLimit(.minutes(2)))
    func a64MiBUploadGrowsTheDispatchersResidentSizeByWellUnderItsSize() async throws {
        let farm = try TestRedis.farm()
        let serve = try await ServeProcess.start(namespace: farm.configuration.namespace, arguments: ["--no-auth"])
        defer { serve.stop() }
        // One 4096 × 4096 FP32 layer of zeros (compresses to little in Redis), written to disk in pieces.
        let header = #"{"0.weight": {"dtype": "F32", "shape": [4096, 4096], "data_offsets": [0, 67108864]}}"#
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("zeros-\(UUID().uuidString).safetensors")
        _ = FileManager.default.createFile(atPath: path.path, contents: safetensorsBytes(header: header, data: 0))
        defer { try? FileManager.default.removeItem(at: path) }
        let handle = try FileHandle(forWritingTo: path)
        try handle.seekToEnd()
        let block = Data(count: 1 << 20)
        for _ in 0..<64 { try handle.write(contentsOf: block) }
        try handle.close()
        let size = 8 + header.utf8.count + (64 << 20)

        let pid = serve.process.processIdentifier
        let before = try #require(Self.residentBytes(pid))
        let sampler = Task { () -> Int in
            var peak = 0
            while !Task.isCancelled {
                peak = max(peak, Self.residentBytes(pid) ?? 0)
                try? await Task.sleep(for: .milliseconds(5))
            }
            return peak
        }
        let output = try await shell("""
            curl -s -w '\\n%{http_code}' -H 'Content-Type: application/octet-stream' --data-binary @\(path.path) '\(serve.base)/v1/models?name=zeros'
            """)
        sampler.cancel()
        let peak = max(await sampler.value, Self.residentBytes(pid) ?? 0)
        #expect(output.hasSuffix("\n201"), "\(output)")
        #expect(output.contains("\"bytes\":\(size)"), "\(output)")
        let growth = peak - before
        print("registry upload memory: \(size)-byte upload, resident \(before) → peak \(peak) bytes (+\(growth))")
        #expect(growth < size / 4, "the resident size grew by \(growth) bytes for a \(size)-byte upload (from \(before) to \(peak))")
    }
}
