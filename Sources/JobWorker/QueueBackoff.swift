/// Which queues are set aside after failures, and until when: a pure value, one growing pause per queue. The fetch
/// loop keeps one for its queues and one for the engine as a whole (key `QueueBackoff.engine`); the maintenance loop
/// keeps its own.
struct QueueBackoff: Sendable {
    /// Where a queue failed: its own fetch, the wait on its wake-up lists, or a maintenance step.
    enum Site: Sendable, Equatable { case fetch, wait, maintenance }

    /// The key under which the fetch loop records faults of the whole engine.
    static let engine = "*"

    struct Fault: Sendable, Equatable {
        var error: String
        var site: Site
        /// Failures in a row.
        var failures: Int
        var since: ContinuousClock.Instant
        var retryAt: ContinuousClock.Instant
    }

    var initialPause: Duration = .milliseconds(100)
    var maximumPause: Duration = .seconds(5)
    private(set) var faults: [String: Fault] = [:]

    init(initialPause: Duration = .milliseconds(100), maximumPause: Duration = .seconds(5)) {
        self.initialPause = initialPause
        self.maximumPause = maximumPause
    }

    /// True when the queue is not set aside at `now`.
    func isReady(_ queue: String, at now: ContinuousClock.Instant) -> Bool {
        guard let fault = faults[queue] else { return true }
        return now >= fault.retryAt
    }

    /// The earliest time one of `queues` may be tried again (`nil` when none is set aside).
    func nextRetry(among queues: [String]) -> ContinuousClock.Instant? {
        queues.compactMap { faults[$0]?.retryAt }.min()
    }

    /// The pause after `failures` failures in a row: doubling from `initialPause`, at most `maximumPause`.
    func pause(afterFailures failures: Int) -> Duration {
        var pause = initialPause
        for _ in 1..<max(1, failures) where pause < maximumPause { pause = pause * 2 }
        return min(pause, maximumPause)
    }

    /// Sets the queue aside after a failure. Returns whether this failure starts a run of failures (to be logged:
    /// the repeats are not) and the pause before the next try.
    mutating func failed(_ queue: String, error: String, at site: Site, now: ContinuousClock.Instant) -> (first: Bool, pause: Duration) {
        var fault = faults[queue] ?? Fault(error: error, site: site, failures: 0, since: now, retryAt: now)
        let first = fault.failures == 0
        fault.failures += 1
        fault.error = error
        fault.site = site
        let pause = pause(afterFailures: fault.failures)
        fault.retryAt = now + pause
        faults[queue] = fault
        return (first, pause)
    }

    /// Notes a success. A fetch that works does not clear a fault of the wait (the wake-up lists are not used by it);
    /// a wait that works clears either. Returns the fault that ended (to log the recovery), if any.
    mutating func succeeded(_ queue: String, at site: Site, now: ContinuousClock.Instant) -> Fault? {
        guard let fault = faults[queue], site == .wait || fault.site == site else { return nil }
        faults[queue] = nil
        return fault
    }
}
