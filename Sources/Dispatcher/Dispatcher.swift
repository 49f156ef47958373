import Foundation
import Hummingbird
import JobProtocol
import JobQueue
import Logging
import NIOCore
import RedisClient
import ServiceLifecycle

/// The HTTP dispatcher behind `jobfarm serve`: the routes of `docs/openapi.yaml` over a `JobFarm`.
///
/// Stateless: everything it knows is in Redis, so any number of replicas can run behind a load balancer.
/// Routes are written by hand (docs/DESIGN-NOTES.md says why); `operations` lists them, and a test checks that
/// list, and every response the tests get, against the document.
public struct Dispatcher: Sendable {
    public let farm: JobFarm
    public let configuration: DispatcherConfiguration
    let validator: SubmissionValidator
    let workers: WorkerDirectory
    let logger: Logger
    /// API keys, tenants, rate limits, idempotency records, metrics (Authentication.swift, Admission.swift).
    public let access: AccessControl
    /// Where submissions go while Redis is away (Spooling.swift).
    let outbox: Outbox
    /// The circuit breaker around Redis calls.
    let breaker: CircuitBreaker
    /// This replica's name, the suffix of the job ids it chooses.
    public let replica: String
    /// The submissions' Redis connections: concurrent requests share their round trips (RedisCoalescer.swift).
    public let redis: RedisCoalescer
    /// Concurrent submissions for one queue and tier merged into one script call (SubmissionMerger.swift).
    public let merger: SubmissionMerger
    /// The replicas live now, as last seen: the per-replica rate limiter's divisor while Redis is away.
    public let liveReplicas: LiveReplicas
    /// The model registry as the Open Inference Protocol routes read it (InferenceProtocol.swift).
    let inferenceModels: InferenceModels

    /// Every operation served: method and path template, as in docs/openapi.yaml.
    public static let operations: [(method: String, path: String)] = [
        ("POST", "/v1/jobs"), ("POST", "/v1/jobs:bulk"), ("GET", "/v1/jobs/{id}"), ("DELETE", "/v1/jobs/{id}"),
        ("GET", "/v1/jobs/{id}/wait"), ("GET", "/v1/jobs/{id}/events"), ("GET", "/v1/queues"), ("GET", "/healthz"),
        ("GET", "/readyz"), ("GET", "/openapi.yaml"), ("GET", "/metrics"),
    ] + inferenceProtocolOperations + deadLetterOperations + registryOperations

    /// The contract, embedded at build time from docs/openapi.yaml.
    public static var openAPIDocument: [UInt8] { PackageResources.openapi_yaml }

    /// - Parameter access: the stores behind keys, limits and idempotency; `nil`: the Redis ones on `farm`'s Redis.
    public init(farm: JobFarm, configuration: DispatcherConfiguration, logger: Logger = Logger(label: "jobfarm.dispatcher"),
                access: AccessControl? = nil) throws {
        try configuration.validate()
        let redis = RedisCoalescer(clients: (0..<2).map { RedisClient(configuration: farm.configuration.redis, name: "dispatcher-\($0)") })
        self.redis = redis
        self.merger = SubmissionMerger(farm: farm, redis: redis)
        let replica = configuration.outbox.resolvedReplica(port: configuration.port)
        let outboxPath = configuration.outbox.resolvedPath(replica: replica)
        let liveReplicas = LiveReplicas(replica: replica, namespace: farm.configuration.namespace)
        self.liveReplicas = liveReplicas
        let outbox = try Outbox(path: outboxPath, maxJobs: configuration.outbox.maxJobs, maxBytes: configuration.outbox.maxBytes)
        self.outbox = outbox
        if let access {
            self.access = access
        } else {
            // While Redis is away: keys from this replica's file, its share of each limit, idempotency in the outbox.
            let keyFile: PersistedAPIKeys? = try configuration.authentication == .apiKeys
                ? PersistedAPIKeys(path: PersistedAPIKeys.path(besideOutbox: outboxPath)) : nil
            var standard = AccessControl(farm: farm, configuration: configuration, redis: redis, liveReplicas: liveReplicas, persistedKeys: keyFile)
            standard.idempotency = FallbackIdempotencyStore(shared: standard.idempotency, outbox: outbox, ttl: farm.configuration.idempotencyWindow)
            self.access = standard
        }
        if configuration.authentication == .disabled {
            logger.warning("authentication is off (--no-auth): every request acts as the operator of tenant 'dev'; for local development only")
        }
        self.farm = farm
        self.configuration = configuration
        self.validator = SubmissionValidator(configuration: configuration, farm: farm.configuration)
        self.workers = WorkerDirectory(farm: farm, ttl: configuration.workerCacheTTL, logger: logger)
        self.logger = logger
        self.replica = replica
        self.breaker = CircuitBreaker(settings: configuration.outbox.breaker)
        self.inferenceModels = InferenceModels(farm: farm)
    }

