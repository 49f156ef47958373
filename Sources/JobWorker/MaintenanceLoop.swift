import JobQueue
import Logging

/// The maintenance every worker shares: per served queue, the scheduler step (due delayed and retrying jobs into
/// their line) and the reaper step (expired leases back in line, or to the dead letters as `poison`). Each step is
/// one atomic script, so any number of workers run them at once. Runs every maintenance interval (shortened to the
/// next due job), with jitter so that many workers spread their steps.
///
/// Faults are told apart as in the fetch loop: a queue whose steps fail on its data (a key of the wrong type) is set
/// aside with a growing pause (`QueueBackoff`), logged once when it starts failing and once when it works again; a
/// fault of the whole engine (out of reach, not ready, read-only, out of memory) ends the pass, and the next pass
/// renews this worker's leases before it reaps; credentials refused after start stop the worker (`refused`).
final class MaintenanceLoop: Sendable {
    private let driver: any WorkerDriver
    private let queues: [String]?
    private let isStopping: @Sendable () -> Bool
    private let resynchronize: @Sendable () async -> Bool
    private let refused: @Sendable (JobFarmError) -> Void
    private let logger: Logger

    /// What one pass leaves for the next.
    struct State: Sendable {
        /// The queues whose reaper is holding off after an outage (logged once per outage).
        var inGrace: Set<String> = []
        /// The queues whose steps fail on their data, and when to try each again.
        var backoff: QueueBackoff
        /// The server-wide condition that ended the last passes (logged once when it starts and when it ends).
        var serverFault: String?

        init(backoff: QueueBackoff) { self.backoff = backoff }
    }

    /// - Parameters:
    ///   - queues: the queues to maintain; `nil` maintains every queue the engine knows.
    ///   - resynchronize: after a failed step, runs before the next reaper step: renews this worker's leases (those
    ///     of finished jobs not reported yet included); false when the engine is still out of reach (no step then).
    ///   - refused: called when the engine refuses the worker's credentials (retrying cannot help).
    init(
        driver: any WorkerDriver, queues: [String]?, logger: Logger, isStopping: @escaping @Sendable () -> Bool,
        resynchronize: @escaping @Sendable () async -> Bool = { true },
        refused: @escaping @Sendable (JobFarmError) -> Void = { _ in }
    ) {
        self.driver = driver
        self.queues = queues
        self.logger = logger
        self.isStopping = isStopping
        self.resynchronize = resynchronize
        self.refused = refused
    }

    /// A fresh state: broken queues are tried again after one interval, then after a pause doubling up to 5 s (or
    /// the interval, if longer).
    func initialState() -> State {
        let interval = driver.maintenanceInterval
        return State(backoff: QueueBackoff(initialPause: interval, maximumPause: max(interval, .seconds(5))))
    }

    func run() async {
        var failed = false
        var state = initialState()
        while !isStopping() && !Task.isCancelled {
            var sleep = driver.maintenanceInterval
            if failed, !(await resynchronize()) {
                // Still out of reach: reaping now could take this worker's own finished work for a crashed worker's.
            } else {
                let result = await step(&state)
                sleep = result.sleep
                failed = result.failed
            }
            // Jitter spreads the steps of many workers over the interval.
            let jitter = Duration.milliseconds(Int64.random(in: 0...max(1, sleep.milliseconds / 5)))
            try? await Task.sleep(for: sleep + jitter)
        }
    }

    /// One pass over the queues; returns the time until the next pass and whether it failed as a whole (the engine
    /// out of reach or refusing: then the next pass renews this worker's leases before it reaps).
    func step(_ state: inout State) async -> (sleep: Duration, failed: Bool) {
        var queues = self.queues ?? []
        if self.queues == nil {
            do { queues = try await driver.queues() } catch { return (driver.maintenanceInterval, true) }
        }
        var sleep = driver.maintenanceInterval
        var answered = false
        for queue in queues where state.backoff.isReady(queue, at: .now) {
            do {
                let (moved, nextDue) = try await driver.promoteDueJobs(queue: queue)
                let reaped = try await driver.reapExpiredLeases(queue: queue)
                do {
                    _ = try await driver.applyStaleRunNotices(queue: queue)
                } catch {
                    logger.warning("could not apply pipeline run notices of this queue; retried at the next pass", metadata: ["queue": "\(queue)", "error": "\(error)"])
                }
                if reaped.graceRemaining > .zero {
                    if state.inGrace.insert(queue).inserted {
                        logger.notice("no worker reached this queue for a while (Redis was down or out of reach): no lease is reaped until the workers have had time to renew them and report finished jobs", metadata: [
                            "queue": "\(queue)", "grace": "\(reaped.graceRemaining)",
                        ])
                    }
                } else {
                    state.inGrace.remove(queue)
                }
                if reaped.requeued + reaped.poisoned > 0 {
                    logger.warning("reaped expired leases", metadata: ["queue": "\(queue)", "requeued": "\(reaped.requeued)", "poison": "\(reaped.poisoned)"])
                }
                if moved > 0 { logger.debug("promoted due jobs", metadata: ["queue": "\(queue)", "count": "\(moved)"]) }
                if let nextDue, nextDue < sleep { sleep = max(.milliseconds(5), nextDue) }
                answered = true
                if let fault = state.backoff.succeeded(queue, at: .maintenance, now: .now) {
                    logger.notice("maintenance of this queue works again", metadata: [
                        "queue": "\(queue)", "failed_for": "\(ContinuousClock.now - fault.since)", "failures": "\(fault.failures)",
                    ])
                }
            } catch let error as JobFarmError where error.isConfigurationError && !error.isPermissionDenied {
                refused(error)
                return (sleep, true)
            } catch let error as JobFarmError where error.serverCondition != nil && !error.isConnectionError {
                // The whole server refuses (read-only, out of memory): the other queues would fail alike.
                if state.serverFault == nil {
                    logger.warning("maintenance paused: Redis refuses it for every queue (no due job is promoted, no expired lease reaped until it works again)", metadata: [
                        "error": "\(error)",
                    ])
                }
                state.serverFault = "\(error)"
                return (sleep, true)
            } catch let error as JobFarmError where !error.isConnectionError {
                let (first, pause) = state.backoff.failed(queue, error: "\(error)", at: .maintenance, now: .now)
                if first {
                    logger.error("maintenance of this queue fails: its due jobs are not promoted and its expired leases not reaped until the cause is repaired (see the error; docs/PROTOCOL.md, keys of the wrong type); the other queues go on, this one is tried again with a growing pause", metadata: [
                        "queue": "\(queue)", "error": "\(error)", "retry_in": "\(pause)",
                    ])
                }
            } catch {
                logger.debug("maintenance step failed", metadata: ["queue": "\(queue)", "error": "\(error)"])
                return (sleep, true)
            }
        }
        if answered {
            do { try await driver.sweepRuns() } catch {
                logger.warning("the pipeline run sweeper failed; retried at the next pass", metadata: ["error": "\(error)"])
            }
        }
        if answered, let fault = state.serverFault {
            logger.notice("maintenance works again", metadata: ["was": "\(fault)"])
            state.serverFault = nil
        }
        return (sleep, false)
    }
}
