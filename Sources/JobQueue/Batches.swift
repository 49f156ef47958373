import Foundation
import JobProtocol
import RedisClient

/// A job a batch enqueues once: when every job of the batch is final (`onComplete`), or when every job succeeded
/// (`onSuccess`). Its id is `<batch>.complete` or `<batch>.success`; its payload is the one given here.
public struct BatchCallback: Sendable, Equatable {
    public var kind: String
    public var queue: String
    /// `nil` uses the configuration's default tier.
    public var tier: String?
    public var payload: JSONValue
    public var maxAttempts: Int
    public var timeout: Duration

    public init(kind: String, queue: String = "default", tier: String? = nil, payload: JSONValue = .null,
                maxAttempts: Int = 5, timeout: Duration = .seconds(300)) {
        self.kind = kind
        self.queue = queue
        self.tier = tier
        self.payload = payload
        self.maxAttempts = maxAttempts
        self.timeout = timeout
    }

    /// The spec as the batch record keeps it (`on_complete`, `on_success`).
    var json: JSONValue {
        var fields: [String: JSONValue] = ["kind": .string(kind), "queue": .string(queue), "payload": payload,
                                           "max_attempts": .number(Double(maxAttempts)),
                                           "timeout_ms": .number(Double(timeout.milliseconds))]
        if let tier { fields["tier"] = .string(tier) }
        return .object(fields)
    }

    init?(json text: String) {
        guard !text.isEmpty, let value = try? JSONValue(parsing: text), let kind = value["kind"]?.stringValue else { return nil }
        self.init(kind: kind, queue: value["queue"]?.stringValue ?? "default", tier: value["tier"]?.stringValue,
                  payload: value["payload"] ?? .null, maxAttempts: Int(value["max_attempts"]?.doubleValue ?? 5),
                  timeout: .milliseconds(Int64(value["timeout_ms"]?.doubleValue ?? 300_000)))
    }

    func request(id: String) -> EnqueueRequest {
        EnqueueRequest(kind: kind, queue: queue, tier: tier, payload: payload, maxAttempts: maxAttempts, timeout: timeout, id: id)
    }
}

/// A batch's counts (one queue's part, or their sum). `pending` holds jobs queued, delayed or waiting for a retry.
public struct BatchCounts: Sendable, Equatable {
    public var total = 0
    public var pending = 0
    public var running = 0
    public var succeeded = 0
    public var dead = 0
    public var cancelled = 0

    public init() {}

    /// Every job counted is final (succeeded, dead or cancelled).
    public var isFinal: Bool { pending + running == 0 }
    /// Jobs that ended, whichever way.
    public var ended: Int { succeeded + dead + cancelled }

    static func + (a: BatchCounts, b: BatchCounts) -> BatchCounts {
        var sum = a
        sum.total += b.total
        sum.pending += b.pending
        sum.running += b.running
        sum.succeeded += b.succeeded
        sum.dead += b.dead
        sum.cancelled += b.cancelled
        return sum
    }
}

/// A batch as `batchStatus` read it: the record, each queue's part and their sum, read as one consistent snapshot.
public struct BatchStatus: Sendable {
    public var id: String
    /// When it was created (server ms).
    public var created: Int64?
    /// Sealed: no more jobs are added, and the callbacks may fire.
    public var sealed: Bool
    /// Each queue's part.
    public var parts: [String: BatchCounts]
    /// The parts summed.
    public var counts: BatchCounts
    /// When the completion callback was enqueued (server ms), if it was.
    public var completeFiredAt: Int64?
    /// When the success callback was enqueued (server ms), if it was.
    public var successFiredAt: Int64?
    public var onComplete: BatchCallback?
    public var onSuccess: BatchCallback?
    /// False when the parts kept changing while they were read (the counts are then each read's own, not one instant's).
    public var consistent: Bool

    /// Sealed and every job final.
    public var isComplete: Bool { sealed && counts.isFinal }
}

/// What `createBatch` did.
public struct BatchCreated: Sendable {
    public var id: String
    /// False: a batch of this id existed already (nothing was created; the jobs were still added if it was open).
    public var created: Bool
    /// The jobs enqueued with it, in request order.
    public var jobs: [EnqueueResult]
}

/// What one run of the batch checker did.
public struct BatchCheck: Sendable, Equatable {
    /// This call enqueued the completion callback (or found it due with no callback to enqueue) and set its marker.
    public var firedComplete = false
    /// The same for the success callback.
    public var firedSuccess = false

    public init(firedComplete: Bool = false, firedSuccess: Bool = false) {
        self.firedComplete = firedComplete
        self.firedSuccess = firedSuccess
    }
}

