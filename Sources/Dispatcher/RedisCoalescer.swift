import RedisClient
import Synchronization

/// Something that sends Redis requests in one pipeline and answers one reply each: a `RedisClient`, or a
/// `RedisCoalescer` that shares round trips between concurrent callers.
public protocol RedisPipelining: Sendable {
    /// Sends `requests` back to back and returns one reply each (error replies returned, not thrown); connection
    /// failures are thrown.
    func pipeline(_ requests: [RedisRequest], blockingFor: Duration) async throws -> [RESPValue]
}

extension RedisClient: RedisPipelining {}

extension RedisPipelining {
    /// Runs one script; an error reply is thrown (`RedisError(reply:script:)`).
    func runScript(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        let reply = try await pipeline([.script(script, keys: keys, arguments: arguments)], blockingFor: .zero)[0]
        if let message = reply.errorMessage { throw RedisError(reply: message, script: script.name) }
        return reply
    }

    /// Runs one command; an error reply is thrown.
    func executeCommand(_ command: RedisCommand) async throws -> RESPValue {
        let reply = try await pipeline([.command(command)], blockingFor: .zero)[0]
        if let message = reply.errorMessage { throw RedisError(reply: message, context: command.name, key: command.singleKey) }
        return reply
    }
}

/// Shares Redis round trips between concurrent callers: the requests that arrive while a connection's round trip is
/// in flight go out together in its next one, one pipeline, each caller's requests back to back and in its order.
///
/// Each caller still gets its own replies (an error reply is one caller's, not the batch's) and each script call
/// stays its own atomic step; only a connection failure fails every caller of that round trip (they are told the
/// connection failed, as they would be alone). With 1,000 single submissions in flight, the dispatcher makes a few
/// dozen round trips instead of 1,000 queued one behind the other on a connection.
///
/// Nothing here waits on a timer: a caller that finds a connection idle sends at once (no added latency at low load).
public final class RedisCoalescer: RedisPipelining {
    private struct Waiter {
        var requests: [RedisRequest]
        var continuation: CheckedContinuation<[RESPValue], any Error>
    }

    private struct State {
        var waiting: [Waiter] = []
        var waitingRequests = 0
        /// Indices into `clients` with no round trip in flight.
        var idle: [Int]
    }

    private let clients: [RedisClient]
    private let maxRequests: Int
    private let state: Mutex<State>
    private let counters = Mutex<(roundTrips: Int, requests: Int)>((0, 0))

    /// - Parameters:
    ///   - clients: the connections; at most one round trip is in flight on each.
    ///   - maxRequests: most requests in one round trip (more wait for the next).
    public init(clients: [RedisClient], maxRequests: Int = 512) {
        precondition(!clients.isEmpty, "a coalescer needs at least one connection")
        self.clients = clients
        self.maxRequests = max(1, maxRequests)
        self.state = Mutex(State(idle: Array(clients.indices)))
    }

    /// Round trips made and requests sent so far (requests per round trip: how much was shared).
    public var statistics: (roundTrips: Int, requests: Int) { counters.withLock { $0 } }

    public func pipeline(_ requests: [RedisRequest], blockingFor: Duration = .zero) async throws -> [RESPValue] {
        precondition(blockingFor == .zero, "a coalesced round trip cannot block: use a RedisClient of its own")
        if requests.isEmpty { return [] }
        return try await withCheckedThrowingContinuation { continuation in
            let start: (client: Int, batch: [Waiter])? = state.withLock { state in
                state.waiting.append(Waiter(requests: requests, continuation: continuation))
                state.waitingRequests += requests.count
                guard let client = state.idle.popLast() else { return nil }
                return (client, Self.take(&state, upTo: maxRequests))
            }
            if let start { launch(client: start.client, batch: start.batch) }
        }
    }

    /// Closes every connection; later calls fail.
    public func close() {
        for client in clients { client.close() }
    }

    /// The waiters of the next round trip: the oldest first, at least one, up to `limit` requests.
    private static func take(_ state: inout State, upTo limit: Int) -> [Waiter] {
        var count = 0
        var taken = 0
        for waiter in state.waiting {
            if taken > 0 && count + waiter.requests.count > limit { break }
            count += waiter.requests.count
            taken += 1
        }
        let batch = Array(state.waiting.prefix(taken))
        state.waiting.removeFirst(taken)
        state.waitingRequests -= count
        return batch
    }

    private func launch(client index: Int, batch: [Waiter]) {
        Task { await self.serve(client: index, first: batch) }
    }

    /// Sends batches on one connection until nobody waits, then marks it idle.
    private func serve(client index: Int, first: [Waiter]) async {
        var batch = first
        while true {
            let requests = batch.flatMap(\.requests)
            counters.withLock { $0.roundTrips += 1; $0.requests += requests.count }
            do {
                let replies = try await clients[index].pipeline(requests)
                var offset = 0
                for waiter in batch {
                    let count = waiter.requests.count
                    waiter.continuation.resume(returning: Array(replies[offset..<offset + count]))
                    offset += count
                }
            } catch {
                for waiter in batch { waiter.continuation.resume(throwing: error) }
            }
            let next: [Waiter]? = state.withLock { state in
                if state.waiting.isEmpty {
                    state.idle.append(index)
                    return nil
                }
                return Self.take(&state, upTo: maxRequests)
            }
            guard let next else { return }
            batch = next
        }
    }
}
