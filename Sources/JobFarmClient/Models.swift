import Foundation
import JobProtocol

/// One job to submit (`POST /v1/jobs`, or one element of `POST /v1/jobs:bulk`). Only `kind` is required.
public struct JobSubmission: Sendable, Equatable {
    /// The job kind; it decides the queue. A kind the farm does not know is refused (422).
    public var kind: String
    /// Priority tier (`premium`, `standard`, `free` by default); `nil`: the farm's default.
    public var tier: String?
    /// The kind's parameters (docs/JOBS.md).
    public var payload: JSONValue?
    /// Run no earlier than this long from now (not with `runAt`).
    public var delay: Duration?
    /// Run no earlier than this time (not with `delay`).
    public var runAt: Date?
    public var maxAttempts: Int?
    /// Longest run of one attempt.
    public var timeout: Duration?
    /// A job id of the caller's choice: submitting it again makes no second job.
    public var id: String?
    /// A unique job: while the key is kept (`uniqueWindow`, default 24 h) another job with it makes nothing.
    public var uniqueKey: String?
    public var uniqueWindow: Duration?

    public init(kind: String, tier: String? = nil, payload: JSONValue? = nil, delay: Duration? = nil, runAt: Date? = nil,
                maxAttempts: Int? = nil, timeout: Duration? = nil, id: String? = nil, uniqueKey: String? = nil,
                uniqueWindow: Duration? = nil) {
        self.kind = kind
        self.tier = tier
        self.payload = payload
        self.delay = delay
        self.runAt = runAt
        self.maxAttempts = maxAttempts
        self.timeout = timeout
        self.id = id
        self.uniqueKey = uniqueKey
        self.uniqueWindow = uniqueWindow
    }

    /// The request body's JSON.
    public var json: JSONValue {
        var object: [String: JSONValue] = ["kind": .string(kind)]
        if let tier { object["tier"] = .string(tier) }
        if let payload { object["payload"] = payload }
        if let delay { object["delaySeconds"] = .number(delay.clientSeconds) }
        if let runAt { object["runAt"] = .string(JobFarmClient.rfc3339(runAt)) }
        if let maxAttempts { object["maxAttempts"] = .number(Double(maxAttempts)) }
        if let timeout { object["timeoutSeconds"] = .number(timeout.clientSeconds) }
        if let id { object["id"] = .string(id) }
        if let uniqueKey {
            var unique: [String: JSONValue] = ["key": .string(uniqueKey)]
            if let uniqueWindow { unique["windowSeconds"] = .number(uniqueWindow.clientSeconds) }
            object["unique"] = .object(unique)
        }
        return .object(object)
    }
}

/// A job the dispatcher accepted: 201 (in Redis) or 202 (`spooled`: in the answering replica's outbox while Redis is
/// down; its id is final and it is forwarded in order; treat it as accepted).
public struct AcceptedJob: Sendable, Equatable {
    public var id: String
    public var kind: String
    public var queue: String
    public var tier: String
    /// `queued` or `scheduled`.
    public var state: JobState
    /// Live workers serving the queue now; 0 is not an error (the job waits until a worker comes).
    public var workersServing: Int
    /// The job waits in the answering replica's outbox (Redis was down); answered 202.
    public var spooled: Bool
    /// Nothing new was made: `id` is the original job's (its `unique` key or its id was in use).
    public var duplicate: Bool
    /// The answer repeats an earlier request under the same `Idempotency-Key` (`Idempotent-Replayed: true`).
    public var replayed: Bool

    init(_ json: JSONValue, replayed: Bool) throws {
        guard let id = json["id"]?.stringValue, let kind = json["kind"]?.stringValue, let queue = json["queue"]?.stringValue,
              let tier = json["tier"]?.stringValue, let state = json["state"]?.stringValue.flatMap(JobState.init(rawValue:))
        else { throw JobFarmClientError.unexpectedAnswer(status: 201, body: String(json.jsonText.prefix(500))) }
        self.id = id
        self.kind = kind
        self.queue = queue
        self.tier = tier
        self.state = state
        self.workersServing = json["workersServing"]?.intValue ?? 0
        self.spooled = json["spooled"] == .bool(true)
        self.duplicate = json["duplicate"] == .bool(true)
        self.replayed = replayed
    }
}

