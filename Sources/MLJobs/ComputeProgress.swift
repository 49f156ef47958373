import JobWorker
import Synchronization

/// Progress from a compute thread to the job, and cancellation the other way.
///
/// Long work runs on a `ComputeExecutor` lane while the handler's task waits, so the lane cannot call the async
/// `JobContext.progress` itself: it reports here, into an `AsyncStream` that keeps only the newest value (a slow
/// Redis never holds the compute thread up), and a task of the handler forwards what it finds. A cancel request, a
/// timeout or a shutdown cancels the handler's task, not the lane; the lane sees it at its next `report` or
/// `checkCancellation`, which throw `CancellationError`, so it stops instead of computing on for nothing.
final class ComputeProgress: Sendable {
    private let continuation: AsyncStream<Double>.Continuation
    private let stopped = Mutex(false)

    fileprivate init(_ continuation: AsyncStream<Double>.Continuation) { self.continuation = continuation }

    /// Reports `fraction` (0…1) of the job. Cheap: the newest value replaces one not forwarded yet.
    /// - Throws: `CancellationError` once the job's task was cancelled.
    func report(_ fraction: Double) throws {
        try checkCancellation()
        continuation.yield(fraction)
    }

    /// A reporter for one phase of the job: `0…1` of the phase becomes `start…end` of the job.
    func phase(from start: Double, to end: Double) -> @Sendable (Double) throws -> Void {
        { [self] fraction in try report(start + (end - start) * min(1, max(0, fraction))) }
    }

    /// Throws `CancellationError` once the job's task was cancelled (cancel request, timeout, shutdown).
    func checkCancellation() throws {
        if stopped.withLock({ $0 }) { throw CancellationError() }
    }

    fileprivate func stop() { stopped.withLock { $0 = true } }
    fileprivate func finish() { continuation.finish() }
}

/// Runs `body`, which hands work to the compute threads, with a `ComputeProgress` forwarding to `context`. The
/// forwarding task is drained before this returns or throws, so no progress is published after the job's end.
func withComputeProgress<T>(_ context: JobContext, _ body: (ComputeProgress) async throws -> T) async throws -> T {
    let (stream, continuation) = AsyncStream<Double>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let relay = ComputeProgress(continuation)
    let forwarder = Task {
        for await fraction in stream { await context.progress(fraction) }
    }
    do {
        let result = try await withTaskCancellationHandler {
            try await body(relay)
        } onCancel: {
            relay.stop()
        }
        relay.finish()
        await forwarder.value
        return result
    } catch {
        relay.finish()
        await forwarder.value
        throw error
    }
}
