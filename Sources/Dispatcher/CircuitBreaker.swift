import JobQueue
import Synchronization

/// The state of the dispatcher's circuit breaker around Redis.
public enum CircuitState: String, Sendable {
    /// Redis answers: calls go through.
    case closed
    /// Redis failed `failureThreshold` times in a row: no call goes to Redis until `openDuration` has passed.
    case open
    /// The cool-down has passed: one probe call is in flight; its outcome closes or re-opens the circuit.
    case halfOpen = "half_open"
}

/// The breaker's thresholds (in `OutboxConfiguration`; flags and `JOBFARM_SERVE_BREAKER_*` set them).
public struct CircuitBreakerSettings: Sendable, Equatable {
    /// Connection failures (or timeouts) in a row that open the circuit.
    public var failureThreshold: Int
    /// How long the circuit stays open before one probe is let through.
    public var openDuration: Duration
    /// Longest time a submission waits for Redis before it is spooled instead (the call counts as a failure).
    public var callTimeout: Duration

    public init(failureThreshold: Int = 3, openDuration: Duration = .seconds(2), callTimeout: Duration = .seconds(1)) {
        self.failureThreshold = failureThreshold
        self.openDuration = openDuration
        self.callTimeout = callTimeout
    }
}

/// A circuit breaker (closed / open / half-open) around the dispatcher's Redis calls, so that while Redis is down a
/// request does not spend the library's connection retries (up to 10 s) before it is answered: it is spooled to the
/// outbox (submissions) or answered 503 at once (everything else).
///
/// Only failures that say Redis is not there count (`JobFarmError.isConnectionError`, a call past its timeout);
/// an error reply means Redis answered, and counts as a success. Every call let through must report its outcome.
public final class CircuitBreaker: Sendable {
    private struct State {
        var state: CircuitState = .closed
        var failures = 0
        var openedAt: ContinuousClock.Instant?
        var transitions = 0
    }

    public let settings: CircuitBreakerSettings
    private let state = Mutex(State())
    private let now: @Sendable () -> ContinuousClock.Instant

    /// - Parameter now: the clock (tests move it by hand).
    public init(settings: CircuitBreakerSettings, now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.settings = settings
        self.now = now
    }

    /// The current state (an open circuit past its cool-down still reads `open` until a call probes it).
    public var current: CircuitState { state.withLock { $0.state } }

    /// How many times the state changed since start (for logs and tests).
    public var transitions: Int { state.withLock { $0.transitions } }

    /// Seconds until an open circuit lets a probe through (at least 1): the `Retry-After` to give clients.
    public var retryAfterSeconds: Int {
        state.withLock { state in
            guard state.state == .open, let openedAt = state.openedAt else { return 1 }
            let left = settings.openDuration - (now() - openedAt)
            return max(1, Int(left.components.seconds) + (left.components.attoseconds > 0 ? 1 : 0))
        }
    }

    /// Whether `allowsCall()` would let a call through now (without becoming the probe).
    public var mayAllowCall: Bool {
        let time = now()
        return state.withLock { state in
            switch state.state {
            case .closed: return true
            case .halfOpen: return false
            case .open: return state.openedAt.map { time - $0 >= settings.openDuration } ?? false
            }
        }
    }

    /// Whether a call may go to Redis now. In an open circuit past its cool-down, the first caller becomes the
    /// probe (the circuit turns half-open) and must report its outcome; everyone else is refused until then.
    public func allowsCall() -> Bool {
        let time = now()
        return state.withLock { state in
            switch state.state {
            case .closed: return true
            case .halfOpen: return false
            case .open:
                guard let openedAt = state.openedAt, time - openedAt >= settings.openDuration else { return false }
                state.state = .halfOpen
                state.transitions += 1
                return true
            }
        }
    }

    /// Redis answered: the circuit closes (a half-open probe succeeded) and the failure count starts again.
    public func recordSuccess() {
        state.withLock { state in
            if state.state != .closed { state.transitions += 1 }
            state.state = .closed
            state.failures = 0
            state.openedAt = nil
        }
    }

    /// Redis was not there: counts towards opening; a failed probe re-opens at once.
    public func recordFailure() {
        let time = now()
        state.withLock { state in
            state.failures += 1
            if state.state == .halfOpen || (state.state == .closed && state.failures >= settings.failureThreshold) {
                state.state = .open
                state.openedAt = time
                state.transitions += 1
            } else if state.state == .open {
                state.openedAt = time
            }
        }
    }

    /// Records the outcome of a call that went through: connection failures and timeouts count as failures.
    public func record(_ error: (any Error)?) {
        if let error, Self.meansRedisIsDown(error) { recordFailure() } else { recordSuccess() }
    }

    /// True for errors that say Redis is not there (rather than that it answered with an error).
    public static func meansRedisIsDown(_ error: any Error) -> Bool {
        if let error = error as? JobFarmError { return error.isConnectionError }
        return error is RedisCallTimedOut
    }
}

/// A Redis call did not answer within the breaker's `callTimeout`.
public struct RedisCallTimedOut: Error, CustomStringConvertible, Sendable {
    public let limit: Duration
    public var description: String { "Redis did not answer within \(limit)" }
}

/// Runs `body` in a task of its own and returns its result, or throws `RedisCallTimedOut` after `limit` without
/// waiting for it (a blocking hiredis call cannot be interrupted; the task is cancelled and left to end on its own).
func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let race = DeadlineRace<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            race.start(continuation, limit: limit, body)
        }
    } onCancel: {
        race.finish(.failure(CancellationError()))
    }
}

/// The first of a call's result, its deadline and its caller's cancellation wins; the others find nothing to resume.
private final class DeadlineRace<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var early: Result<T, any Error>?
        var work: Task<Void, Never>?
        var timer: Task<Void, Never>?
    }
    private let state = Mutex(State())

    func start(_ continuation: CheckedContinuation<T, any Error>, limit: Duration, _ body: @escaping @Sendable () async throws -> T) {
        // Cancelled before it started: answer at once.
        if let early = state.withLock({ $0.early }) {
            continuation.resume(with: early)
            return
        }
        state.withLock { $0.continuation = continuation }
        let work = Task {
            do { self.finish(.success(try await body())) } catch { self.finish(.failure(error)) }
        }
        let timer = Task {
            try? await Task.sleep(for: limit)
            if !Task.isCancelled { self.finish(.failure(RedisCallTimedOut(limit: limit))) }
        }
        state.withLock {
            $0.work = work
            $0.timer = timer
        }
    }

    func finish(_ result: Result<T, any Error>) {
        let (continuation, work, timer) = state.withLock { state in
            defer {
                state.continuation = nil
                if state.early == nil { state.early = result }
            }
            return (state.continuation, state.work, state.timer)
        }
        guard let continuation else { return }
        timer?.cancel()
        if case .failure = result { work?.cancel() }
        continuation.resume(with: result)
    }
}
