import Synchronization

/// A one-slot wake-up for async loops and waiters: `fire()` wakes the task waiting, or, when none is waiting, lets the
/// next wait return at once. Fires while nobody waits are not counted: one wake-up covers them all. One waiter at a
/// time. The worker's loops wait on it for work (`wait()`), a job's waiters for its events (`wait(upTo:)`).
public final class AsyncSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Bumped as each timed wait ends, so that its timer never wakes a later wait.
        var generation = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Wakes the waiter, or lets the next wait return at once.
    public func fire() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Waits for the next `fire()` (returns at once if one happened since the last wait).
    public func wait() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                if state.pending {
                    state.pending = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Waits for the next `fire()`, at most `limit`.
    public func wait(upTo limit: Duration) async {
        let generation = state.withLock { state -> Int? in
            if state.pending {
                state.pending = false
                return nil
            }
            state.generation += 1
            return state.generation
        }
        guard let generation else { return }
        let timer = Task {
            try? await Task.sleep(for: limit)
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                guard state.generation == generation else { return nil }
                state.generation += 1
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                // Fired, or timed out, between the check above and now.
                if state.pending || state.generation != generation {
                    state.pending = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
        timer.cancel()
        state.withLock { state in
            if state.generation == generation { state.generation += 1 }
        }
    }
}
