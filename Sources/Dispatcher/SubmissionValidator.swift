import Foundation
import JobProtocol
import JobQueue

/// Checks the payload of one job kind before it is enqueued.
///
/// The seam for the per-kind checks the worker runs too (so the dispatcher and the worker can never disagree):
/// register one per kind in `DispatcherConfiguration.payloadValidators` (by default the ML kinds' checks from
/// `JobPayloads`, `DispatcherConfiguration.kindPayloadValidators`).
public protocol PayloadValidator: Sendable {
    /// Every problem with `payload`, pointers under `pointer` (the payload's own pointer); empty when it is fine.
    func problems(in payload: JSONValue, at pointer: String) -> [FieldProblem]
}

/// Turns the JSON of a submission into `EnqueueRequest`s, finding **every** problem at once: field types,
/// required members, sizes and unknown members first, then cross-field rules (`runAt` with `delaySeconds`),
/// then the domain (a kind the routing table knows, a tier the farm has, the kind's payload validator).
/// A member that fails its field check is not checked further, so each problem is reported once.
/// Works on a parsed `JSONValue`, before any typed decoding, so nothing stops at the first error.
public struct SubmissionValidator: Sendable {
    public let routing: RoutingTable
    public let tiers: [String]
    public let defaultTier: String
    public let bulkLimit: Int
    public let payloadValidators: [String: any PayloadValidator]

    /// Members a job object may have.
    public static let jobMembers = ["kind", "tier", "payload", "delaySeconds", "runAt", "maxAttempts", "timeoutSeconds", "id", "unique"]
    /// Longest delay (and furthest `runAt`) accepted: one year.
    public static let maxDelaySeconds: Double = 31_536_000
    /// Longest per-attempt timeout: one day.
    public static let maxTimeoutSeconds: Double = 86_400

    public init(configuration: DispatcherConfiguration, farm: JobFarmConfiguration) {
        self.routing = configuration.routing
        self.tiers = farm.tiers
        self.defaultTier = farm.defaultTier
        self.bulkLimit = configuration.bulkLimit
        self.payloadValidators = configuration.payloadValidators
    }

    /// One job (`POST /v1/jobs`).
    public func single(_ body: JSONValue, now: Int64 = WallClock.nowMilliseconds()) -> Result<EnqueueRequest, Problems> {
        var problems: [FieldProblem] = []
        let request = job(body, at: "", now: now, problems: &problems)
        if let request, problems.isEmpty { return .success(request) }
        return .failure(Problems(problems))
    }

    /// Many jobs (`POST /v1/jobs:bulk`, `{"jobs": [...]}`): all of them or, with any problem, none.
    public func bulk(_ body: JSONValue, now: Int64 = WallClock.nowMilliseconds()) -> Result<[EnqueueRequest], Problems> {
        guard case .object(let members) = body else {
            return .failure(Problems([FieldProblem(pointer: "", "must be an object with a member \"jobs\" (an array of jobs), got \(body.kindDescription)")]))
        }
        var problems: [FieldProblem] = []
        for key in members.keys.sorted() where key != "jobs" {
            problems.append(FieldProblem(pointer: JSONPointer.appending("", key), "unknown member; a bulk request has only \"jobs\""))
        }
        var requests: [EnqueueRequest] = []
        switch members["jobs"] {
        case nil:
            problems.append(FieldProblem(pointer: "/jobs", "required: an array of 1–\(bulkLimit) jobs"))
        case .array(let items):
            if items.isEmpty { problems.append(FieldProblem(pointer: "/jobs", "must hold at least one job")) }
            if items.count > bulkLimit {
                problems.append(FieldProblem(pointer: "/jobs", "holds \(items.count) jobs; at most \(bulkLimit) per request: split it"))
            } else {
                for (index, item) in items.enumerated() {
                    if let request = job(item, at: JSONPointer.appending("/jobs", index), now: now, problems: &problems) {
                        requests.append(request)
                    }
                }
            }
        case .some(let other):
            problems.append(FieldProblem(pointer: "/jobs", "must be an array of jobs, got \(other.kindDescription)"))
        }
        if problems.isEmpty { return .success(requests) }
        return .failure(Problems(problems))
    }

