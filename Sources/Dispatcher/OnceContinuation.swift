import Synchronization

/// A continuation resumed at most once, by whichever comes first of the parties that may answer it (a reply, a
/// deadline, the caller's cancellation); the later ones find nothing to resume.
final class OnceContinuation<Value: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Value, any Error>?>

    init(_ continuation: CheckedContinuation<Value, any Error>) {
        self.continuation = Mutex(continuation)
    }

    func resume(_ result: Result<Value, any Error>) {
        continuation.withLock { taken in
            defer { taken = nil }
            return taken
        }?.resume(with: result)
    }
}

/// Takes the oldest waiters off the front of `waiting` for the next round trip or call: at least one, then as many as
/// keep the sum of their `size` within `limit`.
func takeOldest<Waiter>(_ waiting: inout [Waiter], upTo limit: Int, size: (Waiter) -> Int) -> [Waiter] {
    var count = 0
    var taken = 0
    for waiter in waiting {
        if taken > 0 && count + size(waiter) > limit { break }
        count += size(waiter)
        taken += 1
    }
    let batch = Array(waiting.prefix(taken))
    waiting.removeFirst(taken)
    return batch
}
