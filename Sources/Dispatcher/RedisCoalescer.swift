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
    /// One caller's requests and the continuation its replies resume, once: by the round trip's replies, by its
    /// deadline (the sweep) or by its task's cancellation, whichever comes first.
    private final class Call: Sendable {
        let requests: [RedisRequest]
        let deadline: ContinuousClock.Instant?
        let limit: Duration
        private let replies: OnceContinuation<[RESPValue]>

        init(_ requests: [RedisRequest], limit: Duration?, continuation: CheckedContinuation<[RESPValue], any Error>) {
            self.requests = requests
            self.limit = limit ?? .zero
            self.deadline = limit.map { ContinuousClock.now + $0 }
            self.replies = OnceContinuation(continuation)
        }

        func resume(_ result: Result<[RESPValue], any Error>) { replies.resume(result) }
    }

    private struct State {
        var waiting: [Call] = []
        /// Indices into `clients` with no round trip in flight.
        var idle: [Int]
        /// The calls of the round trip in flight on each connection.
        var inFlight: [Int: [Call]] = [:]
        /// Whether the deadline sweep runs (it ends when no call with a deadline is left).
        var sweeping = false
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
        return try await pipeline(requests, within: nil)
    }

    /// `pipeline(_:)` that throws `RedisCallTimedOut` when the replies have not come within `limit` (the round trip
    /// goes on; its replies are dropped), or `CancellationError` when the calling task is cancelled first.
    ///
    /// One sweep task per coalescer keeps every caller's deadline, where racing each call against a timer of its
    /// own cost two tasks and a timer per submission.
    public func pipeline(_ requests: [RedisRequest], within limit: Duration?) async throws -> [RESPValue] {
        if requests.isEmpty { return [] }
        let box = Mutex<Call?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let call = Call(requests, limit: limit, continuation: continuation)
                box.withLock { $0 = call }
                let (start, sweep): ((client: Int, batch: [Call])?, Bool) = state.withLock { state in
                    state.waiting.append(call)
                    var sweep = false
                    if call.deadline != nil && !state.sweeping {
                        state.sweeping = true
                        sweep = true
                    }
                    guard let client = state.idle.popLast() else { return (nil, sweep) }
                    let batch = Self.take(&state, upTo: maxRequests)
                    state.inFlight[client] = batch
                    return ((client, batch), sweep)
                }
                if sweep { Task { await self.sweepDeadlines() } }
                if let start { launch(client: start.client, batch: start.batch) }
                if Task.isCancelled { call.resume(.failure(CancellationError())) }
            }
        } onCancel: {
            box.withLock { $0 }?.resume(.failure(CancellationError()))
        }
    }

    /// Closes every connection; later calls fail.
    public func close() {
        for client in clients { client.close() }
    }

    /// The calls of the next round trip: the oldest first, at least one, up to `limit` requests.
    private static func take(_ state: inout State, upTo limit: Int) -> [Call] {
        takeOldest(&state.waiting, upTo: limit) { $0.requests.count }
    }

    private func launch(client index: Int, batch: [Call]) {
        Task { await self.serve(client: index, first: batch) }
    }

    /// Sends batches on one connection until nobody waits, then marks it idle.
    private func serve(client index: Int, first: [Call]) async {
        var batch = first
        while true {
            let requests = batch.count == 1 ? batch[0].requests : batch.flatMap(\.requests)
            counters.withLock { $0.roundTrips += 1; $0.requests += requests.count }
            do {
                let replies = try await clients[index].pipeline(requests)
                var offset = 0
                for call in batch {
                    let count = call.requests.count
                    call.resume(.success(Array(replies[offset..<offset + count])))
                    offset += count
                }
            } catch {
                for call in batch { call.resume(.failure(error)) }
            }
            let next: [Call]? = state.withLock { state in
                if state.waiting.isEmpty {
                    state.idle.append(index)
                    state.inFlight[index] = nil
                    return nil
                }
                let next = Self.take(&state, upTo: maxRequests)
                state.inFlight[index] = next
                return next
            }
            guard let next else { return }
            batch = next
        }
    }

    /// Fails the calls whose deadline has passed (waiting ones are taken out of the queue; those in a round trip
    /// are answered now and their replies dropped later), waking at the earliest deadline left, at least every
    /// 100 ms; ends when no call with a deadline is left.
    private func sweepDeadlines() async {
        var wake = ContinuousClock.now + .milliseconds(100)
        while true {
            try? await Task.sleep(until: wake, clock: .continuous)
            let now = ContinuousClock.now
            let (expired, earliest): ([Call], ContinuousClock.Instant?) = state.withLock { state in
                var expired: [Call] = []
                var earliest: ContinuousClock.Instant?
                func check(_ call: Call) -> Bool {
                    guard let deadline = call.deadline else { return false }
                    if deadline <= now { return true }
                    earliest = earliest.map { min($0, deadline) } ?? deadline
                    return false
                }
                state.waiting.removeAll { call in
                    guard check(call) else { return false }
                    expired.append(call)
                    return true
                }
                for batch in state.inFlight.values {
                    for call in batch where check(call) { expired.append(call) }
                }
                if earliest == nil { state.sweeping = false }
                return (expired, earliest)
            }
            for call in expired { call.resume(.failure(RedisCallTimedOut(limit: call.limit))) }
            guard let earliest else { return }
            wake = min(earliest, ContinuousClock.now + .milliseconds(100))
        }
    }
}
