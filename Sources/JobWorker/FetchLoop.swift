import JobQueue
import Logging
import Synchronization

/// Leases jobs while slots are free, and a few ahead of them when jobs are short (`PrefetchBuffer`): a plain fetch
/// per queue while work is waiting, and when none came, one wait in the engine (`awaitAndFetch`) that an enqueue ends
/// at once, with the fetch in the same round trip.
///
/// Two tasks: the starter moves buffered jobs into free slots as soon as a slot frees (never more running than
/// `concurrency`), and the fetcher keeps the buffer filled, so the next fetch round trip overlaps the running jobs
/// instead of following them. At shutdown the jobs still buffered are handed back without counting an attempt.
///
/// Queues are isolated: a queue whose fetch or wake-up list fails (a key a foreign client broke) is set aside
/// with a growing pause (`QueueBackoff`), logged once when it starts failing and once when it recovers, while the
/// other queues are served as usual. Only a failure of the connection itself pauses every queue.
final class FetchLoop: Sendable {
    private let driver: any WorkerDriver
    private let configuration: WorkerConfiguration
    private let attempts: RunningAttempts
    /// Jobs leased ahead of the free slots.
    let buffer: PrefetchBuffer
    private let start: @Sendable (LeasedJob) -> Void
    private let isStopping: @Sendable () -> Bool
    private let beginShutdown: @Sendable () -> Void
    private let logger: Logger
    private let backoff: Mutex<QueueBackoff>
    private let fetching = Mutex(false)

    /// - Parameters:
    ///   - buffer: where jobs leased ahead wait (one sized from `configuration` when `nil`).
    ///   - start: runs a leased job (the job runner's `start`).
    ///   - beginShutdown: called when the queues are drained under `exitWhenEmpty`.
    init(
        driver: any WorkerDriver, configuration: WorkerConfiguration, attempts: RunningAttempts, logger: Logger,
        backoff: QueueBackoff = QueueBackoff(), buffer: PrefetchBuffer? = nil,
        isStopping: @escaping @Sendable () -> Bool, beginShutdown: @escaping @Sendable () -> Void,
        start: @escaping @Sendable (LeasedJob) -> Void
    ) {
        self.driver = driver
        self.configuration = configuration
        self.attempts = attempts
        self.buffer = buffer ?? PrefetchBuffer(concurrency: configuration.concurrency, limit: configuration.fetchBatch)
        self.logger = logger
        self.backoff = Mutex(backoff)
        self.isStopping = isStopping
        self.beginShutdown = beginShutdown
        self.start = start
    }

    /// The queues currently set aside, with their faults.
    var faults: [String: QueueBackoff.Fault] { backoff.withLock { $0.faults } }

