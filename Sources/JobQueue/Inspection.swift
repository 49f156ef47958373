import Foundation
import JobProtocol
import RedisClient

/// One attempt of a job, as recorded when it failed or lost its lease.
public struct AttemptRecord: Sendable, Codable, Equatable {
    public var attempt: Int?
    /// ms since 1970.
    public var at: Int64?
    public var error: String?
    /// `retry`, `lease_lost`, `cancelled` or a dead-letter reason.
    public var outcome: String?
    public var worker: String?
}

/// Everything known about one job.
public struct JobStatus: Sendable, Equatable {
    public var id: String
    public var queue: String
    public var kind: String?
    public var tier: String?
    public var state: JobState
    public var attempts: Int
    public var maxAttempts: Int?
    public var leaseLosses: Int
    /// ms since 1970.
    public var enqueuedAt: Int64?
    public var startedAt: Int64?
    public var finishedAt: Int64?
    public var runAt: Int64?
    /// 0…1 as reported by the handler.
    public var progress: Double?
    public var result: JSONValue?
    public var error: String?
    /// The dead-letter reason when `state == .dead`.
    public var reason: String?
    public var worker: String?
    public var history: [AttemptRecord]
    public var cancelRequested: Bool
    /// The envelope's `trace` (propagation fields; the dispatcher records the submitting tenant there as `tenant`).
    public var trace: [String: String] = [:]

    /// A JSON view for `jobfarm status --json` and the HTTP API.
    public var json: JSONValue {
        var object: [String: JSONValue] = ["id": .string(id), "queue": .string(queue), "state": .string(state.rawValue),
                                           "attempts": .number(Double(attempts)), "lease_losses": .number(Double(leaseLosses))]
        if let kind { object["kind"] = .string(kind) }
        if let tier { object["tier"] = .string(tier) }
        if let maxAttempts { object["max_attempts"] = .number(Double(maxAttempts)) }
        if let enqueuedAt { object["enqueued_at"] = .number(Double(enqueuedAt)) }
        if let startedAt { object["started_at"] = .number(Double(startedAt)) }
        if let finishedAt { object["finished_at"] = .number(Double(finishedAt)) }
        if let runAt { object["run_at"] = .number(Double(runAt)) }
        if let progress { object["progress"] = .number(progress) }
        if let result { object["result"] = result }
        if let error { object["error"] = .string(error) }
        if let reason { object["reason"] = .string(reason) }
        if let worker { object["worker"] = .string(worker) }
        if cancelRequested { object["cancel_requested"] = .bool(true) }
        if !history.isEmpty { object["history"] = (try? JSONValue(encoding: history)) ?? .null }
        return .object(object)
    }
}

/// Depth and age of one tier.
public struct TierStats: Sendable, Equatable {
    public var name: String
    public var depth: Int
    /// How long the oldest queued job has waited; `nil` when the tier is empty.
    public var oldestAge: Duration?
}

/// The numbers of one queue, read in one round trip: what an operator and an autoscaler look at.
public struct QueueStats: Sendable, Equatable {
    public var queue: String
    public var tiers: [TierStats]
    public var inflight: Int
    public var scheduled: Int
    public var dead: Int
    /// Lifetime counters: enqueued, succeeded, retried, dead, cancelled, reaped, requeued, malformed.
    public var counters: [String: Int]
    /// Of the `scheduled` jobs, those waiting for a retry (state `retrying`); the rest are delayed jobs.
    public var retrying: Int = 0
    /// Of the `scheduled` jobs, those due now (the scheduler moves them to their line within a maintenance interval).
    public var dueNow: Int = 0
    /// False when `retrying` is an estimate (more scheduled jobs than the stats script reads one by one).
    public var retryingIsExact: Bool = true

    /// Of the `scheduled` jobs, those delayed (enqueued with a delay or a run-at time), not retrying.
    public var delayed: Int { max(0, scheduled - retrying) }

    /// Jobs waiting to run now (all tiers).
    public var depth: Int { tiers.reduce(0) { $0 + $1.depth } }
    /// The longest wait across tiers.
    public var oldestAge: Duration? { tiers.compactMap(\.oldestAge).max() }
}

