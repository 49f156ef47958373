import Crypto
import Foundation
import Hummingbird
import JobProtocol
import JobQueue

/// The operators' dead-letter routes (`/v1/admin/…`; `AccessMiddleware` refuses them without an operator key). The
/// same queue-engine calls as `jobfarm dlq`: `JobFarm.deadLetterPage`, `deadLetter`, `requeueDeadLetters`,
/// `purgeDeadLetters`.
extension Dispatcher {
    static let deadLetterOperations: [(method: String, path: String)] = [
        ("GET", "/v1/admin/dead-letters"), ("GET", "/v1/admin/dead-letters/{id}"),
        ("POST", "/v1/admin/dead-letters:requeue"), ("POST", "/v1/admin/dead-letters:purge"),
    ]

    /// Longest time an operator call may take (a list reads up to 10,000 letters; a requeue moves up to 10,000).
    static let deadLetterCallLimit: Duration = .seconds(20)

    func addDeadLetterRoutes(to router: Router<BasicRequestContext>) {
        router.get("/v1/admin/dead-letters") { request, _ in try await listDeadLetters(request) }
        router.get("/v1/admin/dead-letters/{id}") { request, context in
            try await showDeadLetter(id: context.parameters.get("id") ?? "", request: request)
        }
        router.post("/v1/admin/dead-letters:requeue") { request, _ in try await requeueDeadLetters(request) }
        router.post("/v1/admin/dead-letters:purge") { request, _ in try await purgeDeadLetters(request) }
    }

    // MARK: - Handlers

    func listDeadLetters(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        var problems: [FieldProblem] = []
        let queue = Self.queueParameter(query.get("queue"), &problems)
        var filter = DeadLetterFilter()
        filter.reason = Self.reasonParameter(query.get("reason"), &problems) { FieldProblem(parameter: "reason", $0) }
        filter.kind = query.get("kind").flatMap { $0.isEmpty ? nil : $0 }
        filter.errorContains = query.get("error").flatMap { $0.isEmpty ? nil : $0 }
        filter.since = Self.timeParameter(query.get("since"), "since", &problems)
        filter.until = Self.timeParameter(query.get("until"), "until", &problems)
        var limit = 50
        if let text = query.get("limit") {
            if let value = Int(text), (1...500).contains(value) { limit = value } else {
                problems.append(FieldProblem(parameter: "limit", "must be a whole number 1…500, got '\(text.prefix(32))'"))
            }
        }
        var cursor: DeadLetterCursor?
        if let text = query.get("cursor") {
            cursor = DeadLetterCursor(text: text)
            if cursor == nil {
                problems.append(FieldProblem(parameter: "cursor", "is not a cursor this route gave: pass `nextCursor` of the previous page as it was"))
            }
        }
        if !problems.isEmpty { throw Problem(.badRequest, detail: "a query parameter is not valid", errors: problems) }
        let farm = self.farm
        let page = try await operatorCall { [filter, cursor, limit] in
            try await farm.deadLetterPage(queue: queue, filter: filter, after: cursor, limit: limit)
        }
        var object: [String: JSONValue] = [
            "queue": .string(queue), "deadLetters": .array(page.letters.map { Self.deadLetterJSON($0, full: false) }),
        ]
        if let next = page.next { object["nextCursor"] = .string(next.text) }
        return Self.json(.ok, .object(object))
    }

    func showDeadLetter(id: String, request: Request) async throws -> Response {
        var problems: [FieldProblem] = []
        let queue = Self.queueParameter(request.uri.queryParameters.get("queue"), &problems)
        if !problems.isEmpty { throw Problem(.badRequest, detail: "a query parameter is not valid", errors: problems) }
        let farm = self.farm
        guard (1...200).contains(id.utf8.count),
              let letter = try await operatorCall({ try await farm.deadLetter(id: id, queue: queue) })
        else {
            throw Problem(.notFound, detail: "no dead letter '\(id.prefix(200))' in queue '\(queue)': list them with GET /v1/admin/dead-letters?queue=\(queue)")
        }
        return Self.json(.ok, Self.deadLetterJSON(letter, full: true))
    }

    /// Dry run unless the body says `"dryRun": false`: the answer lists what would be requeued.
    func requeueDeadLetters(_ request: Request) async throws -> Response {
        let body = try await readJSON(request)
        let selection = try DeadLetterSelection(body, action: .requeue, tiers: farm.configuration.tiers)
        let farm = self.farm
        let report = try await operatorCall {
            try await farm.requeueDeadLetters(queue: selection.queue, filter: selection.filter, limit: selection.limit,
                                              tier: selection.tier, dryRun: selection.dryRun)
        }
        return Self.json(.ok, .object([
            "queue": .string(selection.queue), "dryRun": .bool(selection.dryRun),
            "requeued": .array(report.requeued.map(JSONValue.string)),
            "malformed": .array(report.malformed.map(JSONValue.string)),
            "missing": .array(report.missing.map(JSONValue.string)),
        ]))
    }

