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
