import JobProtocol
import RedisClient

/// One lifetime counter of the scripts by tier and kind (`jf:{<queue>}:outcomes`).
public struct OutcomeCount: Sendable, Equatable {
    public var queue: String
    /// `enqueued` (jobs created, counted by the enqueue scripts), `succeeded`, `retried` or `dead_lettered`.
    public var outcome: String
    public var tier: String
    /// The job's kind (`unknown` for a job leased before the scripts kept it, or a raw entry that was no job).
    public var kind: String
    public var count: Int

    public init(queue: String, outcome: String, tier: String, kind: String, count: Int) {
        self.queue = queue
        self.outcome = outcome
        self.tier = tier
        self.kind = kind
        self.count = count
    }
}

extension JobFarm {
    /// The scripts' counters by tier and kind of the given queues, one `HGETALL` each, pipelined.
    public func outcomeCounts(queues: [String]) async throws -> [OutcomeCount] {
        if queues.isEmpty { return [] }
        let replies = try await retrying(for: .seconds(10), what: "outcome counts") {
            try await client.send(queues.map { RedisCommand("HGETALL", keys($0).outcomes) })
        }
        var result: [OutcomeCount] = []
        for (queue, reply) in zip(queues, replies) {
            // A key of the wrong type (the scripts skip it too) counts nothing.
            let items = reply.array ?? []
            for pair in stride(from: 0, to: items.count - 1, by: 2) {
                guard let field = items[pair].string, let count = items[pair + 1].int else { continue }
                let parts = field.split(separator: " ", maxSplits: 2)
                guard parts.count == 3 else { continue }
                result.append(OutcomeCount(queue: queue, outcome: String(parts[0]), tier: String(parts[1]), kind: String(parts[2]), count: count))
            }
        }
        return result.sorted { ($0.queue, $0.outcome, $0.tier, $0.kind) < ($1.queue, $1.outcome, $1.tier, $1.kind) }
    }
}