/// A job as `GET /v1/jobs/{id}` shows it.
public struct Job: Sendable, Equatable {
    public var id: String
    public var queue: String
    public var kind: String?
    public var tier: String?
    public var state: JobState
    /// 0…1, as the handler reports it (1 once succeeded).
    public var progress: Double?
    /// Attempts started.
    public var attempts: Int
    public var maxAttempts: Int?
    /// The handler's result (succeeded jobs); `decodeResult` reads it as a `Decodable`.
    public var result: JSONValue?
    /// The last error.
    public var error: String?
    /// Why it was dead-lettered.
    public var reason: String?
    public var enqueuedAt: Date?
    public var startedAt: Date?
    public var finishedAt: Date?
    public var runAt: Date?
    public var cancelRequested: Bool
    /// The job waits in the answering replica's outbox (Redis was down).
    public var spooled: Bool
    /// The answer as sent.
    public var json: JSONValue

    /// Succeeded, dead or cancelled.
    public var isFinal: Bool { state.isTerminal }

    /// The result as `T`.
    public func decodeResult<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try (result ?? .null).decode(type)
    }

    init(_ json: JSONValue, status: Int = 200) throws {
        guard let id = json["id"]?.stringValue, let queue = json["queue"]?.stringValue,
              let state = json["state"]?.stringValue.flatMap(JobState.init(rawValue:))
        else { throw JobFarmClientError.unexpectedAnswer(status: status, body: String(json.jsonText.prefix(500))) }
        self.id = id
        self.queue = queue
        self.kind = json["kind"]?.stringValue
        self.tier = json["tier"]?.stringValue
        self.state = state
        self.progress = json["progress"]?.doubleValue
        self.attempts = json["attempts"]?.intValue ?? 0
        self.maxAttempts = json["maxAttempts"]?.intValue
        self.result = json["result"]
        self.error = json["error"]?.stringValue
        self.reason = json["reason"]?.stringValue
        self.enqueuedAt = json["enqueuedAt"]?.stringValue.flatMap(JobFarmClient.date)
        self.startedAt = json["startedAt"]?.stringValue.flatMap(JobFarmClient.date)
        self.finishedAt = json["finishedAt"]?.stringValue.flatMap(JobFarmClient.date)
        self.runAt = json["runAt"]?.stringValue.flatMap(JobFarmClient.date)
        self.cancelRequested = json["cancelRequested"] == .bool(true)
        self.spooled = json["spooled"] == .bool(true)
        self.json = json
    }
}

/// What `DELETE /v1/jobs/{id}` did.
public enum CancelOutcome: String, Sendable {
    /// It was pending, and is cancelled.
    case cancelled
    /// It is running; its worker stops it.
    case cancelling
    /// It had ended; nothing changed.
    case alreadyFinished = "already_finished"
}

/// One queue as `GET /v1/queues` shows it.
public struct QueueSummary: Sendable, Equatable {
    /// One tier of the queue: jobs waiting to run now, and how long the oldest has waited.
    public struct Tier: Sendable, Equatable {
        public var name: String
        public var depth: Int
        public var oldestAgeSeconds: Double?
    }

    public var name: String
    /// Jobs waiting to run now, all tiers.
    public var depth: Int
    public var oldestAgeSeconds: Double?
    public var tiers: [Tier]
    public var inFlight: Int
    /// Delayed jobs and retries waiting for their time (`delayed` + `retrying`; `dueNow` of them are due).
    public var scheduled: Int
    public var delayed: Int
    public var retrying: Int
    public var dueNow: Int
    public var dead: Int
    public var workersServing: Int

