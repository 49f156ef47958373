import JobProtocol
import JobQueue

/// Why a running handler was cancelled.
enum StopReason: Sendable, Equatable {
    case timeout
    case cancelRequested(keep: Bool)
    case leaseLost
    case shutdown
}

/// How an attempt ended: the handler's result, its error, or the timeout, whichever came first.
enum AttemptEnding: Sendable {
    case success(String)
    case failure(any Error)
    case timedOut
}

/// The limits one attempt runs under: its number, the attempt limit (the lower of the envelope's and the kind's
/// policy), the kind's retry policy and the envelope's timeout.
struct AttemptRules: Sendable, Equatable {
    var attempt: Int
    var maxAttempts: Int
    var retryPolicy: RetryPolicy
    var timeoutMilliseconds: Int64
}

/// What is recorded for an attempt: a pure function of how it ended, why it was being stopped and its rules.
/// docs/PROTOCOL.md §6 ("How an attempt's ending is recorded") is this table.
enum AttemptDecision {
    /// The outcome to record; `nil` records nothing (the lease was lost, or the job is handed back at shutdown).
    static func outcome<G: RandomNumberGenerator>(
        of ending: AttemptEnding, stopReason: StopReason?, rules: AttemptRules, using generator: inout G
    ) -> AttemptOutcome? {
        func failure(_ message: String, deadReason: DeadLetterReason) -> AttemptOutcome {
            if rules.attempt >= rules.maxAttempts { return .dead(reason: deadReason, error: message) }
            return .retry(error: message, delay: rules.retryPolicy.delay(afterAttempt: rules.attempt, using: &generator))
        }
        switch (ending, stopReason) {
        case (_, .leaseLost?):
            return nil
        case (.success(let result), _):
            // A result that arrived first wins over a cancel, a shutdown or a timeout that came after it.
            return .succeeded(result: result)
        case (_, .shutdown?):
            return nil
        case (_, .cancelRequested(let keep)?):
            return .cancelled(error: "cancelled by request while running", keepAsDeadLetter: keep)
        case (.timedOut, _), (_, .timeout?):
            return failure("timed out after \(rules.timeoutMilliseconds) ms", deadReason: .timeout)
        case (.failure(let error), nil):
            if let jobError = error as? JobError, case .nonRetryable(let message) = jobError {
                return .dead(reason: .nonRetryable, error: message)
            }
            return failure("\(error)", deadReason: .exhausted)
        }
    }

    /// `outcome(of:stopReason:rules:using:)` with the system's random numbers (the retry jitter).
    static func outcome(of ending: AttemptEnding, stopReason: StopReason?, rules: AttemptRules) -> AttemptOutcome? {
        var generator = SystemRandomNumberGenerator()
        return outcome(of: ending, stopReason: stopReason, rules: rules, using: &generator)
    }

    /// Before running: `nil` runs the attempt; otherwise the outcome to record instead. Attempts whose worker died
    /// still count, so a job that keeps losing its lease cannot run forever.
    static func admission(_ rules: AttemptRules) -> AttemptOutcome? {
        guard rules.attempt > rules.maxAttempts else { return nil }
        return .dead(
            reason: .exhausted,
            error: "attempt \(rules.attempt) exceeds the limit of \(rules.maxAttempts) attempts (earlier attempts lost their lease)")
    }
}
