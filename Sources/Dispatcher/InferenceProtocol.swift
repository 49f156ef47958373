import Foundation
import Hummingbird
import JobProtocol
import JobQueue
import NIOCore
import ModelStore
import RedisClient
import ServiceLifecycle
import Synchronization

/// The models the Open Inference Protocol routes name, read from the farm's model registry: references resolved
/// at most once a second per reference (as a worker does), so a request costs no registry round trip.
final class InferenceModels: Sendable {
    let registry: ModelRegistry
    let ttl: Duration
    private let resolved = Mutex<[String: (version: ModelVersion, at: ContinuousClock.Instant)]>([:])

    /// The dataset records, on the same connection (RegistryRoutes.swift, ReferenceCheck.swift).
    let datasets: DatasetStore
    /// Dataset names found, and when: a submission naming `farm:NAME` is checked at most once a second per name.
    let foundDatasets = Mutex<[String: ContinuousClock.Instant]>([:])

    init(farm: JobFarm, ttl: Duration = .seconds(1)) {
        let client = RedisClient(configuration: farm.configuration.redis, name: "dispatcher-models")
        self.registry = ModelRegistry(client: client, namespace: farm.configuration.namespace)
        self.datasets = DatasetStore(client: client, namespace: farm.configuration.namespace)
        self.ttl = ttl
    }

    /// The version `name` (and the path's `version`: a number, an alias, `latest` or `latest@int8`) selects.
    /// Unknown model → 404, a reference that does not parse → 400.
    func resolve(name: String, version: String?) async throws -> ModelVersion {
        guard !name.contains(":"), !name.contains("@") else {
            throw Problem(.badRequest, detail: "model name '\(name.prefix(64))' must be 1–64 of A–Z a–z 0–9 _ - .; a version, alias or precision goes in /versions/{version}")
        }
        let text = version.map { "\(name):\($0)" } ?? name
        let now = ContinuousClock.now
        if let hit = resolved.withLock({ $0[text] }), now - hit.at < ttl { return hit.version }
        let found: ModelVersion
        do {
            found = try await registry.resolve(ModelReference(parsing: text))
        } catch ModelStoreError.notFound(let message) {
            throw Problem(.notFound, detail: message)
        } catch ModelStoreError.invalidArgument(let message) {
            throw Problem(.badRequest, detail: message)
        } catch let error as RedisError {
            throw JobFarmError(error, operation: "read the model registry")
        }
        resolved.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[text] = (found, now)
        }
        return found
    }
}

extension Dispatcher {
    /// The Open Inference Protocol (KServe v2) operations, as in docs/openapi.yaml.
    static let inferenceProtocolOperations: [(method: String, path: String)] = [
        ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/{name}"), ("GET", "/v2/models/{name}/versions/{version}"),
        ("GET", "/v2/models/{name}/ready"), ("GET", "/v2/models/{name}/versions/{version}/ready"),
        ("POST", "/v2/models/{name}/infer"), ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ]

    /// Routes anyone may call, as the protocol's health probes are (Kubernetes probes send no key).
    static let inferenceProtocolPublicPaths: Set<String> = ["/v2", "/v2/health/live", "/v2/health/ready"]

    /// Adds the Open Inference Protocol routes: server metadata and health, model metadata and readiness, and
    /// inference, each request an `inference` job answered when it ends. Errors answer `{"error": "..."}`.
    func addInferenceProtocolRoutes(to router: Router<BasicRequestContext>) {
        router.get("/v2") { _, _ in
            Self.json(.ok, .object([
                "name": .string("jobfarm"), "version": .string(JobFarmVersion.current),
                "extensions": .array([.string("binary_tensor_data")]),
            ]))
        }
        router.get("/v2/health/live") { _, _ in Self.json(.ok, .object(["live": .bool(true)])) }
        router.get("/v2/health/ready") { _, _ in try await inferenceServerReady() }
        router.get("/v2/models/{name}") { _, context in
            try await modelMetadata(name: context.parameters.get("name") ?? "", version: nil)
        }
        router.get("/v2/models/{name}/versions/{version}") { _, context in
            try await modelMetadata(name: context.parameters.get("name") ?? "", version: context.parameters.get("version"))
        }
        router.get("/v2/models/{name}/ready") { _, context in
            try await modelReady(name: context.parameters.get("name") ?? "", version: nil)
        }
        router.get("/v2/models/{name}/versions/{version}/ready") { _, context in
            try await modelReady(name: context.parameters.get("name") ?? "", version: context.parameters.get("version"))
        }
        router.post("/v2/models/{name}/infer") { request, context in
            try await infer(request, name: context.parameters.get("name") ?? "", version: nil)
        }
        router.post("/v2/models/{name}/versions/{version}/infer") { request, context in
            try await infer(request, name: context.parameters.get("name") ?? "", version: context.parameters.get("version"))
        }
    }

