import Dispatch
import Foundation
import Synchronization

/// A Lua script run by SHA: loaded once per server (`SCRIPT LOAD`), reloaded when the server answers `NOSCRIPT`.
public struct RedisScript: Sendable, Hashable {
    /// A short name for logs.
    public let name: String
    public let source: String
    /// What a client finds the script's SHA by: computed once here, because hashing the source itself (several KiB
    /// of Lua) on every call cost more CPU than the rest of a call.
    let key: Key

    /// The source's length and two 64-bit FNV-1a hashes of it (different offsets): our own few scripts never collide.
    struct Key: Sendable, Hashable {
        let length: Int
        let first: UInt64
        let second: UInt64
    }

    public init(name: String, source: String) {
        self.name = name
        self.source = source
        var first: UInt64 = 0xcbf2_9ce4_8422_2325
        var second: UInt64 = 0x8422_2325_cbf2_9ce4
        for byte in source.utf8 {
            first = (first ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
            second = (second &* 0x0000_0100_0000_01b3) ^ UInt64(byte)
        }
        self.key = Key(length: source.utf8.count, first: first, second: second)
    }
}

/// One request in a pipeline: a plain command or a script call.
public enum RedisRequest: Sendable {
    case command(RedisCommand)
    case script(RedisScript, keys: [String], arguments: [String])
    /// A script call whose arguments are already packed in a `RedisCommand` (no per-argument `String` array).
    case packedScript(RedisScript, keys: [String], arguments: RedisCommand)
}

/// A Redis client over one hiredis connection, usable from async code.
///
/// Every blocking hiredis call runs on this client's own serial dispatch queue, never on Swift's cooperative
/// thread pool. A batch of requests is written at once and read back at once (one round trip). A broken
/// connection is dropped and re-opened on the next call, with a doubling pause between failed attempts.
/// Use one client per concurrent stream of work (fetch, acks, heartbeats): calls on one client are serialised.
///
/// With a `redis+cluster://` configuration the client routes every request to the master of its first key's slot
/// (one connection per master, a pipeline split per node, `MOVED`/`ASK`/`TRYAGAIN` followed; see `ClusterRouter`):
/// callers keep every request of one script or `MULTI` within one hash slot.
public final class RedisClient: @unchecked Sendable {
    // @unchecked: `connection`, `shas`, `failedAttempts`, `nextAttempt`, `lastConnectError` and `closed` are touched
    // on `queue`, or by a caller holding `pending` while it counts zero (nothing on `queue` runs or waits then; the
    // lock orders those accesses with the work `queue` did before).
    public let configuration: RedisConfiguration
    private let queue: DispatchQueue
    /// Calls submitted to `queue` and not finished. At zero, a caller may write its requests itself (`writeNow`).
    private let pending = Mutex(0)
    private var connection: RedisConnection?
    private var shas: [RedisScript.Key: String] = [:]
    private var failedAttempts = 0
    private var nextAttempt = ContinuousClock.now
    private var lastConnectError: RedisError?
    private var closed = false
    /// The router of a cluster client (`redis+cluster://`); nil for one server.
    private let cluster: ClusterRouter?
    /// True for the node clients of a cluster client: `TRYAGAIN` comes back as a reply (the router retries that
    /// request alone) instead of failing the whole pipeline as not ready. Set before the first call.
    var reportsClusterRetries = false

    /// Creates a client; nothing is connected until the first command.
    public init(configuration: RedisConfiguration, name: String = "redis") {
        self.configuration = configuration
        self.queue = DispatchQueue(label: "jobfarm.redis.\(name)")
        self.cluster = configuration.isCluster ? ClusterRouter(configuration: configuration, name: name) : nil
    }

    /// True when this client talks to a Redis Cluster (`redis+cluster://`).
    public var isCluster: Bool { cluster != nil }

    /// The router of a cluster client, for the cluster operations (`moveSlot`).
    var clusterRouter: ClusterRouter? { cluster }

    /// Creates a client from a Redis URL.
    public convenience init(url: String, name: String = "redis") throws {
        self.init(configuration: try RedisConfiguration(url: url), name: name)
    }

    deinit { connection?.close() }

