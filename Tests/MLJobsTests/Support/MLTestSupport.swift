import Compute
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import JobWorker
import Logging
import MLJobs
import ModelStore
import RedisClient
import Testing

/// A farm on the test Redis for the ML tests (longer leases: training holds a job for a while).
func mlTestFarm() throws -> JobFarm {
    try TestRedis.farm(namespacePrefix: "tml", leaseDuration: .seconds(30))
}

/// Test options: batching on with a short delay, two compute threads.
func testOptions(batching: Bool = true, maxBatch: Int = 32) -> MLJobOptions {
    MLJobOptions(
        batching: .init(enabled: batching, maxBatch: maxBatch, maxDelay: .milliseconds(3)), workerConcurrency: 16,
        blasThreads: 1, computeThreads: 2, modelCacheBytes: 64 << 20, dataRoot: PackagePaths.root.path)
}

/// A worker with the ML kinds running inside the test process, stopped at the end of `body`.
func withMLWorker<T>(
    farm: JobFarm, options: MLJobOptions = testOptions(), concurrency: Int = 16,
    _ body: (MLEnvironment) async throws -> T
) async throws -> T {
    var logger = Logger(label: "test.ml.worker")
    logger.logLevel = .error
    var registry = HandlerRegistry()
    let environment = registerMLJobs(into: &registry, farm: farm, options: options, logger: logger)
    return try await withTestWorker(farm: farm, registry: registry, queues: ["ml"], concurrency: concurrency) { _ in
        try await body(environment)
    }
}

/// Enqueues one ML job on queue `ml` and waits for its final status.
func runJob(_ farm: JobFarm, _ kind: String, _ payload: String, timeout: Duration = .seconds(120)) async throws -> JobStatus {
    let id = try await farm.enqueue(EnqueueRequest(kind: kind, queue: "ml", payload: try JSONValue(parsing: payload), maxAttempts: 2))
    return try await farm.wait(for: id, queue: "ml", timeout: timeout)
}

/// Runs a job that must succeed; returns its result.
func succeed(_ farm: JobFarm, _ kind: String, _ payload: String, timeout: Duration = .seconds(120)) async throws -> JSONValue {
    let status = try await runJob(farm, kind, payload, timeout: timeout)
    #expect(status.state == .succeeded, "\(kind) ended \(status.state.rawValue): \(status.error ?? "")")
    guard status.state == .succeeded, let result = status.result else {
        throw TestFailure("\(kind) did not succeed: \(status.error ?? "no error")")
    }
    return result
}

/// A fresh Redis client on the test server.
func testClient() throws -> RedisClient { RedisClient(configuration: try TestRedis.configuration, name: "mltest") }

/// Deletes every key of a test's namespace (`<namespace>:*`).
func deleteNamespace(_ client: RedisClient, _ namespace: String) async throws {
    _ = try await client.execute(RedisCommand(
        "EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 1", "0", namespace + ":*"))
}

extension PackagePaths {
    static var digits: String { root.appendingPathComponent("data/digits/digits.csv").path }
}

/// A small random MLP (in → hidden → out), FP32, with PyTorch-style tensor names.
func randomModel(inputs: Int = 8, hidden: Int = 16, outputs: Int = 4, seed: UInt64 = 7) throws -> MLPModel {
    var rng = SeededRandom(seed: seed)
    func values(_ n: Int) -> [Float] { (0..<n).map { _ in rng.nextUnitFloat() - 0.5 } }
    let config = ModelConfig(layers: [
        DenseLayerConfig(weight: "0.weight", bias: "0.bias", activation: .relu),
        DenseLayerConfig(weight: "2.weight", bias: "2.bias", activation: .softmax),
    ])
    return try MLPModel(config: config, tensors: [
        "0.weight": Tensor(shape: [hidden, inputs], float32: values(hidden * inputs)),
        "0.bias": Tensor(shape: [hidden], float32: values(hidden)),
        "2.weight": Tensor(shape: [outputs, hidden], float32: values(outputs * hidden)),
        "2.bias": Tensor(shape: [outputs], float32: values(outputs)),
    ])
}

extension JSONValue {
    /// `self[key]` as a number.
    func number(_ key: String) -> Double? { self[key]?.doubleValue }
    /// `self[key]` as text.
    func text(_ key: String) -> String? { self[key]?.stringValue }
    /// Array elements.
    var items: [JSONValue] {
        if case .array(let items) = self { return items }
        return []
    }
}

/// JobProtocol's zlib wrapper under a test-local name.
typealias PayloadCompressionShim = PayloadCompression
