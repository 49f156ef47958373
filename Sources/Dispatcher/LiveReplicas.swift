import Foundation
import JobQueue
import Logging
import RedisClient
import Synchronization

/// The dispatcher replicas alive now, as this replica last saw them: each replica writes its name and the time into
/// `<ns>:dispatchers` (ZSET replica → ms since 1970) every `interval`, drops names not written for `horizon`, and
/// counts the rest, in one MULTI. While Redis is away the last count stays: the per-replica rate limiter divides
/// each shared limit by it (docs/PROTOCOL.md, "Dispatcher keys").
public final class LiveReplicas: Sendable {
    public let replica: String
    public let key: String
    public let interval: Duration
    public let horizon: Duration
    private let seen = Mutex(1)

    public init(replica: String, namespace: String, interval: Duration = .seconds(5), horizon: Duration = .seconds(20)) {
        self.replica = replica
        self.key = Self.key(namespace: namespace)
        self.interval = interval
        self.horizon = horizon
    }

    /// `<ns>:dispatchers`.
    public static func key(namespace: String) -> String { "\(namespace):dispatchers" }

    /// The replicas seen at the last beat that reached Redis, this one included (1 before any).
    public var count: Int { max(1, seen.withLock { $0 }) }

    /// Writes this replica's presence and reads how many are live; keeps the last count when Redis does not answer.
    @discardableResult
    public func beat(client: RedisClient) async throws -> Int {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let replies = try await client.send([
            RedisCommand("MULTI"),
            RedisCommand("ZADD", key, String(now), replica),
            RedisCommand("ZREMRANGEBYSCORE", key, "-inf", String(now - horizon.milliseconds)),
            RedisCommand("ZCARD", key),
            RedisCommand("PEXPIRE", key, String(horizon.milliseconds * 2)),
            RedisCommand("EXEC"),
        ])
        guard let results = replies.last?.array, results.count == 4, let live = results[2].int else {
            throw RedisError.unexpectedReply("the presence transaction answered \(replies.last.map { "\($0)" } ?? "nothing")")
        }
        seen.withLock { $0 = max(1, live) }
        return live
    }

    /// Beats every `interval` until cancelled, then removes this replica (best effort).
    func run(client: RedisClient, logger: Logger) async {
        while !Task.isCancelled {
            do {
                try await beat(client: client)
            } catch {
                logger.debug("cannot record this replica as live; keeping the last count", metadata: ["error": "\(error)", "replicas": "\(count)"])
            }
            try? await Task.sleep(for: interval)
        }
        _ = try? await client.execute(RedisCommand("ZREM", key, replica))
    }
}
