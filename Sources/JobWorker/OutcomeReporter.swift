import JobQueue
import Logging
import Synchronization

/// Collects how attempts ended and sends them in batches: every outcome goes into a buffer, and one loop sends
/// whatever has gathered as one `report` per queue (one pipeline), so thousands of acknowledgements per second
/// take tens of round trips. Jobs handed back at shutdown go the same way (`release`).
final class OutcomeReporter: Sendable {
    private struct Buffer {
        var outcomes: [(job: LeasedJob, outcome: AttemptOutcome)] = []
        var releases: [LeasedJob] = []
        var processed = 0
        /// Attempts that did not succeed.
        var failed = 0
        /// Jobs of the batches taken from the buffer and not yet answered, by flush.
        var sending: [Int: [LeasedJob]] = [:]
        var flushes = 0
    }

    private let driver: any WorkerDriver
    private let logger: Logger
    private let buffer = Mutex(Buffer())
    /// Fired when something is buffered (and to wake the loop at shutdown).
    let ready = AsyncSignal()

    init(driver: any WorkerDriver, logger: Logger) {
        self.driver = driver
        self.logger = logger
    }

    /// Attempts recorded since start (any outcome).
    var processedCount: Int { buffer.withLock { $0.processed } }

    /// Attempts recorded since start that did not succeed (retried, dead-lettered, cancelled).
    var failedCount: Int { buffer.withLock { $0.failed } }

    /// True when nothing is buffered or being sent.
    var isIdle: Bool { buffer.withLock { $0.outcomes.isEmpty && $0.releases.isEmpty && $0.sending.isEmpty } }

    /// Jobs whose outcome is buffered or being sent: their leases must be kept until it is recorded, or a Redis
    /// outage would let them expire and the finished work run again.
    func unreportedJobs() -> [LeasedJob] {
        buffer.withLock { buffer in buffer.outcomes.map(\.job) + buffer.sending.values.joined() }
    }

    /// Buffers an attempt's outcome for the next flush.
    func record(_ job: LeasedJob, _ outcome: AttemptOutcome) {
        buffer.withLock {
            $0.outcomes.append((job, outcome))
            $0.processed += 1
            if case .succeeded = outcome {} else { $0.failed += 1 }
        }
        ready.fire()
    }

    /// Buffers a job to hand back (shutdown) for the next flush.
    func release(_ job: LeasedJob) {
        buffer.withLock { $0.releases.append(job) }
        ready.fire()
    }

    /// Flushes whenever something is buffered, until `isFinished` (checked after each flush) says the worker is done.
    func run(until isFinished: @Sendable () -> Bool) async {
        while true {
            await ready.wait()
            await flush()
            let empty = buffer.withLock { $0.outcomes.isEmpty && $0.releases.isEmpty }
            if empty && (isFinished() || Task.isCancelled) { return }
        }
    }

    /// Sends every buffered outcome and release: one round trip per queue, however many jobs finished.
    func flush() async {
        let (flush, batch, releases) = buffer.withLock { buffer -> (Int, [(job: LeasedJob, outcome: AttemptOutcome)], [LeasedJob]) in
            defer {
                buffer.outcomes = []
                buffer.releases = []
            }
            buffer.flushes += 1
            buffer.sending[buffer.flushes] = buffer.outcomes.map(\.job)
            return (buffer.flushes, buffer.outcomes, buffer.releases)
        }
        defer { buffer.withLock { _ = $0.sending.removeValue(forKey: flush) } }
        if !releases.isEmpty {
            for (queue, jobs) in grouped(releases, by: \.queue) {
                do { try await driver.release(jobs, queue: queue) } catch {
                    logger.error("could not hand jobs back; their leases will expire and they run again", metadata: ["error": "\(error)"])
                }
            }
        }
        if batch.isEmpty { return }
        for (queue, items) in grouped(batch, by: \.job.queue) {
            do {
                let refused = try await driver.report(items, queue: queue)
                if !refused.isEmpty {
                    logger.warning("outcomes refused: the lease had been lost (another worker owns the job now)", metadata: ["jobs": "\(refused.joined(separator: ","))"])
                }
            } catch {
                // After an hour of failed reconnects, or at once for an error reply (a key of the wrong type): the
                // leases are no longer renewed, so they expire and the jobs run again.
                logger.error("could not record outcomes", metadata: ["error": "\(error)", "jobs": "\(items.count)"])
            }
        }
    }

    /// Groups items by queue, queues in the order first seen (one call per queue).
    private func grouped<T>(_ items: [T], by queue: (T) -> String) -> [(String, [T])] {
        var order: [String] = []
        var groups: [String: [T]] = [:]
        for item in items {
            let name = queue(item)
            if groups[name] == nil { order.append(name) }
            groups[name, default: []].append(item)
        }
        return order.map { ($0, groups[$0]!) }
    }
}
