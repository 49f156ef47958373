import JobProtocol
import RedisClient

/// One pause in force: a whole queue (`tier == nil`) or one tier of it.
public struct QueuePause: Sendable, Equatable {
    public var queue: String
    /// The tier paused; nil when the whole queue is.
    public var tier: String?
    /// When it was paused (ms since 1970, the pausing client's clock).
    public var since: Int64

    public init(queue: String, tier: String?, since: Int64) {
        self.queue = queue
        self.tier = tier
        self.since = since
    }
}

/// Pausing and resuming: workers stop leasing from a paused queue or tier at their next fetch (the `fetch` script
/// reads the queue's `paused` hash, docs/PROTOCOL.md §5), while enqueues are accepted as usual.
extension JobFarm {
    /// The field of `paused` that stands for the whole queue.
    static let wholeQueue = "*"

    /// Pauses a queue (`tier` nil) or one tier of it: no worker leases from it from its next fetch on; jobs already
    /// leased run to their end. Pausing what is already paused keeps the first time.
    public func pause(queue: String, tier: String? = nil) async throws {
        try checkPauseNames(queue: queue, tier: tier)
        let key = keys(queue).paused
        // The queue joins the registry too, so that a queue paused before its first job is listed (`pauses()`).
        let registry = QueueKeys.registry(namespace: configuration.namespace)
        let replies = try await retrying(for: .seconds(10), what: "pause") {
            try await client.send([
                RedisCommand("HSETNX", key, tier ?? Self.wholeQueue, String(WallClock.nowMilliseconds())), RedisCommand("SADD", registry, queue),
            ])
        }
        if let message = replies[0].errorMessage { throw try await pauseError(message, key: key, operation: "pause") }
    }

    /// Resumes a queue (`tier` nil: the whole-queue pause only; tiers paused one by one stay paused) or one tier,
    /// and wakes the idle workers of the queue at once. Returns false when it was not paused.
    @discardableResult
    public func resume(queue: String, tier: String? = nil) async throws -> Bool {
        try checkPauseNames(queue: queue, tier: tier)
        let k = keys(queue)
        var commands = [RedisCommand("MULTI"), RedisCommand("HDEL", k.paused, tier ?? Self.wholeQueue)]
        // Wake-up tokens for every tier (and the tier-less list): a worker that consumed a token while the queue was
        // paused blocks again, so the jobs waiting now need a token of their own.
        for name in configuration.tiers + (tier.map { configuration.tiers.contains($0) ? [] : [$0] } ?? []) {
            commands.append(RedisCommand("LPUSH", k.signal(tier: name), "1"))
            commands.append(RedisCommand("LTRIM", k.signal(tier: name), "0", "0"))
        }
        commands.append(RedisCommand("LPUSH", k.signal, "1"))
        commands.append(RedisCommand("LTRIM", k.signal, "0", "0"))
        commands.append(RedisCommand("EXEC"))
        let replies = try await retrying(for: .seconds(10), what: "resume") { try await client.send(commands) }
        // EXEC's reply holds each command's answer; a wake-up list of the wrong type fails alone (the job still waits in line).
        guard let results = replies.last?.array, let removed = results.first else {
            let message = replies.compactMap(\.errorMessage).first ?? "unexpected reply \(replies.last.map { "\($0)" } ?? "")"
            throw try await pauseError(message, key: k.paused, operation: "resume")
        }
        if let message = removed.errorMessage { throw try await pauseError(message, key: k.paused, operation: "resume") }
        return (removed.int ?? 0) > 0
    }

    /// What is paused in each queue (all known queues when `nil`).
    public func pauses(queues names: [String]? = nil) async throws -> [QueuePause] {
        let queues: [String]
        if let names { queues = names } else { queues = try await self.queues() }
        if queues.isEmpty { return [] }
        let replies = try await retrying(for: .seconds(10), what: "pauses") {
            try await client.send(queues.map { RedisCommand("HGETALL", keys($0).paused) })
        }
        var result: [QueuePause] = []
        for (queue, reply) in zip(queues, replies) {
            if let message = reply.errorMessage { throw try await pauseError(message, key: keys(queue).paused, operation: "pauses") }
            let items = reply.array ?? []
            for pair in stride(from: 0, to: items.count - 1, by: 2) {
                guard let field = items[pair].string else { continue }
                let since = items[pair + 1].string.flatMap { Int64($0) } ?? 0
                result.append(QueuePause(queue: queue, tier: field == Self.wholeQueue ? nil : field, since: since))
            }
        }
        return result.sorted { ($0.queue, $0.tier ?? "") < ($1.queue, $1.tier ?? "") }
    }

    private func checkPauseNames(queue: String, tier: String?) throws {
        guard QueueKeys.isValidName(queue) else {
            throw JobFarmError.invalidArgument("'\(queue)' is not a valid queue name (1-64 characters of A-Z a-z 0-9 _ - .)")
        }
        if let tier, !QueueKeys.isValidName(tier) {
            throw JobFarmError.invalidArgument("'\(tier)' is not a valid tier name (1-64 characters of A-Z a-z 0-9 _ - .)")
        }
    }

    /// The error for a failed command on a `paused` hash: `wrongType` when a foreign client left another type there.
    private func pauseError(_ message: String, key: String, operation: String) async throws -> JobFarmError {
        if let found = try await client.execute(RedisCommand("TYPE", key)).string, found != "hash", found != "none" {
            return .wrongType(key: key, operation: operation,
                              message: "\(key) is a \(found), expected a hash: look at it (redis-cli TYPE / DUMP), then DEL or RENAME it")
        }
        return JobFarmError(RedisError(reply: message, context: "\(operation) \(key)"), operation: operation)
    }
}