extension JobFarm {
    /// The status of a job. Without `queue`, every known queue is searched in one round trip.
    /// Returns `nil` when no such job exists (never enqueued, or expired after the retention period).
    public func status(id: String, queue: String? = nil) async throws -> JobStatus? {
        guard JobID.isValid(id) else { throw JobFarmError.invalidArgument("'\(id)' is not a valid job id") }
        let candidates: [String]
        if let queue { candidates = [queue] } else { candidates = try await queues() }
        if candidates.isEmpty { return nil }
        let client = self.client
        // Per queue, the job hash and the `pending` field (a job not leased yet has no hash), in one round trip.
        let replies = try await retrying(for: .seconds(10), what: "status") {
            try await client.send(candidates.flatMap { [RedisCommand("HGETALL", keys($0).job(id)), RedisCommand("HGET", keys($0).pending, id)] })
        }
        for (index, queue) in candidates.enumerated() {
            let (hash, pending) = (replies[2 * index], replies[2 * index + 1])
            if let items = hash.array, !items.isEmpty {
                var fields: [String: String] = [:]
                for pair in stride(from: 0, to: items.count - 1, by: 2) {
                    if let key = items[pair].string, let value = items[pair + 1].string { fields[key] = value }
                }
                return Self.makeStatus(id: id, queue: queue, fields: fields)
            }
            if let entry = pending.string {
                return Self.makeStatus(id: id, queue: queue, fields: Self.pendingFields(entry))
            }
        }
        return nil
    }

    /// The job-hash fields a pending job would have (docs/PROTOCOL.md §3a): its entry is `<qt> <tier> <envelope>`.
    /// An entry that is not of that form reads as `queued` with what can be read (`fetch` dead-letters it).
    static func pendingFields(_ entry: String) -> [String: String] {
        let parts = entry.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return ["state": "queued"] }
        return ["state": "queued", "qt": String(parts[0]), "tier": String(parts[1]), "env": String(parts[2])]
    }

    static func makeStatus(id: String, queue: String, fields: [String: String]) -> JobStatus {
        let envelope = fields["env"].flatMap { try? JobEnvelope(decoding: $0) }
        let history = (fields["history"] ?? "").split(separator: "\n").compactMap {
            try? JSONDecoder().decode(AttemptRecord.self, from: Data($0.utf8))
        }
        let state = JobState(rawValue: fields["state"] ?? "") ?? .queued
        return JobStatus(
            id: id, queue: queue, kind: envelope?.kind, tier: fields["tier"],
            state: state,
            attempts: Int(fields["attempts"] ?? "") ?? 0, maxAttempts: envelope?.maxAttempts,
            leaseLosses: Int(fields["lost"] ?? "") ?? 0,
            enqueuedAt: envelope?.enqueuedAt, startedAt: fields["started"].flatMap { Int64($0) },
            finishedAt: fields["finished"].flatMap { Int64($0) }, runAt: fields["run_at"].flatMap { Int64($0) },
            progress: state == .succeeded ? 1 : fields["progress"].flatMap { Double($0) },
            result: fields["result"].flatMap { try? JSONValue(parsing: $0) },
            error: fields["error"], reason: fields["reason"], worker: fields["worker"], history: history,
            cancelRequested: fields["cancel"] != nil, trace: envelope?.trace ?? [:])
    }

    /// Statistics of the given queues (all known queues when `nil`), one script call each, pipelined.
    public func stats(queues names: [String]? = nil) async throws -> [QueueStats] {
        let queues: [String]
        if let names { queues = names } else { queues = try await self.queues() }
        if queues.isEmpty { return [] }
        let tiers = configuration.tiers
        let client = self.client
        let replies = try await retrying(for: .seconds(10), what: "stats") {
            try await client.pipeline(queues.map { queue in
                .script(Scripts.stats, keys: [keys(queue).prefix], arguments: [queue, String(tiers.count)] + tiers)
            })
        }
        return try zip(queues, replies).map { queue, reply in
            guard let items = reply.array, items.count >= 6, let now = items[0].int else {
                if let message = reply.errorMessage { throw JobFarmError(reply: message, script: Scripts.stats.name) }
                throw JobFarmError.redisFailed(operation: "stats of \(queue)", cause: .unexpectedReply("\(reply)"))
            }
            let tierStats = zip(tiers, items[1].array ?? []).map { name, pair -> TierStats in
                let values = pair.array ?? []
                let depth = values.first?.int ?? 0
                let oldest = values.count > 1 ? values[1].int ?? -1 : -1
                return TierStats(name: name, depth: depth, oldestAge: oldest >= 0 ? .milliseconds(max(0, now - oldest)) : nil)
            }
            var counters: [String: Int] = [:]
            let flat = items[5].array ?? []
            for pair in stride(from: 0, to: flat.count - 1, by: 2) {
                if let key = flat[pair].string, let value = flat[pair + 1].int { counters[key] = value }
            }
            var stats = QueueStats(queue: queue, tiers: tierStats, inflight: items[2].int ?? 0, scheduled: items[3].int ?? 0,
                                   dead: items[4].int ?? 0, counters: counters)
            if items.count > 6, let split = items[6].array, split.count >= 3 {
                stats.retrying = split[0].int ?? 0
                stats.dueNow = split[1].int ?? 0
                stats.retryingIsExact = (split[2].int ?? 0) >= stats.scheduled
            }
            return stats
        }
    }
}