    /// Sends the requests in one pipeline and returns one reply each. Error replies are returned, not thrown;
    /// connection failures are thrown (`RedisError.isConnectionError`).
    /// - Parameter blockingFor: extra time the server may hold the reply (BLPOP's own timeout).
    public func pipeline(_ requests: [RedisRequest], blockingFor: Duration = .zero) async throws -> [RESPValue] {
        if let cluster { return try await cluster.pipeline(requests, blockingFor: blockingFor) }
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[RESPValue], Error>) in
            pending.withLock { pending in
                // With nothing else under way on an open connection, the requests are written here, on the caller's
                // thread: the round trip starts at once and the queue's thread wakes up while Redis works, instead of
                // before the write. Only reading the replies blocks, and that happens on the queue.
                let written = pending == 0 ? writeNow(requests, blockingFor: blockingFor) : nil
                pending += 1
                queue.async {
                    let result = Result { try self.pipelineSync(requests, blockingFor: blockingFor, written: written) }
                    self.pending.withLock { $0 -= 1 }
                    continuation.resume(with: result)
                }
            }
        }
    }

    /// Sends commands in one pipeline; error replies are returned, not thrown.
    public func send(_ commands: [RedisCommand], blockingFor: Duration = .zero) async throws -> [RESPValue] {
        try await pipeline(commands.map(RedisRequest.command), blockingFor: blockingFor)
    }

    /// Runs one command; an error reply is thrown, classified (`RedisError(reply:)`).
    @discardableResult
    public func execute(_ command: RedisCommand, blockingFor: Duration = .zero) async throws -> RESPValue {
        let reply = try await send([command], blockingFor: blockingFor)[0]
        if let message = reply.errorMessage {
            throw RedisError(reply: message, context: command.name, key: command.singleKey)
        }
        return reply
    }

    /// Runs one command given as text arguments; an error reply is thrown.
    @discardableResult
    public func execute(_ arguments: String...) async throws -> RESPValue {
        try await execute(RedisCommand(arguments))
    }

    /// Runs one script by SHA (loading it first if needed); an error reply is thrown
    /// (`RedisError.scriptFailed`, `.wrongType`, …).
    @discardableResult
    public func run(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        let reply = try await pipeline([.script(script, keys: keys, arguments: arguments)])[0]
        if let message = reply.errorMessage { throw RedisError(reply: message, script: script.name) }
        return reply
    }

    /// Loads scripts that this client has not loaded yet (`SCRIPT LOAD`), so that a script that does not compile,
    /// or a user who may not load scripts, is found before the first call.
    public func load(_ scripts: [RedisScript]) async throws {
        if let cluster { return try await cluster.load(scripts) }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            pending.withLock { pending in
                pending += 1
                queue.async {
                    let result = Result {
                        let connection = try self.connected()
                        connection.setTimeout(self.configuration.commandTimeout)
                        let missing = scripts.filter { self.shas[$0.key] == nil }
                        if !missing.isEmpty { try self.load(missing, on: connection) }
                    }
                    self.pending.withLock { $0 -= 1 }
                    continuation.resume(with: result)
                }
            }
        }
    }

    /// The same as `pipeline`, for callers already on a thread of their own (never the cooperative pool).
    public func pipelineBlocking(_ requests: [RedisRequest], blockingFor: Duration = .zero) throws -> [RESPValue] {
        if let cluster {
            // The router is async; this thread may block (never one of the cooperative pool's), so it waits here.
            let outcome = Mutex<Result<[RESPValue], any Error>?>(nil)
            let finished = DispatchSemaphore(value: 0)
            Task {
                do {
                    let replies = try await cluster.pipeline(requests, blockingFor: blockingFor)
                    outcome.withLock { $0 = .success(replies) }
                } catch {
                    outcome.withLock { $0 = .failure(error) }
                }
                finished.signal()
            }
            finished.wait()
            return try outcome.withLock { $0! }.get()
        }
        return try onQueue { try pipelineSync(requests, blockingFor: blockingFor, written: nil) }
    }

    /// Sends `command` to every master of a cluster (in parallel), or to the one server: `SCRIPT LOAD`, `PING`,
    /// `INFO`, `SCAN`, `CONFIG` and the other commands without a key that concern each node. One reply per node,
    /// named `host:port` (the configuration's description for one server).
    public func everyMaster(_ command: RedisCommand) async throws -> [(node: String, reply: RESPValue)] {
        if let cluster { return try await cluster.everyMaster(command) }
        return [("\(configuration)", try await send([command])[0])]
    }

    /// The masters of a cluster (`host:port`, those that own slots); the one server's description otherwise.
    public func masters() async throws -> [String] {
        if let cluster { return try await cluster.masters() }
        return ["\(configuration)"]
    }

    /// Runs several pipelines that may each block (a `BLPOP` first, then requests that run when it returns) and
    /// answers when all have answered. On a cluster each group (whose requests must share one hash slot) runs on a
    /// connection of its own, and the first group to answer ends the others' blocking commands (`CLIENT UNBLOCK`,
    /// as if they timed out), so one wake-up runs every group's requests. On one server the groups go in one pipeline,
    /// in order (a `BLPOP` there can name the keys of every group at once instead).
    public func firstOf(_ groups: [[RedisRequest]], blockingFor: Duration) async throws -> [[RESPValue]] {
        if let cluster { return try await cluster.firstOf(groups, blockingFor: blockingFor) }
        let replies = try await pipeline(groups.flatMap { $0 }, blockingFor: blockingFor)
        var result: [[RESPValue]] = []
        var offset = 0
        for group in groups {
            result.append(Array(replies[offset..<offset + group.count]))
            offset += group.count
        }
        return result
    }

    /// Closes the connection; later calls fail.
    public func close() {
        cluster?.close()
        onQueue {
            closed = true
            connection?.close()
            connection = nil
        }
    }

    /// Runs `body` on `queue` and waits for it (from a thread that may block).
    private func onQueue<T>(_ body: () throws -> T) rethrows -> T {
        pending.withLock { $0 += 1 }
        defer { pending.withLock { $0 -= 1 } }
        return try queue.sync(execute: body)
    }

    /// Writes the requests from the caller's thread when that cannot block: the connection is open, every script is
    /// loaded, and the batch is small (a write of at most 16 KiB to a socket with nothing queued returns at once).
    /// Returns nil when the queue must do the whole call, else how the write went (a failed write closed the
    /// connection: the queue reports it). Called holding `pending` at zero.
    private func writeNow(_ requests: [RedisRequest], blockingFor: Duration) -> Result<Void, any Error>? {
        guard !closed, let connection, connection.isOpen else { return nil }
        var commands: [RedisCommand] = []
        commands.reserveCapacity(requests.count)
        var bytes = 0
        for request in requests {
            switch request {
            case .script(let script, _, _), .packedScript(let script, _, _):
                if shas[script.key] == nil { return nil }
            case .command: break
            }
            let command = command(for: request)
            bytes += command.buffer.count + 16 * command.lengths.count
            if bytes > 16 * 1024 { return nil }
            commands.append(command)
        }
        connection.setTimeout(configuration.commandTimeout + blockingFor)
        return Result { try connection.write(commands) }
    }

    // MARK: - On `queue`

    private func connected() throws -> RedisConnection {
        if let connection, connection.isOpen { return connection }
        if closed { throw RedisError.connectionLost("client was closed") }
        let now = ContinuousClock.now
        if now < nextAttempt {
            // Still backing off after a failed connect: answer at once with the reason of that failure.
            throw lastConnectError ?? RedisError.connectionFailed("\(configuration): still backing off after a failed connect")
        }
        do {
            let fresh = try RedisConnection(configuration: configuration)
            connection = fresh
            failedAttempts = 0
            return fresh
        } catch {
            failedAttempts += 1
            let (initial, maximum) = configuration.reconnectBackoff
            let pause = min(maximum, initial * (1 << min(failedAttempts - 1, 20)))
            nextAttempt = ContinuousClock.now + pause
            lastConnectError = error as? RedisError ?? RedisError.connectionFailed("\(configuration): \(error)")
            throw error
        }
    }

    /// Runs the requests (or, when the caller `written` them already, reads their replies) on `queue`.
    private func pipelineSync(_ requests: [RedisRequest], blockingFor: Duration, written: Result<Void, any Error>?) throws -> [RESPValue] {
        let connection: RedisConnection
        var replies: [RESPValue]
        if let written {
            try written.get()
            guard let open = self.connection else { throw RedisError.connectionLost("connection is closed") }
            connection = open
            replies = try connection.readReplies(requests.count)
        } else {
            connection = try connected()
            connection.setTimeout(configuration.commandTimeout + blockingFor)
            // Resolve SHAs first: scripts this client has not loaded yet are loaded in one extra round trip.
            var missing: [RedisScript] = []
            for request in requests {
                switch request {
                case .script(let script, _, _), .packedScript(let script, _, _):
                    if shas[script.key] == nil && !missing.contains(script) { missing.append(script) }
                case .command: break
                }
            }
            if !missing.isEmpty { try load(missing, on: connection) }
            replies = try connection.send(requests.map(command(for:)))
        }
        // A server still loading its data after a restart refuses every command: report it as not ready, so that
        // callers retry as they do after a reconnect, instead of failing the operation.
        if let message = replies.lazy.compactMap(\.errorMessage).first(where: { RedisError.isNotReadyReply($0) && !(self.reportsClusterRetries && $0.hasPrefix("TRYAGAIN")) }) {
            throw RedisError.notReady(message)
        }
        // An unauthenticated connection runs nothing (connecting checks it, but a server may start asking for a
        // password later): no command ran, and none will until the URL carries the password.
        if let message = replies.lazy.compactMap(\.errorMessage).first(where: { $0.hasPrefix("NOAUTH") }) {
            throw RedisError.authenticationRequired(message)
        }
        // A server that lost its scripts (restart, SCRIPT FLUSH) answers NOSCRIPT: the command did not run.
        for (index, reply) in replies.enumerated() {
            guard let message = reply.errorMessage, message.hasPrefix("NOSCRIPT") else { continue }
            let script: RedisScript
            switch requests[index] {
            case .script(let s, _, _), .packedScript(let s, _, _): script = s
            case .command: continue
            }
            try load([script], on: connection)
            replies[index] = try connection.send([command(for: requests[index])])[0]
        }
        return replies
    }

    private func load(_ scripts: [RedisScript], on connection: RedisConnection) throws {
        let replies = try connection.send(scripts.map { RedisCommand("SCRIPT", "LOAD", $0.source) })
        for (script, reply) in zip(scripts, replies) {
            if let message = reply.errorMessage { throw RedisError(reply: message, script: script.name) }
            guard let sha = reply.string else {
                throw RedisError.unexpectedReply("SCRIPT LOAD of \(script.name) returned no SHA")
            }
            shas[script.key] = sha
        }
    }

    private func command(for request: RedisRequest) -> RedisCommand {
        switch request {
        case .command(let command):
            return command
        case .script(let script, let keys, let arguments):
            var command = RedisCommand("EVALSHA", shas[script.key]!, String(keys.count))
            for key in keys { command.append(key) }
            for argument in arguments { command.append(argument) }
            return command
        case .packedScript(let script, let keys, let arguments):
            var command = RedisCommand("EVALSHA", shas[script.key]!, String(keys.count))
            for key in keys { command.append(key) }
            command.append(contentsOf: arguments)
            return command
        }
    }
}

