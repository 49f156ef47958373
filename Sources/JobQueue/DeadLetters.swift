import Foundation
import JobProtocol
import RedisClient

/// One dead letter: the job as it was, why it died, and every attempt.
public struct DeadLetter: Sendable, Equatable {
    public var id: String
    public var queue: String
    public var reason: String
    public var error: String
    /// ms since 1970.
    public var deadAt: Int64
    public var attempts: Int
    public var kind: String?
    public var history: [AttemptRecord]
    /// The envelope (or, for garbage, the raw queue entry) byte for byte.
    public var envelope: String

    /// A JSON view for `jobfarm dlq show` and the HTTP API.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(id), "queue": .string(queue), "reason": .string(reason), "error": .string(error),
            "dead_at": .number(Double(deadAt)), "attempts": .number(Double(attempts)),
            "history": (try? JSONValue(encoding: history)) ?? .array([]),
        ]
        if let kind { object["kind"] = .string(kind) }
        object["envelope"] = (try? JSONValue(parsing: envelope)) ?? .string(envelope)
        return .object(object)
    }
}

/// Which dead letters an operation applies to; every condition given must hold.
public struct DeadLetterFilter: Sendable {
    public var reason: String?
    public var kind: String?
    /// Only letters that died at or after this time (ms since 1970).
    public var since: Int64?
    /// Only letters whose error contains this text.
    public var errorContains: String?
    public var ids: Set<String>?

    public init(reason: String? = nil, kind: String? = nil, since: Int64? = nil, errorContains: String? = nil, ids: Set<String>? = nil) {
        self.reason = reason
        self.kind = kind
        self.since = since
        self.errorContains = errorContains
        self.ids = ids
    }

    public func matches(_ letter: DeadLetter) -> Bool {
        if let reason, letter.reason != reason { return false }
        if let kind, letter.kind != kind { return false }
        if let since, letter.deadAt < since { return false }
        if let errorContains, !letter.error.contains(errorContains) { return false }
        if let ids, !ids.contains(letter.id) { return false }
        return true
    }
}

/// What a requeue did to each letter.
public struct RequeueReport: Sendable {
    public var requeued: [String] = []
    /// Letters without a runnable envelope (garbage): requeue them with an edited envelope, or purge them.
    public var malformed: [String] = []
    public var missing: [String] = []
}

extension JobFarm {
    /// Dead letters of a queue, newest first, filtered; `limit` caps the number returned.
    public func deadLetters(queue: String, filter: DeadLetterFilter = DeadLetterFilter(), limit: Int = 100) async throws -> [DeadLetter] {
        let keys = keys(queue)
        var result: [DeadLetter] = []
        var offset = 0
        let page = 500
        while result.count < limit {
            let ids = try await retrying(for: .seconds(10), what: "dlq list") {
                try await client.execute(RedisCommand("ZREVRANGE", keys.dead, String(offset), String(offset + page - 1)))
            }.array?.compactMap(\.string) ?? []
            if ids.isEmpty { break }
            offset += ids.count
            let letters = try await load(ids: ids, queue: queue)
            for letter in letters where filter.matches(letter) {
                result.append(letter)
                if result.count >= limit { break }
            }
        }
        return result
    }

    /// One dead letter by id, or `nil`.
    public func deadLetter(id: String, queue: String) async throws -> DeadLetter? {
        try await load(ids: [id], queue: queue).first
    }

    private func load(ids: [String], queue: String) async throws -> [DeadLetter] {
        let keys = keys(queue)
        var entries = RedisCommand("HMGET", keys.deadEntries)
        var envelopes = RedisCommand("HMGET", keys.deadEnvelopes)
        for id in ids {
            entries.append(id)
            envelopes.append(id)
        }
        let replies = try await retrying(for: .seconds(10), what: "dlq read") {
            try await client.send([entries, envelopes])
        }
        let metas = replies[0].array ?? []
        let bodies = replies[1].array ?? []
        var letters: [DeadLetter] = []
        for (index, id) in ids.enumerated() where index < metas.count {
            guard let text = metas[index].string,
                let meta = try? JSONDecoder().decode(DeadLetterMeta.self, from: Data(text.utf8))
            else { continue }
            letters.append(DeadLetter(
                id: id, queue: queue, reason: meta.reason, error: meta.error ?? "", deadAt: meta.dead_at,
                attempts: meta.attempts ?? 0, kind: meta.kind, history: meta.history ?? [],
                envelope: index < bodies.count ? bodies[index].string ?? "" : ""))
        }
        return letters
    }

