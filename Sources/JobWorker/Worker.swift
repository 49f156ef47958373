import Foundation
import JobProtocol
import JobQueue
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// Settings of one worker process.
public struct WorkerConfiguration: Sendable {
    /// Queues to serve, in preference order; `nil` serves every registered queue (re-read every few seconds).
    public var queues: [String]?
    /// Per queue, the tiers to serve (all configured tiers when a queue is absent).
    public var tiersByQueue: [String: [String]]
    /// Jobs run at once in this process.
    public var concurrency: Int
    /// Most jobs leased in one fetch.
    public var fetchBatch: Int
    /// Stop once every served queue is empty (nothing queued, scheduled or in flight).
    public var exitWhenEmpty: Bool
    /// On SIGTERM: how long in-flight jobs may finish before they are cancelled and handed back.
    public var shutdownGrace: Duration
    /// Longest block on the wake-up list before re-checking (a safety net, not a poll: enqueues wake at once).
    public var idleWait: Duration
    /// Identifies this process in leases, logs and the worker registry.
    public var id: String

    public init(
        queues: [String]? = nil, tiersByQueue: [String: [String]] = [:], concurrency: Int = 10, fetchBatch: Int = 100, exitWhenEmpty: Bool = false,
        shutdownGrace: Duration = .seconds(25), idleWait: Duration = .seconds(1), id: String? = nil
    ) {
        self.queues = queues
        self.tiersByQueue = tiersByQueue
        self.concurrency = concurrency
        self.fetchBatch = fetchBatch
        self.exitWhenEmpty = exitWhenEmpty
        self.shutdownGrace = shutdownGrace
        self.idleWait = idleWait
        self.id = id ?? WorkerConfiguration.makeID()
    }

    static func makeID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        return "\(host)-\(getpid())-\(suffix)"
    }
}

/// A worker process's runtime: fetches leased jobs, runs their handlers with a timeout, reports outcomes in
/// batches, renews leases from a thread of its own, runs the reaper and scheduler, and shuts down gracefully.
///
/// A `Service`: run it in a `ServiceGroup`, which turns SIGTERM/SIGINT into a graceful shutdown.
public final class Worker: Service, Sendable {
    public let farm: JobFarm
    public let registry: HandlerRegistry
    public let configuration: WorkerConfiguration
    let logger: Logger

    /// Why a running handler was cancelled.
    enum StopReason: Sendable { case timeout, cancelRequested(keep: Bool), leaseLost, shutdown }

    struct Active: Sendable {
        let job: LeasedJob
        var task: Task<Void, Never>?
        var stopReason: StopReason?
        /// When the attempt times out.
        var deadline: ContinuousClock.Instant
        /// Settles the attempt once: the handler's ending or the timeout, whichever comes first.
        let race: OutcomeRace
        var lastProgress: (time: ContinuousClock.Instant, value: Double) = (.now - .seconds(1), -1)
    }

    struct State: Sendable {
        var active: [String: Active] = [:]
        var outcomes: [(job: LeasedJob, outcome: AttemptOutcome)] = []
        /// Jobs to hand back (shutdown), sent with the next flush.
        var releases: [LeasedJob] = []
        var stopping = false
        var processed = 0
    }

    let state = Mutex(State())
    let slotFreed = AsyncSignal()
    let outcomesReady = AsyncSignal()
    private let fetchClient: RedisClient
    private let reportClient: RedisClient
    private let maintenanceClient: RedisClient
    private let progressClient: RedisClient

