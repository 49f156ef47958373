import JobQueue

/// Told what a worker's jobs do, for process metrics (`FarmMetrics.WorkerMetrics` turns it into Prometheus series).
/// Called on the worker's hot path: an implementation must not block or wait.
public protocol WorkerObserver: Sendable {
    /// A job's handler starts. `queueWait` is how long it waited in line before this lease, by the Redis server's
    /// clock (nil when unknown).
    func jobStarted(kind: String, queue: String, tier: String, queueWait: Duration?)
    /// An attempt ended: `outcome` is `succeeded`, `retry`, `dead` or `cancelled`; `runTime` is the handler's time
    /// (nil when no handler ran: a malformed envelope, an unknown kind, attempts used up).
    func jobFinished(kind: String, queue: String, tier: String, outcome: String, runTime: Duration?)
}

extension AttemptOutcome {
    /// The outcome's name in metrics: `succeeded`, `retry`, `dead` or `cancelled`.
    public var metricName: String {
        switch self {
        case .succeeded: "succeeded"
        case .retry: "retry"
        case .dead: "dead"
        case .cancelled: "cancelled"
        }
    }
}