/// One live worker process, from the registry its lease keeper refreshes.
public struct WorkerInfo: Sendable, Equatable {
    public var id: String
    /// ms since 1970 of its last heartbeat.
    public var lastSeen: Int64
    public var fields: [String: String]
    /// When it went (ms since 1970): its clean stop, or its last heartbeat when it stopped heartbeating; nil while live.
    public var goneAt: Int64?

    public init(id: String, lastSeen: Int64, fields: [String: String], goneAt: Int64? = nil) {
        self.id = id
        self.lastSeen = lastSeen
        self.fields = fields
        self.goneAt = goneAt
    }

    /// The queues it serves; nil for every queue (started without `--queues`: `*`, or an entry without the field,
    /// counted as possibly serving any queue).
    public var servedQueues: Set<String>? {
        guard let queues = fields["queues"], queues != "*" else { return nil }
        return Set(queues.split(separator: ",").map(String.init))
    }

    /// Whether it serves `queue`.
    public func serves(queue: String) -> Bool { servedQueues?.contains(queue) ?? true }
}

extension JobFarm {
    /// Worker processes seen within `window` (older entries are pruned from the registry on the way).
    public func workers(seenWithin window: Duration = .seconds(60)) async throws -> [WorkerInfo] {
        try await workers(seenWithin: window, what: "workers")
    }

    func workers(seenWithin window: Duration, what: String) async throws -> [WorkerInfo] {
        let ns = configuration.namespace
        let cutoff = WallClock.nowMilliseconds() - window.milliseconds
        let client = self.client
        let replies = try await retrying(for: .seconds(10), what: what) {
            try await client.send([
                RedisCommand("ZRANGEBYSCORE", QueueKeys.workers(namespace: ns), "-inf", String(cutoff), "WITHSCORES"),
                RedisCommand("ZREMRANGEBYSCORE", QueueKeys.workers(namespace: ns), "-inf", String(cutoff)),
                RedisCommand("ZRANGE", QueueKeys.workers(namespace: ns), "0", "-1", "WITHSCORES"),
            ])
        }
        // Those pruned stopped heartbeating: they join the gone workers, with their last heartbeat as when.
        try await noteGone(replies[0].array ?? [], on: client, what: what)
        let reply = replies[2]
        let items = reply.array ?? []
        var result: [WorkerInfo] = []
        for pair in stride(from: 0, to: items.count - 1, by: 2) {
            guard let id = items[pair].string, let seen = items[pair + 1].string.flatMap({ Double($0) }) else { continue }
            let hash = try await retrying(for: .seconds(10), what: what) {
                try await client.execute(RedisCommand("HGETALL", QueueKeys.worker(namespace: ns, id: id)))
            }.array ?? []
            var fields: [String: String] = [:]
            for index in stride(from: 0, to: hash.count - 1, by: 2) {
                if let key = hash[index].string, let value = hash[index + 1].string { fields[key] = value }
            }
            result.append(WorkerInfo(id: id, lastSeen: Int64(seen), fields: fields))
        }
        return result
    }
}