    /// Without `confirm`: a dry run, answering the matching ids and the `confirm` token for exactly them. With it:
    /// deletes those letters, or answers 409 when the letters matching have changed since the dry run.
    func purgeDeadLetters(_ request: Request) async throws -> Response {
        let body = try await readJSON(request)
        let selection = try DeadLetterSelection(body, action: .purge, tiers: farm.configuration.tiers)
        let farm = self.farm
        let letters = try await operatorCall {
            try await farm.deadLetters(queue: selection.queue, filter: selection.filter, limit: selection.limit)
        }
        let ids = letters.map(\.id)
        let token = Self.purgeToken(queue: selection.queue, ids: ids)
        guard let confirm = selection.confirm else {
            return Self.json(.ok, .object([
                "queue": .string(selection.queue), "dryRun": .bool(true), "count": .number(Double(ids.count)),
                "ids": .array(ids.map(JSONValue.string)), "confirm": .string(token),
            ]))
        }
        guard confirm == token else {
            throw Problem(.conflict, detail: "the dead letters matching this selection changed since the dry run (or `confirm` is not its token): run the dry run again and confirm what it answers")
        }
        let exact = DeadLetterFilter(ids: Set(ids))
        let removed = try await operatorCall { try await farm.purgeDeadLetters(queue: selection.queue, filter: exact) }
        return Self.json(.ok, .object([
            "queue": .string(selection.queue), "dryRun": .bool(false), "count": .number(Double(removed)),
            "ids": .array(ids.map(JSONValue.string)),
        ]))
    }

    // MARK: - Parts

    /// A Redis call of an operator route: 503 at once while the circuit is open, else bounded by `deadLetterCallLimit`.
    func operatorCall<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        guard breaker.mayAllowCall else { throw redisUnavailable() }
        do {
            return try await withDeadline(Self.deadLetterCallLimit, body)
        } catch is RedisCallTimedOut {
            throw redisUnavailable()
        }
    }

    /// The `confirm` token of a purge: SHA-256 (hex) of the queue and the ids it would delete, in order.
    static func purgeToken(queue: String, ids: [String]) -> String {
        SHA256.hash(data: Array(([queue] + ids).joined(separator: "\n").utf8)).lowercaseHex
    }

    static func queueParameter(_ text: String?, _ problems: inout [FieldProblem]) -> String {
        guard let queue = text else { return "default" }
        guard QueueKeys.isValidName(queue) else {
            problems.append(FieldProblem(parameter: "queue", "must be a queue name (1–64 of A–Z a–z 0–9 _ - .), got '\(queue.prefix(64))'"))
            return "default"
        }
        return queue
    }

    static func reasonParameter(_ text: String?, _ problems: inout [FieldProblem], _ problem: (String) -> FieldProblem) -> String? {
        guard let text else { return nil }
        guard DeadLetterReason(rawValue: text) != nil else {
            problems.append(problem("must be one of \(DeadLetterReason.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text.prefix(32))'"))
            return nil
        }
        return text
    }

    static func timeParameter(_ text: String?, _ name: String, _ problems: inout [FieldProblem]) -> Int64? {
        guard let text else { return nil }
        guard let milliseconds = parseTime(text) else {
            problems.append(FieldProblem(parameter: name, "must be an RFC 3339 time such as 2026-12-01T04:00:00Z, got '\(text.prefix(40))'"))
            return nil
        }
        return milliseconds
    }

    /// An RFC 3339 time (with or without fractional seconds), as ms since 1970.
    static func parseTime(_ text: String) -> Int64? {
        guard text.utf8.count <= 40 else { return nil }
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds]] {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = options
            if let date = formatter.date(from: text.uppercased()) {
                let milliseconds = date.timeIntervalSince1970 * 1000
                guard milliseconds.isFinite, milliseconds >= 0, milliseconds < 1e15 else { return nil }
                return Int64(milliseconds)
            }
        }
        return nil
    }

    /// A dead letter as the API shows it (camelCase, RFC 3339 times); `full` adds the attempts and the envelope.
    static func deadLetterJSON(_ letter: DeadLetter, full: Bool) -> JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(letter.id), "queue": .string(letter.queue), "reason": .string(letter.reason),
            "error": .string(letter.error), "deadAt": .string(rfc3339(letter.deadAt)),
            "attempts": .number(Double(max(0, letter.attempts))),
        ]
        if let kind = letter.kind { object["kind"] = .string(kind) }
        if full {
            object["history"] = .array(letter.history.map { attempt in
                var item: [String: JSONValue] = [:]
                if let number = attempt.attempt { item["attempt"] = .number(Double(number)) }
                if let at = attempt.at { item["at"] = .string(rfc3339(at)) }
                if let error = attempt.error { item["error"] = .string(error) }
                if let outcome = attempt.outcome { item["outcome"] = .string(outcome) }
                if let worker = attempt.worker { item["worker"] = .string(worker) }
                return .object(item)
            })
            // The envelope as JSON when it is JSON; garbage pushed onto a queue stays text.
            object["envelope"] = (try? JSONValue(parsing: letter.envelope)) ?? .string(letter.envelope)
        }
        return .object(object)
    }
}