    /// Fetches and starts jobs until shutdown begins (or the queues are drained under `exitWhenEmpty`); then hands
    /// the buffered jobs back.
    func run() async {
        fetching.withLock { $0 = true }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.startJobs() }
            await fetchJobs()
            fetching.withLock { $0 = false }
            attempts.slotFreed.fire()
        }
        let left = buffer.removeAll()
        if !left.isEmpty {
            var byQueue: [String: [LeasedJob]] = [:]
            for job in left { byQueue[job.queue, default: []].append(job) }
            for (queue, jobs) in byQueue {
                do { try await driver.release(jobs, queue: queue) } catch {
                    logger.error("could not hand buffered jobs back; their leases will expire and they run later", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// Jobs to lease now: the free slots plus the prefetch target, less what is buffered.
    private func wanted() -> (count: Int, fetchNow: Bool) {
        // The buffer first: a job moving from it to the running table meanwhile is counted twice, never missed.
        let buffered = buffer.count
        let running = attempts.count
        let free = configuration.concurrency - running
        let target = buffer.target()
        let count = free + target - buffered
        // Refill at half the target, so that prefetching fetches in batches rather than one job per round trip.
        return (count, count > 0 && buffered <= target / 2)
    }

    /// The starter: moves buffered jobs into free slots whenever a slot frees or jobs arrive.
    private func startJobs() async {
        while !isStopping() && fetching.withLock({ $0 }) {
            let free = configuration.concurrency - attempts.count
            let jobs = buffer.takeToStart(free)
            for job in jobs { start(job) }
            buffer.started(jobs.count)
            if wanted().fetchNow { buffer.drained.fire() }
            await attempts.slotFreed.wait()
        }
        buffer.drained.fire()
    }

    /// The fetcher: keeps the buffer filled.
    private func fetchJobs() async {
        var queues = configuration.queues ?? []
        var lastDiscovery = ContinuousClock.now - .seconds(60)
        var pause = Duration.milliseconds(50)
        while !isStopping() && !Task.isCancelled {
            if configuration.queues == nil, ContinuousClock.now - lastDiscovery > .seconds(3) {
                if let found = try? await driver.queues() { queues = found }
                lastDiscovery = .now
            }
            let (want, fetchNow) = wanted()
            guard fetchNow else {
                await buffer.drained.wait()
                continue
            }
            var left = want
            if queues.isEmpty {
                try? await Task.sleep(for: configuration.idleWait)
                lastDiscovery = .now - .seconds(60)
                continue
            }
            let serving = ready(queues)
            if serving.isEmpty {
                // Every queue is set aside: sleep until the first may be tried again (never a spin).
                let until = backoff.withLock { $0.nextRetry(among: queues) } ?? .now + configuration.idleWait
                try? await Task.sleep(until: min(until, .now + configuration.idleWait))
                continue
            }
            var fetched = 0
            do {
                for queue in serving where left > 0 {
                    do {
                        let began = ContinuousClock.now
                        let jobs = try await driver.fetch(
                            queue: queue, count: min(left, configuration.fetchBatch), tiers: configuration.tiersByQueue[queue],
                            worker: configuration.id)
                        buffer.noteRoundTrip(.now - began)
                        hand(jobs)
                        fetched += jobs.count
                        left -= jobs.count
                        succeeded(queue, at: .fetch)
                    } catch let error as QueueFetchError {
                        failed(error, at: .fetch)
                    }
                }
                if fetched == 0 {
                    if configuration.exitWhenEmpty, try await queuesAreDrained(queues) {
                        logger.info("queues are empty; exiting (--exit-when-empty)")
                        beginShutdown()
                        break
                    }
                    let waiting = ready(serving)
                    if waiting.isEmpty { continue }
                    // Sleep in the engine until an enqueue wakes us; the fetch rides in the same round trip.
                    let round = try await driver.awaitAndFetch(
                        queues: waiting, count: min(left, configuration.fetchBatch), tiers: configuration.tiersByQueue,
                        timeout: configuration.idleWait, worker: configuration.id)
                    for failure in round.failures { failed(failure, at: .wait) }
                    let failing = Set(round.failures.map(\.queue))
                    for queue in waiting where !failing.contains(queue) { succeeded(queue, at: .wait) }
                    if isStopping() {
                        // Shutdown began while blocked: hand the jobs straight back.
                        var byQueue: [String: [LeasedJob]] = [:]
                        for job in round.jobs { byQueue[job.queue, default: []].append(job) }
                        for (queue, leased) in byQueue { _ = try? await driver.release(leased, queue: queue) }
                        break
                    }
                    hand(round.jobs)
                }
                pause = .milliseconds(50)
            } catch {
                logger.warning("fetch failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(pause)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }

    /// Buffers leased jobs and wakes the starter.
    private func hand(_ jobs: [LeasedJob]) {
        guard !jobs.isEmpty else { return }
        buffer.append(jobs)
        attempts.slotFreed.fire()
    }

    private func ready(_ queues: [String]) -> [String] {
        let now = ContinuousClock.now
        return backoff.withLock { backoff in queues.filter { backoff.isReady($0, at: now) } }
    }

    private func failed(_ error: QueueFetchError, at site: QueueBackoff.Site) {
        let (first, pause) = backoff.withLock { $0.failed(error.queue, error: error.description, at: site, now: .now) }
        if first {
            logger.error("queue set aside: fetching from it fails; still serving the other queues", metadata: [
                "queue": "\(error.queue)", "key": "\(error.key ?? "?")", "error": "\(error)", "retry_in": "\(pause)",
            ])
        }
    }

    private func succeeded(_ queue: String, at site: QueueBackoff.Site) {
        if let fault = backoff.withLock({ $0.succeeded(queue, at: site, now: .now) }) {
            logger.notice("queue served again: fetching from it works", metadata: [
                "queue": "\(queue)", "failed_for": "\(ContinuousClock.now - fault.since)", "failures": "\(fault.failures)",
            ])
        }
    }

    private func queuesAreDrained(_ queues: [String]) async throws -> Bool {
        if !attempts.isEmpty || !buffer.isEmpty { return false }
        return try await driver.isDrained(queues: queues)
    }
}

/// Which queues are set aside after failures, and until when: a pure value, one growing pause per queue.
struct QueueBackoff: Sendable {
    /// Where a queue failed: its own fetch, or the wait on its wake-up lists.
    enum Site: Sendable, Equatable { case fetch, wait }

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
