import AsyncHTTPClient
import Foundation
@_exported import enum JobProtocol.JSONValue
@_exported import enum JobProtocol.JobState
import JobProtocol
import NIOCore
import NIOHTTP1

/// The Swift client of `jobfarm serve`'s HTTP API (docs/openapi.yaml), for frontends written in Swift.
///
/// Thin over AsyncHTTPClient: one call per route, answers as value types, every error a `JobFarmClientError`
/// carrying the dispatcher's RFC 9457 problem. A spooled submission (202, Redis down) is an accepted job with
/// `spooled: true`. The client holds no state but its settings, so one instance can serve any number of tasks.
///
/// ```swift
/// let farm = JobFarmClient(baseURL: "http://127.0.0.1:8080", apiKey: key)
/// let job = try await farm.submit(kind: "echo", tier: "premium", payload: .object(["hello": .number(1)]))
/// let done = try await farm.wait(job.id, timeout: .seconds(30))
/// ```
public struct JobFarmClient: Sendable {
    /// The dispatcher's address, without a trailing slash (`http://127.0.0.1:8080`).
    public let baseURL: String
    /// Sent as `Authorization: Bearer <key>` (`jobfarm apikey create` makes one); `nil` for `--no-auth`.
    public var apiKey: String?
    /// Longest time for one request's answer to start (a wait asks for less than this).
    public var requestTimeout: Duration
    /// The longest `timeout` one wait request asks for; `wait` sends as many as its whole timeout needs. Keep it at
    /// or below the dispatcher's `--max-wait` (60 s by default).
    public var longestWaitPerRequest: Duration
    /// Largest answer read (bytes).
    public var maxAnswerBytes: Int
    let http: HTTPClient