    /// The Hummingbird application: a `Service` to run in a `ServiceGroup` (graceful shutdown stops accepting
    /// connections and lets requests in flight finish; waits in progress answer at once with the job's state).
    public func makeApplication(
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        Application(
            router: makeRouter(),
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.host, port: configuration.port), serverName: "jobfarm"),
            onServerRunning: onServerRunning, logger: logger)
    }

    /// The routes.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: RequestMetricsMiddleware(metrics: access.metrics))
        router.add(middleware: ProblemMiddleware(logger: logger))
        router.add(middleware: MethodNotAllowedMiddleware())
        router.add(middleware: AccessMiddleware(mode: access.mode, keys: access.keys, tenants: access.tenants))
        router.post("/v1/jobs") { request, context in try await submit(request) }
        router.post("/v1/jobs:bulk") { request, context in try await submitBulk(request) }
        router.get("/v1/jobs/{id}") { request, context in try await show(id: context.parameters.get("id") ?? "") }
        router.delete("/v1/jobs/{id}") { request, context in try await cancel(id: context.parameters.get("id") ?? "") }
        router.get("/v1/jobs/{id}/wait") { request, context in
            try await wait(id: context.parameters.get("id") ?? "", timeout: request.uri.queryParameters.get("timeout"))
        }
        router.get("/v1/jobs/{id}/events") { request, context in
            try await events(id: context.parameters.get("id") ?? "", lastEventID: Self.lastEventID(request.headers))
        }
        router.get("/v1/queues") { _, _ in try await queues() }
        router.get("/healthz") { _, _ in Self.json(.ok, .object(["status": .string("ok")])) }
        router.get("/readyz") { _, _ in try await readyOrSpooling() }
        router.get("/openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: Self.openAPIDocument)))
        }
        router.get("/metrics") { _, _ in
            // The outbox and the breaker are read at scrape time.
            let metrics = access.metrics
            metrics.outbox(jobs: outboxJobs, bytes: outboxBytes, circuit: circuitState)
            return metrics.response
        }
        addInferenceProtocolRoutes(to: router)
        addDeadLetterRoutes(to: router)
        addRegistryRoutes(to: router)
        return router
    }

    // MARK: - Submissions

    func submit(_ request: Request) async throws -> Response {
        let body = try await readJSON(request)
        switch validator.single(body) {
        case .failure(let problems): throw Self.invalid(problems)
        case .success(let job):
            let missing = await missingReferences([("/payload", job.kind, body["payload"] ?? .null)])
            if !missing.isEmpty { throw Self.invalid(Problems(missing)) }
            let admitted = try await admit([job], body: body, request: request, route: "/v1/jobs") { try await place($0) }
            return await acceptedResponse([job], admitted, bulk: false)
        }
    }

    func submitBulk(_ request: Request) async throws -> Response {
        let body = try await readJSON(request)
        switch validator.bulk(body) {
        case .failure(let problems): throw Self.invalid(problems)
        case .success(let jobs):
            let missing = await missingReferences(Self.bulkPayloads(body, jobs))
            if !missing.isEmpty { throw Self.invalid(Problems(missing)) }
            // Every job was checked above; the library's bulk path enqueues them in one round trip per queue and chunk.
            let admitted = try await admit(jobs, body: body, request: request, route: "/v1/jobs:bulk") { try await place($0) }
            return await acceptedResponse(jobs, admitted, bulk: true)
        }
    }

    /// The answer for one accepted job.
    /// `spooled`: the job waits in this replica's outbox; the live-worker count is then the last one known (Redis is away).
    /// `duplicate`: the job existed (its `unique` key seen within its window, or its id in use); `id` is the original's.
    func acceptedJSON(_ job: EnqueueRequest, id: String, spooled: Bool = false, duplicate: Bool = false) async -> JSONValue {
        let scheduled = (job.delay ?? .zero) > .zero || (job.runAt.map { $0 > WallClock.nowMilliseconds() } ?? false)
        let serving = spooled ? workers.lastKnownServing(job.queue) : await workers.serving(job.queue)
        var object: [String: JSONValue] = [
            "id": .string(id), "kind": .string(job.kind), "queue": .string(job.queue),
            "tier": .string(job.tier ?? farm.configuration.defaultTier),
            "state": .string(scheduled ? "scheduled" : "queued"),
            "workersServing": .number(Double(serving)),
            "links": Self.links(id),
        ]
        if spooled { object["spooled"] = .bool(true) }
        if duplicate { object["duplicate"] = .bool(true) }
        return .object(object)
    }

    /// The request's whole body, up to the configured limit: 413 over it (told by Content-Length, or found while
    /// reading a body sent without one).
    func collectBody(_ request: Request) async throws -> ByteBuffer {
        let limit = configuration.bodyLimitBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw Self.tooLarge(limit)
        }
        var request = request
        do {
            return try await request.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw Self.tooLarge(limit)
        }
    }

    /// Reads the body as JSON: 415 unless it says JSON, 413 over the limit, 400 unless it parses.
    func readJSON(_ request: Request) async throws -> JSONValue {
        let contentType = request.headers[.contentType] ?? ""
        let mediaType = contentType.split(separator: ";").first.map { String($0).trimmingWhitespace.lowercased() } ?? ""
        guard mediaType == "application/json" else {
            throw Problem(.unsupportedMediaType,
                          detail: contentType.isEmpty ? "no Content-Type: send the body as application/json"
                              : "Content-Type '\(contentType.prefix(100))' is not accepted: send the body as application/json")
        }
        let buffer = try await collectBody(request)
        if buffer.readableBytes == 0 { throw Problem(.badRequest, detail: "the body is empty: send a JSON object") }
        do {
            return try buffer.readableBytesView.withContiguousStorageIfAvailable { bytes in
                try JSONParser.parse(bytes: bytes)
            } ?? JSONParser.parse(String(buffer: buffer))
        } catch let failure as JSONParser.Failure {
            throw Problem(.badRequest, detail: "the body is not valid JSON: \(failure.message) at byte \(failure.offset)")
        } catch {
            throw Problem(.badRequest, detail: "the body is not valid JSON: \(error)")
        }
    }

    static func tooLarge(_ limit: Int) -> Problem {
        Problem(.contentTooLarge, detail: "the body is over the limit of \(limit) bytes: send fewer jobs per request, or smaller payloads")
    }

    static func invalid(_ problems: Problems) -> Problem {
        let count = problems.items.count
        return Problem(.unprocessableContent, detail: "the request has \(count) problem\(count == 1 ? "" : "s"); nothing was enqueued",
                       errors: problems.items)
    }

    // MARK: - One job

    func show(id: String) async throws -> Response {
        guard JobID.isValid(id) else { throw Problem.notFound(job: id) }
        if let spooled = try await spooledStatus(id: id) { return Self.json(.ok, spooled) }
        let farm = self.farm
        let status = try Self.visible(try await redisCall({ try await farm.status(id: id) }), id: id)
        return Self.json(.ok, Self.statusJSON(status))
    }

    func cancel(id: String) async throws -> Response {
        guard JobID.isValid(id) else { throw Problem.notFound(job: id) }
        if let spooled = try await cancelSpooled(id: id) { return spooled }
        try await requireVisible(id: id)
        let farm = self.farm
        let outcome: String
        switch try await redisCall({ try await farm.cancel(id: id) }) {
        case .notFound: throw Problem.notFound(job: id)
        case .cancelled: outcome = "cancelled"
        case .cancelling: outcome = "cancelling"
        case .alreadyFinished: outcome = "already_finished"
        }
        return Self.json(.ok, .object(["id": .string(id), "outcome": .string(outcome), "links": Self.links(id)]))
    }

    /// Long poll: answers when the job is final, woken by the published events (the library's `wait`), or at
    /// the timeout (or at graceful shutdown) with the state it has then.
    func wait(id: String, timeout text: String?) async throws -> Response {
        var timeout = configuration.defaultWait
        if let text {
            guard let parsed = Duration.parse(text), parsed <= configuration.maxWait else {
                throw Problem(.badRequest, detail: "the query parameter timeout is not valid", errors: [
                    FieldProblem(parameter: "timeout", "must be a duration of 0s…\(Int(configuration.maxWait.seconds))s such as 30s or 500ms, got '\(text.prefix(32))'"),
                ])
            }
            timeout = parsed
        }
        guard JobID.isValid(id) else { throw Problem.notFound(job: id) }
        let (spooled, spent) = try await waitWhileSpooled(id: id, upTo: timeout)
        if let spooled { return Self.json(.ok, spooled) }
        guard breaker.mayAllowCall else { throw redisUnavailable() }
        try await requireVisible(id: id)
        let farm = self.farm
        let limit = max(.zero, timeout - spent)
        do {
            let status = try await cancelWhenGracefulShutdown { try await farm.wait(for: id, timeout: limit) }
            return Self.json(.ok, Self.statusJSON(status))
        } catch JobFarmError.notFound(_) {
            throw Problem.notFound(job: id)
        } catch JobFarmError.timedOut(_) {
        } catch is CancellationError {
        }
        guard let status = try await farm.status(id: id) else { throw Problem.notFound(job: id) }
        return Self.json(.ok, Self.statusJSON(status))
    }

    // MARK: - Queues and health

    func queues() async throws -> Response {
        let farm = self.farm
        let names = Set(try await redisCall { try await farm.queues() }).union(configuration.routing.routedQueues).sorted()
        let stats = try await redisCall { try await farm.stats(queues: names) }
        var items: [JSONValue] = []
        for queue in stats {
            var object: [String: JSONValue] = [
                "name": .string(queue.queue), "depth": .number(Double(queue.depth)),
                "inFlight": .number(Double(queue.inflight)), "scheduled": .number(Double(queue.scheduled)),
                "dead": .number(Double(queue.dead)),
                "delayed": .number(Double(queue.delayed)), "retrying": .number(Double(queue.retrying)),
                "dueNow": .number(Double(queue.dueNow)),
                "workersServing": .number(Double(await workers.serving(queue.queue))),
                "tiers": .array(queue.tiers.map { tier in
                    var item: [String: JSONValue] = ["name": .string(tier.name), "depth": .number(Double(tier.depth))]
                    if let age = tier.oldestAge { item["oldestAgeSeconds"] = .number(age.seconds) }
                    return .object(item)
                }),
            ]
            if let age = queue.oldestAge { object["oldestAgeSeconds"] = .number(age.seconds) }
            items.append(.object(object))
        }
        return Self.json(.ok, .object(["queues": .array(items)]))
    }

    func ready() async throws -> Response {
        do {
            let roundTrip = try await farm.ping()
            return Self.json(.ok, .object(["status": .string("ready"), "redisMilliseconds": .number(roundTrip.seconds * 1000)]))
        } catch {
            throw Problem(.serviceUnavailable, detail: "Redis does not answer (\(error)); check that it runs and the --redis-url",
                          headers: [.retryAfter: "1"])
        }
    }

    // MARK: - JSON

    static func json(_ status: HTTPResponse.Status, _ value: JSONValue, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: value.jsonText)))
    }

    static func links(_ id: String) -> JSONValue {
        .object(["self": .string("/v1/jobs/\(id)"), "wait": .string("/v1/jobs/\(id)/wait")])
    }

    /// A job's status as the API shows it (camelCase, RFC 3339 times).
    static func statusJSON(_ status: JobStatus) -> JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(status.id), "queue": .string(status.queue), "state": .string(status.state.rawValue),
            "attempts": .number(Double(status.attempts)), "cancelRequested": .bool(status.cancelRequested),
            "links": links(status.id),
        ]
        if let kind = status.kind { object["kind"] = .string(kind) }
        if let tier = status.tier { object["tier"] = .string(tier) }
        if let maxAttempts = status.maxAttempts { object["maxAttempts"] = .number(Double(maxAttempts)) }
        if let progress = status.progress { object["progress"] = .number(progress) }
        if let result = status.result { object["result"] = result }
        if let error = status.error { object["error"] = .string(error) }
        if let reason = status.reason { object["reason"] = .string(reason) }
        for (key, value) in [("enqueuedAt", status.enqueuedAt), ("startedAt", status.startedAt),
                             ("finishedAt", status.finishedAt), ("runAt", status.runAt)] {
            if let value { object[key] = .string(rfc3339(value)) }
        }
        return .object(object)
    }

    static func rfc3339(_ milliseconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds) / 1000))
    }
}