    public init(farm: JobFarm, registry: HandlerRegistry, configuration: WorkerConfiguration, logger: Logger = Logger(label: "jobfarm.worker")) {
        self.farm = farm
        self.registry = registry
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "worker"] = "\(configuration.id)"
        self.logger = logger
        let redis = farm.configuration.redis
        self.fetchClient = RedisClient(configuration: redis, name: "fetch")
        self.reportClient = RedisClient(configuration: redis, name: "report")
        self.maintenanceClient = RedisClient(configuration: redis, name: "maintenance")
        self.progressClient = RedisClient(configuration: redis, name: "progress")
    }

    /// Jobs finished (any outcome) since start.
    public var processedCount: Int { state.withLock { $0.processed } }

    /// Runs until graceful shutdown (or, with `exitWhenEmpty`, until the queues are drained).
    public func run() async throws {
        logger.info("worker starting", metadata: [
            "queues": "\(configuration.queues?.joined(separator: ",") ?? "<all>")",
            "concurrency": "\(configuration.concurrency)", "kinds": "\(registry.kinds.joined(separator: ","))",
            "redis": "\(farm.configuration.redis)",
        ])
        for advice in await farm.settingsAdvice() { logger.notice("\(advice)") }
        let keeper = LeaseKeeper(worker: self)
        keeper.start()
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.reportLoop() }
                group.addTask { await self.maintenanceLoop() }
                group.addTask { await self.timeoutLoop() }
                await self.fetchLoop()
                // Fetching has stopped: let running jobs finish within the grace period, then hand the rest back.
                await self.drain()
                self.state.withLock { $0.stopping = true }
                self.outcomesReady.fire()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.beginShutdown()
        }
        await flushOutcomes()
        await keeper.stop()
        logger.info("worker stopped", metadata: ["processed": "\(processedCount)"])
    }

    /// Stops fetching; in-flight jobs get `shutdownGrace` to finish.
    public func beginShutdown() {
        let first = state.withLock { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        if first { logger.info("graceful shutdown: no new jobs; waiting for the running ones", metadata: ["grace": "\(configuration.shutdownGrace)"]) }
        slotFreed.fire()
    }

    var isStopping: Bool { state.withLock { $0.stopping } }

    // MARK: - Fetch

    private func fetchLoop() async {
        var queues = configuration.queues ?? []
        var lastDiscovery = ContinuousClock.now - .seconds(60)
        var pause = Duration.milliseconds(50)
        while !isStopping && !Task.isCancelled {
            if configuration.queues == nil, ContinuousClock.now - lastDiscovery > .seconds(3) {
                if let found = try? await farm.queues() { queues = found }
                lastDiscovery = .now
            }
            var free = configuration.concurrency - state.withLock { $0.active.count }
            if free <= 0 {
                await slotFreed.wait()
                continue
            }
            if queues.isEmpty {
                try? await Task.sleep(for: configuration.idleWait)
                lastDiscovery = .now - .seconds(60)
                continue
            }
            var fetched = 0
            do {
                for queue in queues where free > 0 {
                    let jobs = try await farm.fetch(queue: queue, count: min(free, configuration.fetchBatch), worker: configuration.id, tiers: configuration.tiersByQueue[queue], on: fetchClient)
                    for job in jobs { start(job) }
                    fetched += jobs.count
                    free -= jobs.count
                }
                if fetched == 0 {
                    if configuration.exitWhenEmpty, try await queuesAreEmpty(queues) {
                        logger.info("queues are empty; exiting (--exit-when-empty)")
                        beginShutdown()
                        break
                    }
                    // Sleep in Redis until an enqueue wakes us; the fetch rides in the same round trip.
                    let jobs = try await farm.awaitAndFetch(
                        queues: queues, count: min(free, configuration.fetchBatch), worker: configuration.id,
                        tiers: configuration.tiersByQueue, timeout: configuration.idleWait, on: fetchClient)
                    if isStopping {
                        // Shutdown began while blocked: hand the jobs straight back.
                        var byQueue: [String: [LeasedJob]] = [:]
                        for job in jobs { byQueue[job.queue, default: []].append(job) }
                        for (queue, leased) in byQueue { _ = try? await farm.release(leased, queue: queue, on: fetchClient) }
                        break
                    }
                    for job in jobs { start(job) }
                }
                pause = .milliseconds(50)
            } catch {
                logger.warning("fetch failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(pause)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }

    private func queuesAreEmpty(_ queues: [String]) async throws -> Bool {
        if state.withLock({ !$0.active.isEmpty }) { return false }
        let stats = try await farm.stats(queues: queues)
        return stats.allSatisfy { $0.depth == 0 && $0.scheduled == 0 && $0.inflight == 0 }
    }

    // MARK: - Running one job

    /// Starts one job: one task per job, no timer of its own (the timeout loop watches every deadline).
    private func start(_ job: LeasedJob) {
        let envelope: JobEnvelope
        do {
            envelope = try JobEnvelope(decoding: job.rawEnvelope)
        } catch {
            logger.warning("malformed job dead-lettered", metadata: ["job": "\(job.id)", "error": "\(error)"])
            record(job, .dead(reason: .malformed, error: "malformed envelope: \(error)"))
            return
        }
        guard let entry = registry.entry(for: envelope.kind) else {
            let error = "no handler for kind '\(envelope.kind)' on worker \(configuration.id) (it runs: \(registry.kinds.joined(separator: ", ")))"
            logger.warning("job of unknown kind dead-lettered", metadata: ["job": "\(job.id)", "kind": "\(envelope.kind)"])
            record(job, .dead(reason: .malformed, error: error))
            return
        }
        let maxAttempts = min(envelope.maxAttempts, entry.retryPolicy.maxAttempts)
        if job.attempt > maxAttempts {
            // Attempts whose worker died still count: a job that keeps losing its lease must not run forever.
            record(job, .dead(reason: .exhausted, error: "attempt \(job.attempt) exceeds the limit of \(maxAttempts) attempts (earlier attempts lost their lease)"))
            return
        }
        let race = OutcomeRace()
        let deadline = ContinuousClock.now + .milliseconds(envelope.timeoutMilliseconds)
        state.withLock { $0.active[job.id] = Active(job: job, task: nil, stopReason: nil, deadline: deadline, race: race) }
        let task = Task {
            await self.execute(job, envelope: envelope, entry: entry, race: race, deadline: deadline)
        }
        state.withLock { $0.active[job.id]?.task = task }
    }

    private func execute(_ job: LeasedJob, envelope: JobEnvelope, entry: HandlerRegistry.Entry, race: OutcomeRace, deadline: ContinuousClock.Instant) async {
        let context = JobContext(
            id: job.id, kind: envelope.kind, queue: job.queue, tier: job.tier, attempt: job.attempt,
            maxAttempts: envelope.maxAttempts, deadline: deadline, trace: envelope.trace, logger: logger,
            progress: { [self] fraction in await self.progress(job, fraction) })
        do {
            let result = try await entry.run(envelope.payload, context)
            race.finish(.success(result))
        } catch {
            race.finish(.failure(error))
        }
        // The timeout loop may have settled the attempt first (and recorded it) while this handler ran on.
        if let ending = race.takeEndingIfUnrecorded() {
            settle(job, envelope: envelope, entry: entry, ending: ending)
        }
        // Only this attempt's entry: the same id may have been fetched again while a stale handler ran on.
        state.withLock { state in
            if state.active[job.id]?.race === race { state.active[job.id] = nil }
        }
        slotFreed.fire()
    }

    /// Records how an attempt ended (once per attempt).
    private func settle(_ job: LeasedJob, envelope: JobEnvelope, entry: HandlerRegistry.Entry, ending: OutcomeRace.Ending) {
        let reason = state.withLock { $0.active[job.id]?.stopReason }
        if let outcome = decide(job, envelope: envelope, entry: entry, ending: ending, reason: reason) {
            record(job, outcome)
        } else if case .shutdown = reason {
            releaseOnShutdown(job)
        }
    }

    private func releaseOnShutdown(_ job: LeasedJob) {
        state.withLock { $0.releases.append(job) }
        outcomesReady.fire()
    }

    /// Ends attempts that run past their timeout: records the timeout at once and cancels the handler, which
    /// keeps its slot until it actually returns. One loop for all jobs instead of a timer per job.
    private func timeoutLoop() async {
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let expired = state.withLock { state -> [(LeasedJob, OutcomeRace, Task<Void, Never>?)] in
                var expired: [(LeasedJob, OutcomeRace, Task<Void, Never>?)] = []
                for (id, active) in state.active where active.deadline <= now {
                    // A job being stopped (cancel, shutdown, lost lease) keeps its reason; its timeout still ends
                    // the attempt, so a handler that ignores cancellation cannot hold the job forever.
                    if case .timeout? = active.stopReason { continue }
                    if active.stopReason == nil { state.active[id]?.stopReason = .timeout }
                    expired.append((active.job, active.race, active.task))
                }
                return expired
            }
            for (job, race, task) in expired {
                race.finish(.timedOut)
                task?.cancel()
                if let ending = race.takeEndingIfUnrecorded(), let envelope = try? JobEnvelope(decoding: job.rawEnvelope),
                    let entry = registry.entry(for: envelope.kind)
                {
                    settle(job, envelope: envelope, entry: entry, ending: ending)
                }
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Maps how an attempt ended to what is recorded; `nil` records nothing (lease lost, or handed back).
    private func decide(
        _ job: LeasedJob, envelope: JobEnvelope, entry: HandlerRegistry.Entry, ending: OutcomeRace.Ending, reason: StopReason?
    ) -> AttemptOutcome? {
        let maxAttempts = min(envelope.maxAttempts, entry.retryPolicy.maxAttempts)
        func failure(_ message: String, deadReason: DeadLetterReason) -> AttemptOutcome {
            if job.attempt >= maxAttempts { return .dead(reason: deadReason, error: message) }
            return .retry(error: message, delay: entry.retryPolicy.delay(afterAttempt: job.attempt))
        }
        switch (ending, reason) {
        case (_, .leaseLost?):
            logger.warning("lease lost; result discarded", metadata: ["job": "\(job.id)"])
            return nil
        case (.success(let result), _):
            // A result that arrived first wins over a cancel, a shutdown or a timeout that came after it.
            return .succeeded(result: result)
        case (_, .shutdown?):
            return nil
        case (_, .cancelRequested(let keep)?):
            return .cancelled(error: "cancelled by request while running", keepAsDeadLetter: keep)
        case (.timedOut, _), (_, .timeout?):
            return failure("timed out after \(envelope.timeoutMilliseconds) ms", deadReason: .timeout)
        case (.failure(let error), nil):
            if let jobError = error as? JobError, case .nonRetryable(let message) = jobError {
                return .dead(reason: .nonRetryable, error: message)
            }
            let exhausted: DeadLetterReason = .exhausted
            return failure("\(error)", deadReason: exhausted)
        }
    }

    func record(_ job: LeasedJob, _ outcome: AttemptOutcome) {
        state.withLock {
            $0.outcomes.append((job, outcome))
            $0.processed += 1
        }
        outcomesReady.fire()
    }

    // MARK: - Reporting outcomes

    private func reportLoop() async {
        while true {
            await outcomesReady.wait()
            await flushOutcomes()
            if state.withLock({ $0.stopping && $0.active.isEmpty && $0.outcomes.isEmpty && $0.releases.isEmpty }) { return }
            if Task.isCancelled && state.withLock({ $0.outcomes.isEmpty && $0.releases.isEmpty }) { return }
        }
    }

    /// Sends every buffered outcome: one pipelined round trip per queue, however many jobs finished.
    func flushOutcomes() async {
        let (batch, releases) = state.withLock { state -> ([(job: LeasedJob, outcome: AttemptOutcome)], [LeasedJob]) in
            defer {
                state.outcomes = []
                state.releases = []
            }
            return (state.outcomes, state.releases)
        }
        if !releases.isEmpty {
            var byQueue: [String: [LeasedJob]] = [:]
            for job in releases { byQueue[job.queue, default: []].append(job) }
            for (queue, jobs) in byQueue {
                do { _ = try await farm.release(jobs, queue: queue, on: reportClient) } catch {
                    logger.error("could not hand jobs back; their leases will expire and they run again", metadata: ["error": "\(error)"])
                }
            }
        }
        if batch.isEmpty { return }
        var byQueue: [String: [(job: LeasedJob, outcome: AttemptOutcome)]] = [:]
        for item in batch { byQueue[item.job.queue, default: []].append(item) }
        for (queue, items) in byQueue {
            do {
                let refused = try await farm.report(items, queue: queue, on: reportClient)
                if !refused.isEmpty {
                    logger.warning("outcomes refused: the lease had been lost (another worker owns the job now)", metadata: ["jobs": "\(refused.joined(separator: ","))"])
                }
            } catch {
                // Only after an hour of failed retries: the leases will expire and the jobs run again.
                logger.error("could not record outcomes", metadata: ["error": "\(error)", "jobs": "\(items.count)"])
            }
        }
    }

    // MARK: - Shutdown

    private func drain() async {
        let deadline = ContinuousClock.now + configuration.shutdownGrace
        while state.withLock({ !$0.active.isEmpty }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let remaining = state.withLock { state -> [Task<Void, Never>] in
            var tasks: [Task<Void, Never>] = []
            for (id, active) in state.active {
                if state.active[id]?.stopReason == nil { state.active[id]?.stopReason = .shutdown }
                if let task = active.task { tasks.append(task) }
            }
            return tasks
        }
        if !remaining.isEmpty {
            logger.warning("grace period over: cancelling and handing back running jobs", metadata: ["jobs": "\(remaining.count)"])
        }
        for task in remaining { task.cancel() }
        // Handlers that ignore cancellation get a few more seconds; then their leases are handed back anyway
        // (the process is about to exit, and with it the handler).
        let hardDeadline = ContinuousClock.now + .seconds(5)
        while state.withLock({ !$0.active.isEmpty }) && ContinuousClock.now < hardDeadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        let stuck = state.withLock { state -> [LeasedJob] in
            defer { state.active = [:] }
            return state.active.values.map(\.job)
        }
        if !stuck.isEmpty {
            logger.error("handlers ignored cancellation; handing their jobs back", metadata: ["jobs": "\(stuck.map(\.id).joined(separator: ","))"])
            var byQueue: [String: [LeasedJob]] = [:]
            for job in stuck { byQueue[job.queue, default: []].append(job) }
            for (queue, jobs) in byQueue { _ = try? await farm.release(jobs, queue: queue, on: reportClient) }
        }
    }

    // MARK: - Maintenance (reaper + scheduler)

    private func maintenanceLoop() async {
        let interval = farm.configuration.maintenanceInterval
        while !isStopping && !Task.isCancelled {
            var queues = configuration.queues ?? []
            if configuration.queues == nil { queues = (try? await farm.queues()) ?? [] }
            var sleep = interval
            for queue in queues {
                do {
                    let (moved, nextDue) = try await farm.promoteDueJobs(queue: queue, on: maintenanceClient)
                    let (requeued, poisoned) = try await farm.reapExpiredLeases(queue: queue, on: maintenanceClient)
                    if requeued + poisoned > 0 {
                        logger.warning("reaped expired leases", metadata: ["queue": "\(queue)", "requeued": "\(requeued)", "poison": "\(poisoned)"])
                    }
                    if moved > 0 { logger.debug("promoted due jobs", metadata: ["queue": "\(queue)", "count": "\(moved)"]) }
                    if let nextDue, nextDue < sleep { sleep = max(.milliseconds(5), nextDue) }
                } catch {
                    logger.debug("maintenance step failed", metadata: ["queue": "\(queue)", "error": "\(error)"])
                }
            }
            // Jitter spreads the steps of many workers over the interval.
            let jitter = Duration.milliseconds(Int64.random(in: 0...max(1, sleep.milliseconds / 5)))
            try? await Task.sleep(for: sleep + jitter)
        }
    }

    // MARK: - Leases (called from the LeaseKeeper thread)

    /// Leases to renew: every running handler's, even one being stopped (a handler that is slow to honour
    /// cancellation keeps its lease until it ends), except those already lost.
    func activeJobs() -> [LeasedJob] {
        state.withLock { state in
            state.active.values.filter { active in
                switch active.stopReason {
                case .leaseLost?, .timeout?: return false  // nothing left to renew: lost, or already recorded
                default: return true
                }
            }.map(\.job)
        }
    }

    func stop(_ id: String, because reason: StopReason) {
        let task = state.withLock { state -> Task<Void, Never>? in
            guard state.active[id] != nil, state.active[id]?.stopReason == nil else { return nil }
            state.active[id]?.stopReason = reason
            return state.active[id]?.task
        }
        task?.cancel()
    }

    /// Sends a handler's progress at most every 100 ms per job (and always the final 100 %).
    func progress(_ job: LeasedJob, _ fraction: Double) async {
        let now = ContinuousClock.now
        let send = state.withLock { state -> Bool in
            guard var active = state.active[job.id] else { return false }
            guard fraction != active.lastProgress.value,
                now - active.lastProgress.time >= .milliseconds(100) || fraction >= 1
            else { return false }
            active.lastProgress = (now, fraction)
            state.active[job.id] = active
            return true
        }
        if send { _ = try? await farm.reportProgress(job, fraction: fraction, on: progressClient) }
    }
}

/// The first of: the handler's result, its error, or the timeout; handed out once to be recorded.
final class OutcomeRace: Sendable {
    enum Ending: Sendable {
        case success(String)
        case failure(any Error)
        case timedOut
    }

    private let state = Mutex<(ending: Ending?, taken: Bool)>((nil, false))

    /// Sets the ending if none is set yet.
    func finish(_ ending: Ending) {
        state.withLock { state in
            if state.ending == nil { state.ending = ending }
        }
    }

    /// The ending, the first time it is asked for once set; nil afterwards (already recorded).
    func takeEndingIfUnrecorded() -> Ending? {
        state.withLock { state in
            guard let ending = state.ending, !state.taken else { return nil }
            state.taken = true
            return ending
        }
    }
}

/// A wake-up flag for async loops: `fire()` wakes the waiter, or the next `wait()` if none is waiting.
public final class AsyncSignal: Sendable {
    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    public init() {}

    public func fire() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.pending = true
            return nil
        }
        waiter?.resume()
    }

    /// Waits for the next `fire()` (returns at once if one happened since the last wait). One waiter at a time.
    public func wait() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                if state.pending {
                    state.pending = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }
}