/// The body of a requeue or a purge: which letters (the queue, ids and filters, or `all`), how many at most, and
/// for a requeue the dry-run switch and a tier, for a purge the `confirm` token. Every problem is reported at once.
struct DeadLetterSelection {
    enum Action { case requeue, purge }

    var queue = "default"
    var filter = DeadLetterFilter()
    var limit = 1_000
    var dryRun = true
    var tier: String?
    var confirm: String?

    init(_ body: JSONValue, action: Action, tiers: [String]) throws {
        guard case .object(let members) = body else {
            throw Dispatcher.invalid(Problems([FieldProblem(pointer: "", "must be a JSON object")]))
        }
        var problems: [FieldProblem] = []
        func string(_ name: String, maxLength: Int = 256) -> String? {
            guard let value = members[name] else { return nil }
            guard case .string(let text) = value, (1...maxLength).contains(text.utf8.count) else {
                problems.append(FieldProblem(pointer: "/\(name)", "must be a string of 1…\(maxLength) bytes"))
                return nil
            }
            return text
        }
        var known: Set<String> = ["queue", "ids", "reason", "kind", "error", "since", "until", "all", "limit"]
        known.formUnion(action == .requeue ? ["dryRun", "tier"] : ["confirm"])
        for name in members.keys.sorted() where !known.contains(name) {
            problems.append(FieldProblem(pointer: JSONPointer.appending("", name), "is not a member: use \(known.sorted().joined(separator: ", "))"))
        }
        if let queue = string("queue", maxLength: 64) {
            if QueueKeys.isValidName(queue) { self.queue = queue } else {
                problems.append(FieldProblem(pointer: "/queue", "must be a queue name (1–64 of A–Z a–z 0–9 _ - .)"))
            }
        }
        if let value = members["ids"] {
            if case .array(let items) = value, (1...1_000).contains(items.count),
               items.allSatisfy({ ($0.stringValue?.utf8.count).map { (1...200).contains($0) } ?? false }) {
                filter.ids = Set(items.compactMap(\.stringValue))
            } else {
                problems.append(FieldProblem(pointer: "/ids", "must be an array of 1…1,000 dead-letter ids (strings)"))
            }
        }
        filter.reason = Dispatcher.reasonParameter(string("reason", maxLength: 32), &problems) { FieldProblem(pointer: "/reason", $0) }
        filter.kind = string("kind", maxLength: 128)
        filter.errorContains = string("error")
        for name in ["since", "until"] {
            guard let text = string(name, maxLength: 40) else { continue }
            guard let milliseconds = Dispatcher.parseTime(text) else {
                problems.append(FieldProblem(pointer: "/\(name)", "must be an RFC 3339 time such as 2026-12-01T04:00:00Z"))
                continue
            }
            if name == "since" { filter.since = milliseconds } else { filter.until = milliseconds }
        }
        var all = false
        if let value = members["all"] {
            if case .bool(let flag) = value { all = flag } else { problems.append(FieldProblem(pointer: "/all", "must be true or false")) }
        }
        if let value = members["limit"] {
            if let number = value.doubleValue, number == number.rounded(), (1...10_000).contains(number) { limit = Int(number) } else {
                problems.append(FieldProblem(pointer: "/limit", "must be a whole number 1…10,000"))
            }
        }
        if let value = members["dryRun"] {
            if case .bool(let flag) = value { dryRun = flag } else { problems.append(FieldProblem(pointer: "/dryRun", "must be true or false")) }
        }
        if let tier = string("tier", maxLength: 64) {
            if tiers.contains(tier) { self.tier = tier } else {
                problems.append(FieldProblem(pointer: "/tier", "must be one of \(tiers.joined(separator: ", "))"))
            }
        }
        confirm = string("confirm", maxLength: 128)
        let filtered = filter.ids != nil || members["reason"] != nil || members["kind"] != nil || members["error"] != nil
            || members["since"] != nil || members["until"] != nil
        if !filtered, !all {
            problems.append(FieldProblem(pointer: "", "name the letters: ids, a filter (reason, kind, error, since, until), or \"all\": true"))
        }
        if !problems.isEmpty { throw Problem(.unprocessableContent, detail: "the request has \(problems.count) problem\(problems.count == 1 ? "" : "s"); nothing was changed", errors: problems) }
    }
}
