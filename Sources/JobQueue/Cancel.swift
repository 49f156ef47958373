import JobProtocol
import RedisClient

/// What `cancel` did.
public enum CancelOutcome: String, Sendable {
    /// The job was pending (queued, scheduled or waiting for a retry) and is now cancelled.
    case cancelled
    /// The job is running: its worker cancels the handler at its next heartbeat and records it as cancelled.
    case cancelling
    /// The job had already finished; nothing changed.
    case alreadyFinished
    /// No such job.
    case notFound
}

extension JobFarm {
    /// Cancels a job. Pending jobs end at once; a running job's handler sees Swift task cancellation within a
    /// heartbeat interval. With `keepAsDeadLetter` the job ends in the dead letters (reason `cancelled`),
    /// from where it can be requeued.
    public func cancel(id: String, queue: String? = nil, keepAsDeadLetter: Bool = false) async throws -> CancelOutcome {
        guard JobID.isValid(id) else { throw JobFarmError.invalidArgument("'\(id)' is not a valid job id") }
        let queueName: String
        if let queue {
            queueName = queue
        } else {
            guard let found = try await status(id: id) else { return .notFound }
            queueName = found.queue
        }
        let reply = try await run(
            Scripts.cancel, queue: queueName,
            arguments: [id, String(configuration.retention.milliseconds), keepAsDeadLetter ? "1" : "0"])
        switch reply.string {
        case "cancelled": return .cancelled
        case "cancelling": return .cancelling
        case "unknown": return .notFound
        default: return .alreadyFinished
        }
    }
}