/// A pub/sub subscription on a connection of its own, read on a thread of its own.
///
/// Used to wake waiters without polling: `onMessage` receives (channel, message) for every published message.
public final class RedisSubscriber: @unchecked Sendable {
    // @unchecked: `connection` is only used on the reader thread; `stopped` is guarded by `lock`.
    private let configuration: RedisConfiguration
    private let patterns: [String]
    private let onMessage: @Sendable (String, [UInt8]) -> Void
    private let onReady: @Sendable () -> Void
    private let lock = NSLock()
    private var stopped = false

    /// - Parameters:
    ///   - patterns: glob patterns for `PSUBSCRIBE`.
    ///   - onReady: called each time the subscription is (re)established, so callers can re-check state they
    ///     may have missed while disconnected.
    public init(
        configuration: RedisConfiguration, patterns: [String],
        onReady: @escaping @Sendable () -> Void = {},
        onMessage: @escaping @Sendable (String, [UInt8]) -> Void
    ) {
        self.configuration = configuration
        self.patterns = patterns
        self.onReady = onReady
        self.onMessage = onMessage
    }

    /// Starts the reader thread; it reconnects until `stop()`.
    public func start() {
        let thread = Thread { [self] in self.loop() }
        thread.start()
    }

    /// Stops reading (within the read timeout of one second).
    public func stop() { lock.withLock { stopped = true } }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func loop() {
        var pause = Duration.milliseconds(50)
        while !isStopped {
            do {
                let connection = try RedisConnection(configuration: configuration)
                var command = RedisCommand("PSUBSCRIBE")
                for pattern in patterns { command.append(pattern) }
                _ = try connection.send([command])
                for _ in 1..<max(patterns.count, 1) { _ = try connection.readReply() }
                pause = .milliseconds(50)
                onReady()
                while !isStopped {
                    // Wait for data with poll() so that an idle subscription never hits hiredis' read timeout.
                    guard let reply = try connection.readReply(waitingUpTo: .milliseconds(250)) else { continue }
                    guard let items = reply.array, items.count == 4, items[0].string == "pmessage",
                        let channel = items[2].string, let body = items[3].bytes
                    else { continue }
                    onMessage(channel, body)
                }
            } catch {
                Thread.sleep(forTimeInterval: Double(pause.components.attoseconds) / 1e18 + Double(pause.components.seconds))
                pause = min(pause * 2, .seconds(1))
            }
        }
    }
}