/// Turns every error into an `application/problem+json` answer: `Problem`s as they are, Hummingbird's own
/// errors (unknown route: 404) with their status, Redis trouble as 503, anything else as 500 (logged).
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as Problem {
            return problem.response(path: request.uri.path)
        } catch let error as HTTPError {
            let detail = error.status == .notFound
                ? "no route \(request.method.rawValue) \(request.uri.path); the routes are in /openapi.yaml" : (error.body ?? error.status.reasonPhrase)
            return Problem(error.status, detail: detail).response(path: request.uri.path)
        } catch is NIOTooManyBytesError {
            return Problem(.contentTooLarge, detail: "the body is too large").response(path: request.uri.path)
        } catch JobFarmError.invalidArgument(let text) {
            return Problem(.unprocessableContent, detail: text).response(path: request.uri.path)
        } catch let error as JobFarmError {
            // Redis down, not ready, refusing this dispatcher's credentials, or failing (a key a foreign client broke,
            // out of memory): nothing the client can mend, so 503 as the document says; the detail stays in the log.
            logger.warning("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            let detail = error.isConnectionError ? "Redis is unreachable or not ready; retry later" : "the job store is failing; retry later"
            return Problem(.serviceUnavailable, detail: detail, headers: [.retryAfter: "1"]).response(path: request.uri.path)
        } catch {
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return Problem(.internalServerError, detail: "the dispatcher failed: \(error)").response(path: request.uri.path)
        }
    }
}