    init(_ json: JSONValue) {
        name = json["name"]?.stringValue ?? ""
        depth = json["depth"]?.intValue ?? 0
        oldestAgeSeconds = json["oldestAgeSeconds"]?.doubleValue
        tiers = JobFarmClient.items(json["tiers"]).map {
            Tier(name: $0["name"]?.stringValue ?? "", depth: $0["depth"]?.intValue ?? 0, oldestAgeSeconds: $0["oldestAgeSeconds"]?.doubleValue)
        }
        inFlight = json["inFlight"]?.intValue ?? 0
        scheduled = json["scheduled"]?.intValue ?? 0
        delayed = json["delayed"]?.intValue ?? 0
        retrying = json["retrying"]?.intValue ?? 0
        dueNow = json["dueNow"]?.intValue ?? 0
        dead = json["dead"]?.intValue ?? 0
        workersServing = json["workersServing"]?.intValue ?? 0
    }
}

/// A dead letter (operators): the job that died, when and why; `history` and `envelope` only when read one by one.
public struct DeadLetter: Sendable, Equatable {
    public var id: String
    public var queue: String
    /// exhausted, non_retryable, malformed, timeout, poison, cancelled.
    public var reason: String
    public var error: String
    public var deadAt: Date?
    public var attempts: Int
    public var kind: String?
    /// Every attempt (`deadLetter(_:queue:)` only).
    public var history: [JSONValue]
    /// The job as it was enqueued (`deadLetter(_:queue:)` only).
    public var envelope: JSONValue?

    init(_ json: JSONValue) {
        id = json["id"]?.stringValue ?? ""
        queue = json["queue"]?.stringValue ?? ""
        reason = json["reason"]?.stringValue ?? ""
        error = json["error"]?.stringValue ?? ""
        deadAt = json["deadAt"]?.stringValue.flatMap(JobFarmClient.date)
        attempts = json["attempts"]?.intValue ?? 0
        kind = json["kind"]?.stringValue
        history = JobFarmClient.items(json["history"])
        envelope = json["envelope"]
    }
}

/// Which dead letters an operator call acts on: every condition given must hold.
public struct DeadLetterSelection: Sendable, Equatable {
    public var queue: String
    public var ids: [String]?
    public var reason: String?
    public var kind: String?
    /// Text the error contains.
    public var error: String?
    public var since: Date?
    public var until: Date?
    /// Every letter of the queue (needed when no ids and no filter are given).
    public var all: Bool
    /// Most letters acted on (default 1,000).
    public var limit: Int?

    public init(queue: String = "default", ids: [String]? = nil, reason: String? = nil, kind: String? = nil, error: String? = nil,
                since: Date? = nil, until: Date? = nil, all: Bool = false, limit: Int? = nil) {
        self.queue = queue
        self.ids = ids
        self.reason = reason
        self.kind = kind
        self.error = error
        self.since = since
        self.until = until
        self.all = all
        self.limit = limit
    }

    var json: [String: JSONValue] {
        var object: [String: JSONValue] = ["queue": .string(queue)]
        if let ids { object["ids"] = .array(ids.map(JSONValue.string)) }
        if let reason { object["reason"] = .string(reason) }
        if let kind { object["kind"] = .string(kind) }
        if let error { object["error"] = .string(error) }
        if let since { object["since"] = .string(JobFarmClient.rfc3339(since)) }
        if let until { object["until"] = .string(JobFarmClient.rfc3339(until)) }
        if all { object["all"] = .bool(true) }
        if let limit { object["limit"] = .number(Double(limit)) }
        return object
    }
}

/// One page of dead letters, newest first; pass `nextCursor` for the next (none on the last page).
public struct DeadLetterPage: Sendable, Equatable {
    public var queue: String
    public var deadLetters: [DeadLetter]
    public var nextCursor: String?
}

/// What a requeue did (or, in a dry run, would do).
public struct DeadLetterRequeue: Sendable, Equatable {
    public var queue: String
    public var dryRun: Bool
    public var requeued: [String]
    /// Letters holding no runnable envelope (purge them).
    public var malformed: [String]
    /// Letters gone meanwhile, or whose id is in use again.
    public var missing: [String]
}

/// What a purge did: a dry run lists the ids and gives the `confirm` token that deletes exactly them.
public struct DeadLetterPurge: Sendable, Equatable {
    public var queue: String
    public var dryRun: Bool
    public var count: Int
    public var ids: [String]
    public var confirm: String?
}

extension Duration {
    var clientSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
