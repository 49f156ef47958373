import JobQueue
import Logging
import Synchronization

/// Leases jobs while slots are free, and a few ahead of them when jobs are short (`PrefetchBuffer`): a plain fetch
/// per queue while work is waiting, and when none came, one wait in the engine (`awaitAndFetch`) that an enqueue ends
/// at once, with the fetch in the same round trip.
///
/// Two tasks: the fetcher keeps the buffer filled and starts at once, on its own task, the jobs it leased that find a
/// free slot (an idle worker's job starts without another hand-off); the starter moves buffered jobs into slots as
/// they free (never more running than `concurrency`), so the next fetch round trip overlaps the running jobs instead
/// of following them. At shutdown the jobs still buffered are handed back without counting an attempt.
///
/// Queues are isolated: a queue whose fetch or wake-up list fails (a key a foreign client broke) is set aside
/// with a growing pause (`QueueBackoff`), logged once when it starts failing and once when it recovers, while the
/// other queues are served as usual. A fault of the whole engine (unreachable, not ready, a read-only or
/// out-of-memory server) pauses every queue at once, with one growing pause, logged once when it starts (again if it
/// changes) and once when fetching works again. Credentials refused after start stop the worker (`refused`).
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
    /// Faults of the whole engine (key `QueueBackoff.engine`): one growing pause for every queue.
    private let enginePause: Mutex<QueueBackoff>
    private let refused: @Sendable (JobFarmError) -> Void
    private let fetching = Mutex(false)
    /// Held while buffered jobs are moved into free slots (`startBuffered`).
    private let starting = Mutex(())

    /// - Parameters:
    ///   - buffer: where jobs leased ahead wait (one sized from `configuration` when `nil`).
    ///   - start: runs a leased job (the job runner's `start`).
    ///   - beginShutdown: called when the queues are drained under `exitWhenEmpty`.
    ///   - enginePause: the pauses after faults of the whole engine (50 ms doubling to 2 s by default).
    ///   - refused: called once when the engine refuses the worker's credentials after start (a password changed
    ///     under it): retrying cannot help, the worker stops.
    init(
        driver: any WorkerDriver, configuration: WorkerConfiguration, attempts: RunningAttempts, logger: Logger,
        backoff: QueueBackoff = QueueBackoff(), buffer: PrefetchBuffer? = nil,
        enginePause: QueueBackoff = QueueBackoff(initialPause: .milliseconds(50), maximumPause: .seconds(2)),
        isStopping: @escaping @Sendable () -> Bool, beginShutdown: @escaping @Sendable () -> Void,
        refused: @escaping @Sendable (JobFarmError) -> Void = { _ in },
        start: @escaping @Sendable (LeasedJob) -> Void
    ) {
        self.enginePause = Mutex(enginePause)
        self.refused = refused
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

    /// The fault of the whole engine that pauses every queue now, if any.
    var engineFault: QueueBackoff.Fault? { enginePause.withLock { $0.faults[QueueBackoff.engine] } }

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

    /// The starter: moves buffered jobs into free slots whenever a slot frees.
    private func startJobs() async {
        while !isStopping() && fetching.withLock({ $0 }) {
            startBuffered()
            if wanted().fetchNow { buffer.drained.fire() }
            await attempts.slotFreed.wait()
        }
        buffer.drained.fire()
    }

    /// Moves buffered jobs into the free slots, on the caller's task: the fetcher right after a fetch (a job that
    /// finds a free slot starts without waking the starter task), the starter when a slot frees. Serialised, so
    /// that the two never fill the same free slot.
    private func startBuffered() {
        starting.withLock { _ in
            guard !isStopping() else { return }
            let jobs = buffer.takeToStart(configuration.concurrency - attempts.count)
            for job in jobs { start(job) }
            buffer.started(jobs.count)
        }
    }

    /// The fetcher: keeps the buffer filled.
    private func fetchJobs() async {
        var queues = configuration.queues ?? []
        var lastDiscovery = ContinuousClock.now - .seconds(60)
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
                    if round.engineFault == nil {
                        for queue in waiting where !failing.contains(queue) { succeeded(queue, at: .wait) }
                    }
                    if isStopping() {
                        // Shutdown began while blocked: hand the jobs straight back.
                        var byQueue: [String: [LeasedJob]] = [:]
                        for job in round.jobs { byQueue[job.queue, default: []].append(job) }
                        for (queue, leased) in byQueue { _ = try? await driver.release(leased, queue: queue) }
                        break
                    }
                    hand(round.jobs)
                    if let fault = round.engineFault { throw fault }
                }
                engineAnswered()
            } catch {
                await pause(after: error)
            }
        }
    }

    /// After a fault of the whole engine: stops the worker when the credentials are refused, else sleeps a growing
    /// pause, logged when the fault starts or changes (not at every retry).
    private func pause(after error: any Error) async {
        if let error = error as? JobFarmError, error.isConfigurationError, !error.isPermissionDenied {
            refused(error)
            if isStopping() { return }
        }
        let kind = Self.kind(of: error)
        let (first, pause, changed) = enginePause.withLock { backoff in
            let before = backoff.faults[QueueBackoff.engine]?.error
            let (first, pause) = backoff.failed(QueueBackoff.engine, error: kind, at: .fetch, now: .now)
            return (first, pause, before != nil && before != kind)
        }
        if first || changed {
            logger.warning("fetching paused for every queue: \(kind == "connection" ? "Redis is out of reach" : "Redis refuses it (\(kind))"); the running jobs go on. Retrying with a growing pause (up to 2 s), logged again when fetching works", metadata: [
                "error": "\(error)", "retry_in": "\(pause)",
            ])
        } else {
            logger.debug("fetch failed again; retrying", metadata: ["error": "\(error)", "retry_in": "\(pause)"])
        }
        try? await Task.sleep(for: pause)
    }

    /// A round with no fault of the engine: ends a pause, logging how long it lasted.
    private func engineAnswered() {
        if let fault = enginePause.withLock({ $0.succeeded(QueueBackoff.engine, at: .fetch, now: .now) }) {
            logger.notice("fetching works again", metadata: [
                "paused_for": "\(ContinuousClock.now - fault.since)", "failures": "\(fault.failures)", "cause": "\(fault.error)",
            ])
        }
    }

    /// What a fault of the engine is, for telling one fault from the next: `connection`, or the server's condition.
    private static func kind(of error: any Error) -> String {
        guard let error = error as? JobFarmError else { return "\(type(of: error))" }
        if let condition = error.serverCondition { return "\(condition)" }
        return error.isConnectionError ? "connection" : "error"
    }

    /// Buffers leased jobs and starts those that find a free slot at once.
    private func hand(_ jobs: [LeasedJob]) {
        guard !jobs.isEmpty else { return }
        buffer.append(jobs)
        startBuffered()
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