    /// - Parameter httpClient: the AsyncHTTPClient to send through (`.shared` by default; the caller owns any other).
    public init(baseURL: String, apiKey: String? = nil, httpClient: HTTPClient = .shared, requestTimeout: Duration = .seconds(30),
                longestWaitPerRequest: Duration = .seconds(30), maxAnswerBytes: Int = 64 << 20) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.apiKey = apiKey
        self.http = httpClient
        self.requestTimeout = requestTimeout
        self.longestWaitPerRequest = longestWaitPerRequest
        self.maxAnswerBytes = maxAnswerBytes
    }

    // MARK: - Jobs

    /// Submits one job (`POST /v1/jobs`). With an `idempotencyKey`, a retry of the same submission answers the first
    /// job (`replayed`), and the key with another body is refused (422).
    public func submit(kind: String, tier: String? = nil, payload: JSONValue? = nil, idempotencyKey: String? = nil) async throws -> AcceptedJob {
        try await submit(JobSubmission(kind: kind, tier: tier, payload: payload), idempotencyKey: idempotencyKey)
    }

    /// Submits one job whose payload is any `Encodable`.
    public func submit<Payload: Encodable & Sendable>(kind: String, tier: String? = nil, payload: Payload, idempotencyKey: String? = nil) async throws -> AcceptedJob {
        try await submit(JobSubmission(kind: kind, tier: tier, payload: try JSONValue(encoding: payload)), idempotencyKey: idempotencyKey)
    }

    /// Submits one job with every option (delay, run-at time, attempts, timeout, id, unique key).
    public func submit(_ job: JobSubmission, idempotencyKey: String? = nil) async throws -> AcceptedJob {
        let answer = try await send(.POST, "/v1/jobs", body: job.json, idempotencyKey: idempotencyKey)
        return try AcceptedJob(answer.json, replayed: answer.replayed)
    }

    /// Submits up to the dispatcher's bulk limit (1,000 by default) in one request (`POST /v1/jobs:bulk`): all or none.
    /// Every job is checked before any is enqueued; one invalid job refuses the request with every problem
    /// (pointers `/jobs/<index>/…`). The answer lists each job's id in order.
    public func submitBulk(_ jobs: [JobSubmission], idempotencyKey: String? = nil) async throws -> [AcceptedJob] {
        let answer = try await send(.POST, "/v1/jobs:bulk", body: .object(["jobs": .array(jobs.map(\.json))]), idempotencyKey: idempotencyKey)
        return try Self.items(answer.json["jobs"]).map { try AcceptedJob($0, replayed: answer.replayed) }
    }

    /// The job's state, progress, attempts, result or error (`GET /v1/jobs/{id}`). Another tenant's job is unknown (404).
    public func job(_ id: String) async throws -> Job {
        try Job(try await send(.GET, "/v1/jobs/\(Self.pathSegment(id))").json)
    }

    /// Waits until the job is final or `timeout` has passed, and returns it as it is then (check `isFinal`).
    /// Long polls (`GET /v1/jobs/{id}/wait`), woken by the farm's events, in requests of at most
    /// `longestWaitPerRequest`; no polling loop.
    public func wait(_ id: String, timeout: Duration = .seconds(30)) async throws -> Job {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            let remaining = max(.zero, deadline - clock.now)
            let slice = min(remaining, longestWaitPerRequest)
            let milliseconds = Int64(slice.clientSeconds * 1000)
            let answer = try await send(.GET, "/v1/jobs/\(Self.pathSegment(id))/wait?timeout=\(milliseconds)ms", timeout: slice + requestTimeout)
            let job = try Job(answer.json)
            if job.isFinal || clock.now >= deadline { return job }
        }
    }

    /// The job's changes as they happen (`GET /v1/jobs/{id}/events`, Server-Sent Events): `progress` events, then one
    /// `final` event, then the sequence ends. When a stream ends early (the dispatcher's longest wait, a lost
    /// connection), the sequence reconnects with `Last-Event-ID` and goes on where it was; pass `lastEventID` to
    /// resume a sequence of an earlier run.
    public func events(_ id: String, lastEventID: String? = nil) -> JobEvents {
        JobEvents(client: self, id: id, lastEventID: lastEventID)
    }

    /// Cancels the job (`DELETE /v1/jobs/{id}`): a pending job is cancelled, a running one is stopped by its worker.
    @discardableResult
    public func cancel(_ id: String) async throws -> CancelOutcome {
        let answer = try await send(.DELETE, "/v1/jobs/\(Self.pathSegment(id))")
        guard let outcome = answer.json["outcome"]?.stringValue.flatMap(CancelOutcome.init(rawValue:)) else {
            throw JobFarmClientError.unexpectedAnswer(status: answer.status, body: String(answer.json.jsonText.prefix(500)))
        }
        return outcome
    }

    /// Every queue: depth and oldest age per tier, in flight, scheduled (delayed, retrying, due now), dead, and the
    /// live workers serving it (`GET /v1/queues`).
    public func queues() async throws -> [QueueSummary] {
        Self.items(try await send(.GET, "/v1/queues").json["queues"]).map(QueueSummary.init)
    }

    // MARK: - Dead letters (operator keys)

    /// A page of a queue's dead letters, newest first (`GET /v1/admin/dead-letters`). Every filter given must hold.
    public func deadLetters(queue: String = "default", reason: String? = nil, kind: String? = nil, error: String? = nil,
                            since: Date? = nil, until: Date? = nil, limit: Int? = nil, cursor: String? = nil) async throws -> DeadLetterPage {
        var query: [(String, String)] = [("queue", queue)]
        if let reason { query.append(("reason", reason)) }
        if let kind { query.append(("kind", kind)) }
        if let error { query.append(("error", error)) }
        if let since { query.append(("since", Self.rfc3339(since))) }
        if let until { query.append(("until", Self.rfc3339(until))) }
        if let limit { query.append(("limit", String(limit))) }
        if let cursor { query.append(("cursor", cursor)) }
        let json = try await send(.GET, "/v1/admin/dead-letters" + Self.queryString(query)).json
        return DeadLetterPage(queue: json["queue"]?.stringValue ?? queue, deadLetters: Self.items(json["deadLetters"]).map(DeadLetter.init),
                              nextCursor: json["nextCursor"]?.stringValue)
    }

    /// One dead letter with its attempts and envelope (`GET /v1/admin/dead-letters/{id}`).
    public func deadLetter(_ id: String, queue: String = "default") async throws -> DeadLetter {
        DeadLetter(try await send(.GET, "/v1/admin/dead-letters/\(Self.pathSegment(id))" + Self.queryString([("queue", queue)])).json)
    }

    /// Moves dead letters back to their queue (`POST /v1/admin/dead-letters:requeue`); a dry run unless `dryRun` is false.
    /// - Parameter tier: put them in this tier instead of their own.
    public func requeueDeadLetters(_ selection: DeadLetterSelection, dryRun: Bool = true, tier: String? = nil) async throws -> DeadLetterRequeue {
        var body = selection.json
        body["dryRun"] = .bool(dryRun)
        if let tier { body["tier"] = .string(tier) }
        let json = try await send(.POST, "/v1/admin/dead-letters:requeue", body: .object(body)).json
        func ids(_ key: String) -> [String] { Self.items(json[key]).compactMap(\.stringValue) }
        return DeadLetterRequeue(queue: json["queue"]?.stringValue ?? selection.queue, dryRun: json["dryRun"] == .bool(true),
                                 requeued: ids("requeued"), malformed: ids("malformed"), missing: ids("missing"))
    }

    /// Deletes dead letters for good, in two steps (`POST /v1/admin/dead-letters:purge`): without `confirm` a dry run
    /// that lists the ids and answers the token; with it, deletes exactly those (409 if the match changed meanwhile).
    public func purgeDeadLetters(_ selection: DeadLetterSelection, confirm: String? = nil) async throws -> DeadLetterPurge {
        var body = selection.json
        if let confirm { body["confirm"] = .string(confirm) }
        let json = try await send(.POST, "/v1/admin/dead-letters:purge", body: .object(body)).json
        return DeadLetterPurge(queue: json["queue"]?.stringValue ?? selection.queue, dryRun: json["dryRun"] == .bool(true),
                               count: json["count"]?.intValue ?? 0, ids: Self.items(json["ids"]).compactMap(\.stringValue),
                               confirm: json["confirm"]?.stringValue)
    }

    // MARK: - HTTP

    /// One answer: its status, parsed JSON body, and whether it replays an earlier request.
    struct Answer {
        var status: Int
        var json: JSONValue
        var replayed: Bool
    }

    func makeRequest(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil, headers extra: [(String, String)] = []) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let apiKey { request.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        for (name, value) in extra { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body.jsonText))
        }
        return request
    }

    func send(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil, idempotencyKey: String? = nil,
              timeout: Duration? = nil) async throws -> Answer {
        let request = makeRequest(method, path, body: body, headers: idempotencyKey.map { [("Idempotency-Key", $0)] } ?? [])
        let response: HTTPClientResponse
        let buffer: ByteBuffer
        do {
            response = try await http.execute(request, timeout: .nanoseconds(Int64((timeout ?? requestTimeout).clientSeconds * 1e9)))
            buffer = try await response.body.collect(upTo: maxAnswerBytes)
        } catch {
            throw JobFarmClientError.transport("\(method.rawValue) \(path): \(error)")
        }
        let status = Int(response.status.code)
        let text = String(buffer: buffer)
        guard (200..<300).contains(status) else { throw Self.failure(status: status, headers: response.headers, text: text) }
        guard let json = try? JSONValue(parsing: text) else {
            throw JobFarmClientError.unexpectedAnswer(status: status, body: String(text.prefix(500)))
        }
        return Answer(status: status, json: json, replayed: response.headers.first(name: "Idempotent-Replayed")?.lowercased() == "true")
    }

    /// The error for a 4xx/5xx answer: its problem document, or what can be made of another body.
    static func failure(status: Int, headers: HTTPHeaders, text: String) -> JobFarmClientError {
        let json = try? JSONValue(parsing: text)
        let errors = items(json?["errors"]).map {
            JobFarmProblem.FieldError(pointer: $0["pointer"]?.stringValue, parameter: $0["parameter"]?.stringValue,
                                      detail: $0["detail"]?.stringValue ?? "")
        }
        let retryAfter = headers.first(name: "Retry-After").flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            .map { Duration.milliseconds(Int64($0 * 1000)) }
        let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
        return .problem(JobFarmProblem(
            status: status, title: json?["title"]?.stringValue ?? reason,
            detail: json?["detail"]?.stringValue ?? json?["error"]?.stringValue ?? String(text.prefix(500)),
            errors: errors, retryAfter: retryAfter,
            rateLimit: headers.first(name: "RateLimit"), rateLimitPolicy: headers.first(name: "RateLimit-Policy")))
    }

    // MARK: - Text

    /// A job id as a path segment (ids are `[A-Za-z0-9_.:-]`; anything else is escaped).
    static func pathSegment(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? text
    }

    static func queryString(_ items: [(String, String)]) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+?#")
        return "?" + items.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.1)" }.joined(separator: "&")
    }

    static func items(_ value: JSONValue?) -> [JSONValue] {
        if case .array(let elements)? = value { return elements }
        return []
    }

    static func rfc3339(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }

    static func date(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}