    /// Moves dead letters back to their queue (attempts reset, history kept). With `dryRun` nothing changes and
    /// the report lists what would be requeued. `ratePerSecond` spaces requeues out so a flood of retried work
    /// does not swamp the workers. `tier` overrides each job's tier.
    public func requeueDeadLetters(
        queue: String, filter: DeadLetterFilter, limit: Int = .max, tier: String? = nil,
        dryRun: Bool = false, ratePerSecond: Double? = nil
    ) async throws -> RequeueReport {
        if let tier, !configuration.tiers.contains(tier) {
            throw JobFarmError.invalidArgument("tier '\(tier)' is not one of \(configuration.tiers.joined(separator: ", "))")
        }
        let letters = try await deadLetters(queue: queue, filter: filter, limit: limit)
        var report = RequeueReport()
        if dryRun {
            for letter in letters {
                if (try? JobEnvelope(decoding: letter.envelope)) != nil { report.requeued.append(letter.id) } else { report.malformed.append(letter.id) }
            }
            return report
        }
        let clock = ContinuousClock()
        let start = clock.now
        for (index, letter) in letters.enumerated() {
            if let ratePerSecond, ratePerSecond > 0 {
                let due = start + .milliseconds(Int64(Double(index) / ratePerSecond * 1000))
                if due > clock.now { try await Task.sleep(until: due, clock: clock) }
            }
            switch try await requeue(id: letter.id, queue: queue, tier: tier) {
            case .requeued: report.requeued.append(letter.id)
            case .malformed: report.malformed.append(letter.id)
            case .notFound, .conflict: report.missing.append(letter.id)
            }
        }
        return report
    }

    /// The outcome of requeueing one letter.
    public enum RequeueOutcome: Sendable {
        case requeued, malformed, notFound
        /// A live job now uses the id (the dead job's record expired and the id was reused).
        case conflict
    }

    /// Requeues one dead letter, optionally with an edited envelope (same id; checked before it is stored).
    public func requeue(id: String, queue: String, editedEnvelope: String? = nil, tier: String? = nil) async throws -> RequeueOutcome {
        if let editedEnvelope {
            let envelope: JobEnvelope
            do { envelope = try JobEnvelope(decoding: editedEnvelope) } catch {
                throw JobFarmError.invalidArgument("the edited envelope is not valid: \(error)")
            }
            guard envelope.id == id else {
                throw JobFarmError.invalidArgument("the edited envelope's id \(envelope.id) must stay \(id)")
            }
        }
        let reply = try await run(Scripts.requeue, queue: queue, arguments: [id, editedEnvelope ?? "", tier ?? ""])
        switch reply.string {
        case "requeued": return .requeued
        case "malformed": return .malformed
        case "conflict": return .conflict
        default: return .notFound
        }
    }

    /// Deletes dead letters for good; returns how many were removed. With `dryRun`, only counts them.
    public func purgeDeadLetters(queue: String, filter: DeadLetterFilter, limit: Int = .max, dryRun: Bool = false) async throws -> Int {
        let letters = try await deadLetters(queue: queue, filter: filter, limit: limit)
        if dryRun || letters.isEmpty { return letters.count }
        var removed = 0
        for start in stride(from: 0, to: letters.count, by: 500) {
            let ids = letters[start..<min(start + 500, letters.count)].map(\.id)
            removed += try await run(Scripts.purge, queue: queue, arguments: ids).int ?? 0
        }
        return removed
    }
}

private struct DeadLetterMeta: Decodable {
    var reason: String
    var error: String?
    var dead_at: Int64
    var attempts: Int?
    var kind: String?
    var history: [AttemptRecord]?
}