extension JobFarm {
    func batchPrefix(_ id: String) -> String { "\(configuration.namespace):{batch:\(id)}:" }

    /// A batch id is 1–100 characters of A–Z a–z 0–9 - _ . : (its callbacks' ids add a suffix to it).
    public static func isValidBatchID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 100 && id.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95 || c == 46 || c == 58
        }
    }

    /// Creates a batch (docs/PROTOCOL.md §17): its record with the callbacks, then its jobs (any kinds, any queues),
    /// then, with `seal`, seals it so the callbacks may fire. With `seal: false`, add jobs with `enqueue(_:batch:)` and
    /// call `sealBatch` last. An id in use creates nothing new (`created` false).
    public func createBatch(
        id: String? = nil, jobs: [EnqueueRequest] = [], onComplete: BatchCallback? = nil, onSuccess: BatchCallback? = nil,
        seal: Bool = true
    ) async throws -> BatchCreated {
        let id = id ?? JobID.make()
        guard Self.isValidBatchID(id) else {
            throw JobFarmError.invalidArgument("batch id '\(id.prefix(120))' must be 1–100 characters of A–Z a–z 0–9 - _ . :")
        }
        let reply = try await retrying(for: .seconds(10), what: "batch create") {
            try await client.run(Scripts.batchCreate, keys: [batchPrefix(id)],
                                 arguments: [id, onComplete?.json.jsonText ?? "", onSuccess?.json.jsonText ?? ""])
        }
        if let message = reply.errorMessage { throw JobFarmError(reply: message, script: Scripts.batchCreate.name) }
        let created = reply.array?.first?.string == "created"
        var results: [EnqueueResult] = []
        if !jobs.isEmpty { results = try await enqueue(jobs, batch: id) }
        if seal { try await sealBatch(id) }
        return BatchCreated(id: id, created: created, jobs: results)
    }

    /// Adds jobs to an open (not yet sealed) batch: each queue is recorded in the batch first, then the jobs are
    /// enqueued with the batch's link, which the enqueue script counts in the queue's part.
    @discardableResult
    public func enqueue(_ requests: [EnqueueRequest], batch id: String, chunkSize: Int = 1000) async throws -> [EnqueueResult] {
        let prefix = batchPrefix(id)
        let record = try await client.send([RedisCommand("HMGET", prefix + "batch", "created", "sealed")])[0].array ?? []
        guard record.first?.string != nil else {
            throw JobFarmError.notFound("no batch \(id): create it first (createBatch with seal: false)")
        }
        if record.count > 1, record[1].string == "1" {
            throw JobFarmError.refused("batch \(id) is sealed: no job can be added to it; create another batch")
        }
        var queues: [String] = []
        for request in requests where !queues.contains(request.queue) { queues.append(request.queue) }
        if !queues.isEmpty {
            _ = try await client.send([RedisCommand(["SADD", prefix + "queues"] + queues),
                                       RedisCommand("PEXPIRE", prefix + "queues", String(Self.batchKeep.milliseconds))])
        }
        let linked = requests.map { request in
            var request = request
            request.links = JobLinks(batch: id)
            return request
        }
        return try await enqueueReporting(linked, chunkSize: chunkSize)
    }

    /// Seals a batch: no more jobs, and the checker runs once now (a batch whose jobs all ended already fires here).
    /// A check is also queued in one of its queues, so a checker that fails now is repeated by a worker's maintenance.
    @discardableResult
    public func sealBatch(_ id: String) async throws -> BatchCheck {
        let prefix = batchPrefix(id)
        let replies = try await client.send([RedisCommand("HSET", prefix + "batch", "sealed", "1"),
                                             RedisCommand("SMEMBERS", prefix + "queues")])
        if let first = replies[1].array?.first?.string {
            _ = try await client.send([RedisCommand("ZADD", keys(first).prefix + "batch-checks", "0", id)])
        }
        return try await checkBatch(id)
    }

    /// Reads a batch: its record and markers, then every part twice; when every part's `version` is the same in both
    /// reads, nothing changed between them and the counts are one instant's (`consistent`). Tries a few times.
    /// Returns nil for an unknown (or expired) batch.
    public func batchStatus(_ id: String) async throws -> BatchStatus? {
        let prefix = batchPrefix(id)
        let head = try await client.send([
            RedisCommand("HMGET", prefix + "batch", "created", "sealed", "on_complete", "on_success"),
            RedisCommand("SMEMBERS", prefix + "queues"),
            RedisCommand("GET", prefix + "fired:complete"),
            RedisCommand("GET", prefix + "fired:success"),
        ])
        let record = head[0].array ?? []
        guard let created = record.first?.string else { return nil }
        let queues = (head[1].array ?? []).compactMap(\.string).sorted()
        let fields = ["total", "pending", "running", "succeeded", "dead", "cancelled", "version"]
        func readParts() async throws -> [(BatchCounts, String)] {
            if queues.isEmpty { return [] }
            let replies = try await client.send(queues.map { RedisCommand(["HMGET", keys($0).prefix + "batch:" + id] + fields) })
            return replies.map { reply in
                let v = (reply.array ?? []).map { $0.string.flatMap { Int($0) } ?? 0 }
                var counts = BatchCounts()
                if v.count == 7 {
                    (counts.total, counts.pending, counts.running) = (v[0], v[1], v[2])
                    (counts.succeeded, counts.dead, counts.cancelled) = (v[3], v[4], v[5])
                }
                return (counts, v.count == 7 ? String(v[6]) : "")
            }
        }
        var first = try await readParts()
        var consistent = false
        for _ in 0..<5 {
            let second = try await readParts()
            if first.map(\.1) == second.map(\.1) {
                consistent = true
                break
            }
            first = second
        }
        var parts: [String: BatchCounts] = [:]
        var sum = BatchCounts()
        for (queue, (counts, _)) in zip(queues, first) {
            parts[queue] = counts
            sum = sum + counts
        }
        return BatchStatus(
            id: id, created: Int64(created), sealed: record.count > 1 && record[1].string == "1", parts: parts, counts: sum,
            completeFiredAt: head[2].string.flatMap { Int64($0) }, successFiredAt: head[3].string.flatMap { Int64($0) },
            onComplete: record.count > 2 ? record[2].string.flatMap { BatchCallback(json: $0) } : nil,
            onSuccess: record.count > 3 ? record[3].string.flatMap { BatchCallback(json: $0) } : nil,
            consistent: consistent)
    }

    /// The batch checker: with the batch sealed and a consistent snapshot in which every job is final, enqueues the
    /// completion callback (id `<batch>.complete`) unless its marker exists, then sets the marker (`SET … NX`); the
    /// same for the success callback when no job is dead or cancelled. Two checkers at once enqueue one job (the id
    /// exists once) and one of them sets the marker; a checker that dies between the two is repaired by the next.
    @discardableResult
    public func checkBatch(_ id: String) async throws -> BatchCheck {
        var check = BatchCheck()
        guard let status = try await batchStatus(id), status.sealed, status.consistent, status.counts.isFinal else { return check }
        let prefix = batchPrefix(id)
        let now = String(WallClock.nowMilliseconds())
        let keep = String(Self.batchKeep.milliseconds)
        if status.completeFiredAt == nil {
            if let callback = status.onComplete { _ = try await enqueueReporting([callback.request(id: "\(id).complete")]) }
            let set = try await client.send([RedisCommand("SET", prefix + "fired:complete", now, "NX", "PX", keep)])[0]
            check.firedComplete = set.string == "OK"
        }
        if status.successFiredAt == nil, status.counts.dead + status.counts.cancelled == 0 {
            if let callback = status.onSuccess { _ = try await enqueueReporting([callback.request(id: "\(id).success")]) }
            let set = try await client.send([RedisCommand("SET", prefix + "fired:success", now, "NX", "PX", keep)])[0]
            check.firedSuccess = set.string == "OK"
        }
        return check
    }

    /// Runs the checker for the batch checks a queue's parts queued (`batch-checks`), then removes each check unless
    /// a later change queued it again. Called by a worker right after a report that queued one, and by the
    /// maintenance loop. Returns the number of checks looked at.
    @discardableResult
    public func checkBatches(queue: String, limit: Int = 100) async throws -> Int {
        let checks = keys(queue).prefix + "batch-checks"
        let items = try await client.send([RedisCommand("ZRANGE", checks, "0", String(limit - 1), "WITHSCORES")])[0].array ?? []
        var index = 0
        while index + 1 < items.count {
            guard let batch = items[index].string, let score = items[index + 1].string else { break }
            index += 2
            try await checkBatch(batch)
            let reply = try await client.run(Scripts.batchCheckDone, keys: [keys(queue).prefix], arguments: [queue, batch, score])
            if let message = reply.errorMessage { throw JobFarmError(reply: message, script: Scripts.batchCheckDone.name) }
        }
        return items.count / 2
    }

    /// How long a batch's keys are kept after their last change (the scripts' `BATCH_KEEP`).
    static let batchKeep: Duration = .seconds(7 * 86_400)
}
