import JobQueue
import Logging

/// The maintenance every worker shares: per served queue, the scheduler step (due delayed and retrying jobs into
/// their line) and the reaper step (expired leases back in line, or to the dead letters as `poison`). Each step is
/// one atomic script, so any number of workers run them at once. Runs every maintenance interval (shortened to the
/// next due job), with jitter so that many workers spread their steps.
final class MaintenanceLoop: Sendable {
    private let driver: any WorkerDriver
    private let queues: [String]?
    private let isStopping: @Sendable () -> Bool
    private let resynchronize: @Sendable () async -> Bool
    private let logger: Logger

    /// - Parameters:
    ///   - queues: the queues to maintain; `nil` maintains every queue the engine knows.
    ///   - resynchronize: after a failed step, runs before the next reaper step: renews this worker's leases (those
    ///     of finished jobs not reported yet included); false when the engine is still out of reach (no step then).
    init(
        driver: any WorkerDriver, queues: [String]?, logger: Logger, isStopping: @escaping @Sendable () -> Bool,
        resynchronize: @escaping @Sendable () async -> Bool = { true }
    ) {
        self.driver = driver
        self.queues = queues
        self.logger = logger
        self.isStopping = isStopping
        self.resynchronize = resynchronize
    }

    func run() async {
        var failed = false
        var inGrace: Set<String> = []
        var broken: Set<String> = []
        while !isStopping() && !Task.isCancelled {
            var sleep = driver.maintenanceInterval
            if failed, !(await resynchronize()) {
                // Still out of reach: reaping now could take this worker's own finished work for a crashed worker's.
            } else {
                let result = await step(inGrace: &inGrace, broken: &broken)
                sleep = result.sleep
                failed = result.failed
            }
            // Jitter spreads the steps of many workers over the interval.
            let jitter = Duration.milliseconds(Int64.random(in: 0...max(1, sleep.milliseconds / 5)))
            try? await Task.sleep(for: sleep + jitter)
        }
    }

    /// One pass over the queues; returns the time until the next pass and whether a call failed on the connection
    /// (then the next pass renews this worker's leases before it reaps).
    /// - Parameters:
    ///   - inGrace: the queues whose reaper is holding off after an outage (logged once per outage).
    ///   - broken: the queues whose steps fail on their data (a key of the wrong type): logged once when it starts
    ///     and once when it ends, not at every pass.
    func step(inGrace: inout Set<String>, broken: inout Set<String>) async -> (sleep: Duration, failed: Bool) {
        var queues = self.queues ?? []
        var failed = false
        if self.queues == nil {
            do { queues = try await driver.queues() } catch { return (driver.maintenanceInterval, true) }
        }
        var sleep = driver.maintenanceInterval
        for queue in queues {
            do {
                let (moved, nextDue) = try await driver.promoteDueJobs(queue: queue)
                let reaped = try await driver.reapExpiredLeases(queue: queue)
                if reaped.graceRemaining > .zero {
                    if inGrace.insert(queue).inserted {
                        logger.notice("no worker reached this queue for a while (Redis was down or out of reach): no lease is reaped until the workers have had time to renew them and report finished jobs", metadata: [
                            "queue": "\(queue)", "grace": "\(reaped.graceRemaining)",
                        ])
                    }
                } else {
                    inGrace.remove(queue)
                }
                if reaped.requeued + reaped.poisoned > 0 {
                    logger.warning("reaped expired leases", metadata: ["queue": "\(queue)", "requeued": "\(reaped.requeued)", "poison": "\(reaped.poisoned)"])
                }
                if moved > 0 { logger.debug("promoted due jobs", metadata: ["queue": "\(queue)", "count": "\(moved)"]) }
                if let nextDue, nextDue < sleep { sleep = max(.milliseconds(5), nextDue) }
                if broken.remove(queue) != nil {
                    logger.notice("maintenance of this queue works again", metadata: ["queue": "\(queue)"])
                }
            } catch let error as JobFarmError where !error.isConnectionError {
                if broken.insert(queue).inserted {
                    logger.error("maintenance of this queue fails: its due jobs are not promoted and its expired leases not reaped until the cause is repaired (see the error; docs/PROTOCOL.md, keys of the wrong type); the other queues go on", metadata: [
                        "queue": "\(queue)", "error": "\(error)",
                    ])
                }
            } catch {
                failed = true
                logger.debug("maintenance step failed", metadata: ["queue": "\(queue)", "error": "\(error)"])
            }
        }
        return (sleep, failed)
    }
}