    /// Ready while Redis answers (an inference is answered only when a worker ran it, so an outbox does not count).
    func inferenceServerReady() async throws -> Response {
        let farm = self.farm
        guard breaker.mayAllowCall, (try? await redisCall({ try await farm.ping() })) != nil else {
            throw Problem(.serviceUnavailable, detail: "Redis does not answer: inference requests cannot run; check that Redis runs and the --redis-url",
                          headers: [.retryAfter: "\(breaker.retryAfterSeconds)"])
        }
        return Self.json(.ok, .object(["ready": .bool(true)]))
    }

    /// The queue `inference` jobs go to.
    var inferenceQueue: String { configuration.routing.queue(for: "inference") ?? "inference" }

    /// Tensor names, datatypes and shapes of the version `name` (and `version`) selects; every version listed.
    func modelMetadata(name: String, version: String?) async throws -> Response {
        let models = inferenceModels
        let selected = try await redisCall { try await models.resolve(name: name, version: version) }
        let versions = try await redisCall { try await models.registry.versions(name) }
        func tensor(_ name: String, _ datatype: String, _ width: Int) -> JSONValue {
            .object(["name": .string(name), "datatype": .string(datatype), "shape": .array([.number(-1), .number(Double(width))])])
        }
        return Self.json(.ok, .object([
            "name": .string(name),
            "versions": .array(versions.map { .string(String($0.version)) }),
            "platform": .string("jobfarm_mlp"),
            "inputs": .array([tensor(InferenceRequestV2.inputName, selected.precision == "fp16" ? "FP16" : "FP32", selected.inputs)]),
            "outputs": .array(InferenceRequestV2.outputNames.map { tensor($0, "FP32", selected.outputs) }),
        ]))
    }

    /// Ready when the reference selects a version and a live worker serves the inference queue.
    func modelReady(name: String, version: String?) async throws -> Response {
        let models = inferenceModels
        let selected = try await redisCall { try await models.resolve(name: name, version: version) }
        let queue = inferenceQueue
        guard await workers.serving(queue) > 0 else {
            throw Problem(.serviceUnavailable, detail: "model \(selected.reference) is stored, but no live worker serves the queue '\(queue)': start one (jobfarm worker --queues \(queue))",
                          headers: [.retryAfter: "5"])
        }
        return Self.json(.ok, .object(["name": .string(name), "ready": .bool(true)]))
    }