    /// Checks one job object at `pointer`; appends its problems and returns the request when it has none.
    func job(_ value: JSONValue, at pointer: String, now: Int64, problems: inout [FieldProblem]) -> EnqueueRequest? {
        guard case .object(let members) = value else {
            problems.append(FieldProblem(pointer: pointer, "a job must be an object with at least \"kind\", got \(value.kindDescription)"))
            return nil
        }
        let before = problems.count
        func at(_ member: String) -> String { JSONPointer.appending(pointer, member) }
        func problem(_ member: String, _ detail: String) { problems.append(FieldProblem(pointer: at(member), detail)) }

        // Layer 1: fields (unknown members, types, required, sizes).
        for key in members.keys.sorted() where !Self.jobMembers.contains(key) {
            problem(key, "unknown member; a job has \(Self.jobMembers.joined(separator: ", "))")
        }
        var kind: String?
        switch members["kind"] {
        case nil: problem("kind", "required: the job kind, one of \(routing.kinds.joined(separator: ", "))")
        case .string(let text) where !text.isEmpty && text.utf8.count <= 128: kind = text
        case .string: problem("kind", "must be 1–128 bytes")
        case .some(let other): problem("kind", "must be a string, got \(other.kindDescription)")
        }
        var tier: String?
        switch members["tier"] {
        case nil: break
        case .string(let text) where !text.isEmpty && text.utf8.count <= 64: tier = text
        case .string: problem("tier", "must be 1–64 bytes")
        case .some(let other): problem("tier", "must be a string, got \(other.kindDescription)")
        }
        let delay = number(members["delaySeconds"], "delaySeconds", in: 0...Self.maxDelaySeconds, problem)
        var runAt: Int64?
        switch members["runAt"] {
        case nil: break
        case .string(let text):
            if let date = Self.parseTimestamp(text) {
                runAt = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
            } else {
                problem("runAt", "must be an RFC 3339 date-time such as 2026-12-01T08:00:00Z, got '\(text.prefix(64))'")
            }
        case .some(let other): problem("runAt", "must be an RFC 3339 date-time string, got \(other.kindDescription)")
        }
        var maxAttempts = 5
        switch members["maxAttempts"] {
        case nil: break
        case .number(let value) where value == value.rounded() && (1...1000).contains(value): maxAttempts = Int(value)
        case .number(let value): problem("maxAttempts", "must be a whole number 1…1000, got \(Self.format(value))")
        case .some(let other): problem("maxAttempts", "must be an integer, got \(other.kindDescription)")
        }
        let timeout = number(members["timeoutSeconds"], "timeoutSeconds", in: 0.001...Self.maxTimeoutSeconds, problem)
        var id: String?
        switch members["id"] {
        case nil: break
        case .string(let text) where JobID.isValid(text): id = text
        case .string: problem("id", "must be 1–128 of A–Z a–z 0–9 - _ . :")
        case .some(let other): problem("id", "must be a string, got \(other.kindDescription)")
        }
        let unique = uniqueKey(members["unique"], at: at("unique"), problems: &problems)

        // Layer 2: cross-field rules.
        if runAt != nil, delay != nil {
            problem("runAt", "give either runAt or delaySeconds, not both")
        } else if let runAt, runAt - now > Int64(Self.maxDelaySeconds * 1000) {
            problem("runAt", "is more than a year ahead; schedule it nearer")
        }

        // Layer 3: domain (what the farm knows).
        var queue: String?
        if let kind {
            queue = routing.queue(for: kind)
            if queue == nil {
                problem("kind", "unknown kind '\(kind.prefix(128))': this farm runs \(routing.kinds.joined(separator: ", "))")
            }
        }
        if let tier, !tiers.contains(tier) {
            problem("tier", "unknown tier '\(tier)': use one of \(tiers.joined(separator: ", "))")
        }
        let payload = members["payload"] ?? .null
        if let kind, let validator = payloadValidators[kind] {
            problems.append(contentsOf: validator.problems(in: payload, at: at("payload")))
        }

        guard problems.count == before, let kind, let queue else { return nil }
        return EnqueueRequest(
            kind: kind, queue: queue, tier: tier ?? defaultTier, payload: payload,
            delay: delay.map { .milliseconds(Int64(($0 * 1000).rounded(.down))) }, runAt: runAt, maxAttempts: maxAttempts,
            timeout: timeout.map { .milliseconds(max(1, Int64(($0 * 1000).rounded(.down)))) } ?? .seconds(300),
            idempotencyKey: unique?.key, idempotencyWindow: unique?.window, id: id)
    }

    /// A job's `unique` member: `{"key": "…", "windowSeconds": n}` (the window defaults to the farm's).
    func uniqueKey(_ value: JSONValue?, at pointer: String, problems: inout [FieldProblem]) -> (key: String, window: Duration?)? {
        guard let value else { return nil }
        guard case .object(let members) = value else {
            problems.append(FieldProblem(pointer: pointer, "must be an object {\"key\": \"…\", \"windowSeconds\": n}, got \(value.kindDescription)"))
            return nil
        }
        let before = problems.count
        for key in members.keys.sorted() where key != "key" && key != "windowSeconds" {
            problems.append(FieldProblem(pointer: JSONPointer.appending(pointer, key), "unknown member; unique has key and windowSeconds"))
        }
        var key: String?
        switch members["key"] {
        case nil: problems.append(FieldProblem(pointer: JSONPointer.appending(pointer, "key"), "required: the job's unique key, 1–256 bytes"))
        case .string(let text) where !text.isEmpty && text.utf8.count <= 256: key = text
        case .string: problems.append(FieldProblem(pointer: JSONPointer.appending(pointer, "key"), "must be 1–256 bytes"))
        case .some(let other): problems.append(FieldProblem(pointer: JSONPointer.appending(pointer, "key"), "must be a string, got \(other.kindDescription)"))
        }
        let window = number(members["windowSeconds"], "windowSeconds", in: 0.001...Self.maxDelaySeconds) { member, detail in
            problems.append(FieldProblem(pointer: JSONPointer.appending(pointer, member), detail))
        }
        guard problems.count == before, let key else { return nil }
        return (key, window.map { .milliseconds(max(1, Int64(($0 * 1000).rounded(.down)))) })
    }

    /// A number member within `range`, or a problem.
    private func number(
        _ value: JSONValue?, _ member: String, in range: ClosedRange<Double>, _ problem: (String, String) -> Void
    ) -> Double? {
        switch value {
        case nil: return nil
        case .number(let number) where range.contains(number): return number
        case .number(let number): problem(member, "must be \(Self.format(range.lowerBound))…\(Self.format(range.upperBound)), got \(Self.format(number))")
        case .some(let other): problem(member, "must be a number, got \(other.kindDescription)")
        }
        return nil
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }

    /// RFC 3339 with or without fractional seconds.
    static func parseTimestamp(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}

/// Every problem found in one request body (422).
public struct Problems: Error, Sendable, Equatable {
    public var items: [FieldProblem]
    public init(_ items: [FieldProblem]) { self.items = items }
}
