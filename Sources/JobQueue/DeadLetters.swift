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
    /// Only letters that died at or before this time (ms since 1970).
    public var until: Int64?
    /// Only letters whose error contains this text.
    public var errorContains: String?
    public var ids: Set<String>?

    public init(reason: String? = nil, kind: String? = nil, since: Int64? = nil, until: Int64? = nil,
                errorContains: String? = nil, ids: Set<String>? = nil) {
        self.reason = reason
        self.kind = kind
        self.since = since
        self.until = until
        self.errorContains = errorContains
        self.ids = ids
    }

    public func matches(_ letter: DeadLetter) -> Bool {
        if let reason, letter.reason != reason { return false }
        if let kind, letter.kind != kind { return false }
        if let since, letter.deadAt < since { return false }
        if let until, letter.deadAt > until { return false }
        if let errorContains, !letter.error.contains(errorContains) { return false }
        if let ids, !ids.contains(letter.id) { return false }
        return true
    }
}

/// Where a page of dead letters ends: the time the last letter read died (the score in `jf:{q}:dead`) and its id.
/// As text (`<deadAt>.<id>`) it is the HTTP API's opaque `cursor`.
public struct DeadLetterCursor: Sendable, Equatable {
    public var deadAt: Int64
    public var id: String

    public init(deadAt: Int64, id: String) {
        self.deadAt = deadAt
        self.id = id
    }

    /// `<deadAt>.<id>`.
    public var text: String { "\(deadAt).\(id)" }

    /// Reads `<deadAt>.<id>`; `nil` when `text` is not one.
    public init?(text: String) {
        guard let dot = text.firstIndex(of: "."), let deadAt = Int64(text[..<dot]), deadAt >= 0 else { return nil }
        let id = String(text[text.index(after: dot)...])
        guard !id.isEmpty, id.utf8.count <= 200 else { return nil }
        self.init(deadAt: deadAt, id: id)
    }
}

/// One page of dead letters and where the next one starts (`nil`: this was the last).
public struct DeadLetterPage: Sendable {
    public var letters: [DeadLetter]
    public var next: DeadLetterCursor?
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
        var result: [DeadLetter] = []
        var cursor: DeadLetterCursor?
        repeat {
            let page = try await deadLetterPage(queue: queue, filter: filter, after: cursor, limit: limit - result.count)
            result += page.letters
            cursor = page.next
        } while cursor != nil && result.count < limit
        return result
    }

    /// One page of a queue's dead letters, newest first, filtered: up to `limit` letters after `cursor` (`nil`: from
    /// the newest), reading at most `scanLimit` letters of the queue so that a filter matching few of many letters
    /// still answers soon. `next` is where the following page starts; `nil` when no letter is left to read. A page
    /// may hold fewer than `limit` letters (even none) and still have a `next`. Letters that die while an operator
    /// pages are newer than the cursor and not shown; a letter requeued or purged meanwhile is skipped.
    public func deadLetterPage(
        queue: String, filter: DeadLetterFilter = DeadLetterFilter(), after cursor: DeadLetterCursor? = nil,
        limit: Int = 100, scanLimit: Int = 10_000
    ) async throws -> DeadLetterPage {
        let keys = keys(queue)
        var top = filter.until ?? Int64.max
        if let cursor { top = min(top, cursor.deadAt) }
        let bottom = filter.since.map(String.init) ?? "-inf"
        var letters: [DeadLetter] = []
        var last = cursor
        var offset = 0
        var scanned = 0
        let chunk = 500
        while letters.count < limit, scanned < scanLimit {
            let reply = try await retrying(for: .seconds(10), what: "dlq list") {
                try await client.execute(RedisCommand("ZREVRANGEBYSCORE", keys.dead, top == Int64.max ? "+inf" : String(top), bottom,
                                                      "WITHSCORES", "LIMIT", String(offset), String(chunk)))
            }.array ?? []
            var entries: [(id: String, deadAt: Int64)] = []
            for pair in stride(from: 0, to: reply.count - 1, by: 2) {
                guard let id = reply[pair].string, let score = reply[pair + 1].string.flatMap(Double.init) else { continue }
                entries.append((id, Int64(score)))
            }
            offset += entries.count
            // Letters of the cursor's own millisecond come in descending id order: those at or above its id were shown.
            if let cursor { entries.removeAll { $0.deadAt == cursor.deadAt && $0.id >= cursor.id } }
            if reply.count < chunk * 2 && entries.isEmpty { return DeadLetterPage(letters: letters, next: nil) }
            let loaded = Dictionary(try await load(ids: entries.map(\.id), queue: queue).map { ($0.id, $0) }) { first, _ in first }
            for entry in entries {
                scanned += 1
                last = DeadLetterCursor(deadAt: entry.deadAt, id: entry.id)
                if let letter = loaded[entry.id], filter.matches(letter) {
                    letters.append(letter)
                    if letters.count >= limit { break }
                }
                if scanned >= scanLimit { break }
            }
            if reply.count < chunk * 2, entries.last.map({ last == DeadLetterCursor(deadAt: $0.deadAt, id: $0.id) }) ?? true {
                // The whole range is read: no next page.
                return DeadLetterPage(letters: letters, next: nil)
            }
        }
        return DeadLetterPage(letters: letters, next: last)
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