    /// One inference: the request read (JSON or binary tensors), the model resolved and its width checked, an
    /// `inference` job admitted as a `POST /v1/jobs` would be (the caller's tiers, rate limits, Idempotency-Key),
    /// then answered when the job ends, or 504 after the dispatcher's longest wait.
    func infer(_ request: Request, name: String, version: String?) async throws -> Response {
        guard let caller = Caller.current else {
            throw Problem(.unauthorized, detail: "no API key: send the header 'Authorization: Bearer <key>'",
                          headers: [.wwwAuthenticate: #"Bearer realm="jobfarm""#])
        }
        if let encoding = request.headers[.contentEncoding], encoding.lowercased() != "identity" {
            throw Problem(.badRequest, detail: "Content-Encoding \(encoding.prefix(32)) is not supported: send the body uncompressed")
        }
        var headerLength: Int?
        if let text = request.headers[.inferenceHeaderContentLength] {
            guard let length = Int(text.trimmingWhitespace), length >= 0 else {
                throw Problem(.badRequest, detail: "Inference-Header-Content-Length '\(text.prefix(32))' must be the byte length of the JSON header")
            }
            headerLength = length
        }
        let body = try await collectBody(request)
        if body.readableBytes == 0 { throw Problem(.badRequest, detail: "the body is empty: send an inference request {\"inputs\": [...]}") }
        let parsed = try body.readableBytesView.withContiguousStorageIfAvailable { bytes throws(Problem) in
            try InferenceRequestV2.parse(UnsafeRawBufferPointer(bytes), headerLength: headerLength)
        } ?? Array(body.readableBytesView).withUnsafeBytes { bytes throws(Problem) in
            try InferenceRequestV2.parse(bytes, headerLength: headerLength)
        }

        let models = inferenceModels
        let selected = try await redisCall { try await models.resolve(name: name, version: version) }
        guard parsed.width == selected.inputs else {
            throw Problem(.badRequest, detail: "input '\(InferenceRequestV2.inputName)' has \(parsed.width) features per row, but model \(selected.reference) takes \(selected.inputs) (shape [-1, \(selected.inputs)])")
        }
        let tier = try Self.inferenceTier(request.headers[.jobFarmTier], caller: caller, tiers: farm.configuration.tiers,
                                            defaultTier: farm.configuration.defaultTier)
        let wanted = Set(parsed.outputs.map(\.name))
        let payload = JSONValue.object([
            "model": .string(selected.reference),
            "inputs": parsed.tensor,
            "topK": .number(1),
            "returnLogits": .bool(wanted.contains("logits")),
            "returnProbabilities": .bool(wanted.contains("probabilities")),
            "outputFormat": .string("binary"),
        ])
        let submission = JSONValue.object(["kind": .string("inference"), "tier": .string(tier), "payload": payload])
        let job: EnqueueRequest
        switch validator.single(submission) {
        case .failure(let problems): throw Problem(.badRequest, detail: "the inference request cannot run", errors: problems.items)
        case .success(let valid): job = valid
        }
        let admitted = try await admit([job], body: submission, request: request, route: "/v2/models/{name}/infer") { try await place($0) }
        guard let id = admitted.ids.first else { throw Problem(.internalServerError, detail: "the job was not enqueued") }
        var headers = admitted.headers
        headers[.jobFarmJobID] = id

        guard let status = try await waitForEnd(id: id, queue: job.queue, limit: configuration.maxWait) else {
            throw Problem(.gatewayTimeout, detail: "inference job \(id) did not end within \(Int(configuration.maxWait.seconds)) s (no worker free, or none serving '\(job.queue)'); it stays queued: GET /v1/jobs/\(id)/wait for its answer",
                          headers: headers)
        }
        switch status.state {
        case .succeeded:
            guard let result = status.result else { throw Problem(.internalServerError, detail: "inference job \(id) succeeded without a result") }
            var parameters: [String: JSONValue] = ["jobfarm_job_id": .string(id), "tier": .string(tier)]
            if let precision = result["precision"]?.stringValue { parameters["precision"] = .string(precision) }
            if let rows = result["batchRows"] { parameters["batch_rows"] = rows }
            return try InferenceResponseV2.make(result: result, request: parsed, modelName: name, version: selected.version,
                                                jobID: id, parameters: parameters).response(headers: headers)
        case .cancelled:
            throw Problem(.conflict, detail: "inference job \(id) was cancelled before it ran", headers: headers)
        default:
            let error = status.error ?? "no error recorded"
            if status.reason == DeadLetterReason.nonRetryable.rawValue || status.reason == DeadLetterReason.malformed.rawValue {
                throw Problem(.badRequest, detail: "inference job \(id) failed: \(error)", headers: headers)
            }
            throw Problem(.internalServerError, detail: "inference job \(id) failed after \(status.attempts) attempt\(status.attempts == 1 ? "" : "s") (\(status.reason ?? status.state.rawValue)): \(error)",
                          headers: headers)
        }
    }

    /// The tier of a request: the `JobFarm-Tier` header, or the caller's default: the farm's default tier when
    /// the key may use it, else the highest-priority tier the key may use. Whether the key may use the tier is
    /// checked at admission (403).
    static func inferenceTier(_ header: String?, caller: Caller, tiers: [String], defaultTier: String) throws -> String {
        if let header {
            let tier = header.trimmingWhitespace
            guard tiers.contains(tier) else {
                throw Problem(.badRequest, detail: "JobFarm-Tier '\(tier.prefix(32))' is not a tier of this farm: use one of \(tiers.joined(separator: ", "))")
            }
            return tier
        }
        if caller.allows(tier: defaultTier) { return defaultTier }
        return tiers.first(where: caller.allows(tier:)) ?? defaultTier
    }

    /// The job's final status, woken by its events (the waits of `GET /v1/jobs/{id}/wait`); `nil` when it has not
    /// ended within `limit` (or the dispatcher is shutting down).
    func waitForEnd(id: String, queue: String, limit: Duration) async throws -> JobStatus? {
        let (spooled, spent) = try await waitWhileSpooled(id: id, upTo: limit)
        if spooled != nil { return nil }
        guard breaker.mayAllowCall else { throw redisUnavailable() }
        let farm = self.farm
        let remaining = max(.zero, limit - spent)
        do {
            return try await cancelWhenGracefulShutdown { try await farm.wait(for: id, queue: queue, timeout: remaining) }
        } catch JobFarmError.timedOut(_) {
            return nil
        } catch is CancellationError {
            return nil
        }
    }
}
