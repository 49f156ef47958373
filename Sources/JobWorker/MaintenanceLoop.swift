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
    private let logger: Logger

    /// - Parameter queues: the queues to maintain; `nil` maintains every queue the engine knows.
    init(driver: any WorkerDriver, queues: [String]?, logger: Logger, isStopping: @escaping @Sendable () -> Bool) {
        self.driver = driver
        self.queues = queues
        self.logger = logger
        self.isStopping = isStopping
    }

    func run() async {
        while !isStopping() && !Task.isCancelled {
            let sleep = await step()
            // Jitter spreads the steps of many workers over the interval.
            let jitter = Duration.milliseconds(Int64.random(in: 0...max(1, sleep.milliseconds / 5)))
            try? await Task.sleep(for: sleep + jitter)
        }
    }

    /// One pass over the queues; returns the time until the next pass.
    @discardableResult
    func step() async -> Duration {
        var queues = self.queues ?? []
        if self.queues == nil { queues = (try? await driver.queues()) ?? [] }
        var sleep = driver.maintenanceInterval
        for queue in queues {
            do {
                let (moved, nextDue) = try await driver.promoteDueJobs(queue: queue)
                let reaped = try await driver.reapExpiredLeases(queue: queue)
                if reaped.requeued + reaped.poisoned > 0 {
                    logger.warning("reaped expired leases", metadata: ["queue": "\(queue)", "requeued": "\(reaped.requeued)", "poison": "\(reaped.poisoned)"])
                }
                if moved > 0 { logger.debug("promoted due jobs", metadata: ["queue": "\(queue)", "count": "\(moved)"]) }
                if let nextDue, nextDue < sleep { sleep = max(.milliseconds(5), nextDue) }
            } catch {
                logger.debug("maintenance step failed", metadata: ["queue": "\(queue)", "error": "\(error)"])
            }
        }
        return sleep
    }
}
