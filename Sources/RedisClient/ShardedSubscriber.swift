import Foundation

/// A sharded pub/sub subscription (`SSUBSCRIBE`, Redis 7.0) to one channel of a Redis Cluster, on a connection of its
/// own to the master that owns the channel's slot, read on a thread of its own.
///
/// A sharded message is delivered only by the nodes of the shard that owns the channel's slot, so the subscription
/// must follow that slot: the owner is found by asking any node (a node that does not own the slot answers `MOVED`
/// with the owner), and the subscription starts again from a seed when the owner unsubscribes it (Redis does so when
/// the slot moves to another master), when the connection fails (a master killed: the seeds then point at the
/// promoted replica), or when the owner stops answering the keep-alive `PING` (a host cut off the network).
public final class ShardedSubscriber: @unchecked Sendable {
    // @unchecked: the connection is only used on the reader thread; `stopped` and `owner` are guarded by `lock`.
    private let configuration: RedisConfiguration
    private let channel: String
    private let onMessage: @Sendable (String, [UInt8]) -> Void
    private let onReady: @Sendable () -> Void
    private let keepAlive: Duration
    private let lock = NSLock()
    private var stopped = false
    private var owner: String?

    /// - Parameters:
    ///   - configuration: the cluster's configuration (`redis+cluster://`, its seeds).
    ///   - channel: the channel to `SSUBSCRIBE` to; its slot is the slot of its hash tag, as for a key.
    ///   - keepAlive: idle time after which the subscriber sends `PING`; no answer within the same time ends the
    ///     connection and the subscription starts again from a seed.
    ///   - onReady: called each time the subscription is (re)established, so callers can re-read what they may
    ///     have missed meanwhile.
    public init(
        configuration: RedisConfiguration, channel: String, keepAlive: Duration = .seconds(2),
        onReady: @escaping @Sendable () -> Void = {},
        onMessage: @escaping @Sendable (String, [UInt8]) -> Void
    ) {
        self.configuration = configuration
        self.channel = channel
        self.keepAlive = keepAlive
        self.onReady = onReady
        self.onMessage = onMessage
    }

    /// The master (`host:port`) the subscription is live on, nil while it is being (re)established.
    public var node: String? { lock.withLock { owner } }

    /// Starts the reader thread; it resubscribes until `stop()`.
    public func start() {
        let thread = Thread { [self] in self.loop() }
        thread.start()
    }

    /// Stops reading (within a quarter of a second).
    public func stop() { lock.withLock { stopped = true } }

    private var isStopped: Bool { lock.withLock { stopped } }

    /// The seeds, each as a node of its own.
    private var seeds: [RedisConfiguration] {
        configuration.clusterSeeds.map { seed in
            var node = configuration
            node.clusterSeeds = []
            node.database = 0
            node.endpoint = seed
            return node
        }
    }

    /// Subscribes on the node that owns the channel's slot, asking the seeds in turn and following `MOVED` (the
    /// owner's address) from the first that answers.
    private func subscribe() throws -> (RedisConnection, String) {
        var lastError: Error = RedisError.connectionFailed("no node of the cluster answered SSUBSCRIBE \(channel): check the seeds of the redis+cluster:// URL")
        for start in seeds {
            var node = start
            for _ in 0..<5 {
                do {
                    let connection = try RedisConnection(configuration: node)
                    let reply = try connection.send([RedisCommand("SSUBSCRIBE", channel)])[0]
                    if let message = reply.errorMessage {
                        connection.close()
                        let parts = message.split(separator: " ")
                        if (parts.first == "MOVED" || parts.first == "ASK"), parts.count == 3 {
                            node = configuration.clusterNode(String(parts[2]))
                            continue
                        }
                        throw RedisError(reply: message, context: "SSUBSCRIBE \(channel)")
                    }
                    return (connection, Self.address(node.endpoint))
                } catch {
                    lastError = error
                    break
                }
            }
        }
        throw lastError
    }

    private static func address(_ endpoint: RedisConfiguration.Endpoint) -> String {
        switch endpoint {
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return path
        }
    }

    private func loop() {
        var pause = 0.05
        while !isStopped {
            do {
                let (connection, node) = try subscribe()
                defer { connection.close() }
                lock.withLock { owner = node }
                pause = 0.05
                onReady()
                var quiet = ContinuousClock.now
                var pinged = false
                reading: while !isStopped {
                    guard let reply = try connection.readReply(waitingUpTo: .milliseconds(250)) else {
                        let idle = ContinuousClock.now - quiet
                        if pinged, idle > keepAlive * 2 { break reading }  // the owner stopped answering
                        if !pinged, idle > keepAlive {
                            try connection.write([RedisCommand("PING")])
                            pinged = true
                        }
                        continue
                    }
                    quiet = ContinuousClock.now
                    pinged = false
                    guard let items = reply.array, let kind = items.first?.string else { continue }
                    switch kind {
                    case "smessage":
                        if items.count == 3, let name = items[1].string, let body = items[2].bytes { onMessage(name, body) }
                    case "sunsubscribe":
                        break reading  // the slot moved: subscribe again where it is now
                    default:
                        continue  // the keep-alive's pong
                    }
                }
                // The owner may have changed: start again from the seeds, not from the node that dropped us.
                lock.withLock { owner = nil }
            } catch {
                lock.withLock { owner = nil }
                Thread.sleep(forTimeInterval: pause)
                pause = min(pause * 2, 1)
            }
        }
    }
}
