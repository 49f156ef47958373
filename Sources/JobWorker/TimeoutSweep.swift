/// Ends attempts that run past their timeout: one loop for all jobs instead of a timer per job. Each expired
/// attempt's ending is settled at once (recorded as a timeout unless the handler ended first) and its handler
/// cancelled; the handler keeps its slot until it actually returns.
struct TimeoutSweep: Sendable {
    let attempts: RunningAttempts
    /// Records an attempt's ending (the job runner's `settle`).
    let settle: @Sendable (RunningAttempts.Attempt, AttemptEnding) -> Void
    var period: Duration = .milliseconds(50)

    /// One pass at `now`; returns the number of attempts settled by it.
    @discardableResult
    func sweep(now: ContinuousClock.Instant = .now) -> Int {
        var settled = 0
        for attempt in attempts.expire(at: now) {
            attempt.race.finish(.timedOut)
            attempt.task?.cancel()
            if let ending = attempt.race.takeEndingIfUnrecorded() {
                settle(attempt, ending)
                settled += 1
            }
        }
        return settled
    }

    /// Sweeps every `period` until cancelled.
    func run() async {
        while !Task.isCancelled {
            sweep()
            try? await Task.sleep(for: period)
        }
    }
}
