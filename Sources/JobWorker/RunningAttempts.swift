import JobQueue
import Synchronization

/// The attempts running in this process, by job id: what the fetch loop counts against the concurrency, the
/// lease keeper renews, the timeout sweep watches and a shutdown cancels.
final class RunningAttempts: Sendable {
    struct Attempt: Sendable {
        let job: LeasedJob
        let rules: AttemptRules
        var task: Task<Void, Never>?
        var stopReason: StopReason?
        /// When the attempt times out.
        var deadline: ContinuousClock.Instant
        /// Settles the attempt once: the handler's ending or the timeout, whichever comes first.
        let race: OutcomeRace
        var lastProgress: (time: ContinuousClock.Instant, value: Double) = (.now - .seconds(1), -1)
    }

    private let attempts = Mutex<[String: Attempt]>([:])
    /// Fired each time an attempt leaves the table (a slot is free), and on shutdown.
    let slotFreed = AsyncSignal()

    var count: Int { attempts.withLock { $0.count } }
    var isEmpty: Bool { attempts.withLock { $0.isEmpty } }

    /// Adds an attempt (its task attached later with `attach`).
    func insert(_ job: LeasedJob, rules: AttemptRules, deadline: ContinuousClock.Instant, race: OutcomeRace) {
        attempts.withLock { $0[job.id] = Attempt(job: job, rules: rules, task: nil, stopReason: nil, deadline: deadline, race: race) }
    }

    func attach(_ task: Task<Void, Never>, to id: String) {
        attempts.withLock { $0[id]?.task = task }
    }

    /// Removes the attempt settled by `race` (not a newer attempt of the same id) and frees its slot.
    func remove(_ id: String, race: OutcomeRace) {
        attempts.withLock { attempts in
            if attempts[id]?.race === race { attempts[id] = nil }
        }
        slotFreed.fire()
    }

    func stopReason(of id: String) -> StopReason? {
        attempts.withLock { $0[id]?.stopReason }
    }

    /// Cancels a running handler for `reason`; a handler already being stopped keeps its first reason.
    func stop(_ id: String, because reason: StopReason) {
        let task = attempts.withLock { attempts -> Task<Void, Never>? in
            guard attempts[id] != nil, attempts[id]?.stopReason == nil else { return nil }
            attempts[id]?.stopReason = reason
            return attempts[id]?.task
        }
        task?.cancel()
    }

    /// Leases to renew: every running handler's, even one being stopped (a handler that is slow to honour
    /// cancellation keeps its lease until it ends), except those already lost or whose timeout was recorded.
    func renewable() -> [LeasedJob] {
        attempts.withLock { attempts in
            attempts.values.filter { attempt in
                switch attempt.stopReason {
                case .leaseLost?, .timeout?: return false
                default: return true
                }
            }.map(\.job)
        }
    }

    /// The attempts past their deadline at `now`, marked as timed out unless already being stopped for another
    /// reason (which they keep). Attempts already marked timed out are not returned again.
    func expire(at now: ContinuousClock.Instant) -> [Attempt] {
        attempts.withLock { attempts in
            var expired: [Attempt] = []
            for (id, attempt) in attempts where attempt.deadline <= now {
                if case .timeout? = attempt.stopReason { continue }
                if attempt.stopReason == nil { attempts[id]?.stopReason = .timeout }
                expired.append(attempt)
            }
            return expired
        }
    }

    /// Marks every attempt not yet being stopped as stopped for shutdown; returns the tasks to cancel.
    func stopAllForShutdown() -> [Task<Void, Never>] {
        attempts.withLock { attempts in
            var tasks: [Task<Void, Never>] = []
            for (id, attempt) in attempts {
                if attempt.stopReason == nil { attempts[id]?.stopReason = .shutdown }
                if let task = attempt.task { tasks.append(task) }
            }
            return tasks
        }
    }

    /// Empties the table; returns the jobs that were in it.
    func removeAll() -> [LeasedJob] {
        attempts.withLock { attempts in
            defer { attempts = [:] }
            return attempts.values.map(\.job)
        }
    }

    /// True when a progress update should be sent: at most every 100 ms per job, always the final 100 %.
    func takeProgressTurn(_ id: String, fraction: Double, now: ContinuousClock.Instant) -> Bool {
        attempts.withLock { attempts in
            guard var attempt = attempts[id] else { return false }
            guard fraction != attempt.lastProgress.value,
                now - attempt.lastProgress.time >= .milliseconds(100) || fraction >= 1
            else { return false }
            attempt.lastProgress = (now, fraction)
            attempts[id] = attempt
            return true
        }
    }
}

/// The first of: the handler's result, its error, or the timeout; handed out once to be recorded.
final class OutcomeRace: Sendable {
    private let state = Mutex<(ending: AttemptEnding?, taken: Bool)>((nil, false))

    /// Sets the ending if none is set yet.
    func finish(_ ending: AttemptEnding) {
        state.withLock { state in
            if state.ending == nil { state.ending = ending }
        }
    }

    /// The ending, the first time it is asked for once set; nil afterwards (already recorded).
    func takeEndingIfUnrecorded() -> AttemptEnding? {
        state.withLock { state in
            guard let ending = state.ending, !state.taken else { return nil }
            state.taken = true
            return ending
        }
    }
}
