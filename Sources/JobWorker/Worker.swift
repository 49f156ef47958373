import Foundation
import JobProtocol
import JobQueue
import Logging
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
    /// The pool this process belongs to (`jobfarm worker --pool`), shown in the worker registry.
    public var pool: String?
    /// Told when jobs start and end (process metrics); nil for none.
    public var observer: (any WorkerObserver)?

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

/// A worker process's runtime, composed of its parts: the fetch loop leases jobs, the job runner runs them, the
/// timeout sweep ends those that overrun, the outcome reporter sends how they ended in batches, the lease keeper
/// renews their leases from a thread of its own, and the maintenance loop runs the reaper and scheduler. The
/// queue engine is reached only through a `WorkerDriver`.
///
/// A `Service`: run it in a `ServiceGroup`, which turns SIGTERM/SIGINT into a graceful shutdown.
public final class Worker: Service, Sendable {
    /// The queue engine this worker leases from.
    public let driver: any WorkerDriver
    public let registry: HandlerRegistry
    public let configuration: WorkerConfiguration
    let logger: Logger
    /// Closed at the end of `run` when the worker made it.
    private let ownsDriver: Bool

    let attempts = RunningAttempts()
    let reporter: OutcomeReporter
    let runner: JobRunner
    /// Jobs leased ahead of the free slots.
    let buffer: PrefetchBuffer
    private let stopping = Mutex(false)
    /// Why the worker stopped on its own, when it did (credentials refused after start): `run` throws it.
    private let stopCause = Mutex<JobFarmError?>(nil)

    /// A worker on any queue engine; the caller owns `driver` (the worker does not close it).
    public convenience init(driver: any WorkerDriver, registry: HandlerRegistry, configuration: WorkerConfiguration, logger: Logger = Logger(label: "jobfarm.worker")) {
        self.init(driver: driver, owningDriver: false, registry: registry, configuration: configuration, logger: logger)
    }

    /// A worker on the farm's Redis, through a `RedisWorkerDriver` of its own (closed when `run` returns).
    public convenience init(farm: JobFarm, registry: HandlerRegistry, configuration: WorkerConfiguration, logger: Logger = Logger(label: "jobfarm.worker")) {
        self.init(driver: RedisWorkerDriver(farm: farm), owningDriver: true, registry: registry, configuration: configuration, logger: logger)
    }

    private init(driver: any WorkerDriver, owningDriver: Bool, registry: HandlerRegistry, configuration: WorkerConfiguration, logger: Logger) {
        self.driver = driver
        self.ownsDriver = owningDriver
        self.registry = registry
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "worker"] = "\(configuration.id)"
        self.logger = logger
        reporter = OutcomeReporter(driver: driver, logger: logger)
        buffer = PrefetchBuffer(concurrency: configuration.concurrency, limit: configuration.fetchBatch)
        runner = JobRunner(
            registry: registry, attempts: attempts, reporter: reporter, driver: driver, workerID: configuration.id, logger: logger,
            runTimes: buffer, observer: configuration.observer)
    }

    /// Jobs finished (any outcome) since start.
    public var processedCount: Int { reporter.processedCount }

    /// Jobs whose handler runs now (the busy slots, at most `configuration.concurrency`).
    public var runningCount: Int { attempts.count }

    var isStopping: Bool { stopping.withLock { $0 } }

    /// Runs until graceful shutdown (or, with `exitWhenEmpty`, until the queues are drained).
    /// - Throws: the `JobFarmError` (`isConfigurationError`) that made the worker stop on its own: Redis refused its
    ///   credentials after start, which no retry can mend (`jobfarm worker` exits 78). The worker shut down
    ///   gracefully first.
    public func run() async throws {
        logger.info("worker starting", metadata: [
            "queues": "\(configuration.queues?.joined(separator: ",") ?? "<all>")",
            "concurrency": "\(configuration.concurrency)", "kinds": "\(registry.kinds.joined(separator: ","))",
            "redis": "\(driver.endpointDescription)",
        ])
        for advice in await driver.settingsAdvice() { logger.notice("\(advice)") }
        let keeper = LeaseKeeper(
            driver: driver, attempts: attempts, workerID: configuration.id,
            info: [
                "host": ProcessInfo.processInfo.hostName, "pid": String(getpid()),
                "queues": configuration.queues?.joined(separator: ",") ?? "*",
                "concurrency": String(configuration.concurrency), "kinds": registry.kinds.joined(separator: ","),
                "started": String(WallClock.nowMilliseconds()),
            ].merging(configuration.registryFields) { _, new in new },
            logger: logger, unreported: { [reporter] in reporter.unreportedJobs() }, processed: { [reporter] in reporter.processedCount },
            failed: { [reporter] in reporter.failedCount },
            waiting: buffer, cancelWaiting: { [runner] job, keep in runner.cancelWaiting(job, keep: keep) },
            handBack: { [reporter] job in reporter.release(job) })
        let fetchLoop = FetchLoop(
            driver: driver, configuration: configuration, attempts: attempts, logger: logger, buffer: buffer,
            isStopping: { [self] in isStopping }, beginShutdown: { [self] in beginShutdown() },
            refused: { [self] error in stop(because: error) },
            start: { [runner] job in runner.start(job) })
        // After a failed step (Redis out of reach), this worker renews its leases, those of finished jobs whose
        // outcome is still buffered included, before it reaps anything: its own work must not be taken for a crashed
        // worker's. The reporter is woken to send those outcomes at once (not awaited: a report retries for long).
        let maintenance = MaintenanceLoop(
            driver: driver, queues: configuration.queues, logger: logger, isStopping: { [self] in isStopping },
            resynchronize: { [reporter] in
                guard await keeper.renewNow() else { return false }
                reporter.ready.fire()
                return true
            },
            refused: { [self] error in stop(because: error) })
        let sweep = TimeoutSweep(attempts: attempts) { [runner] attempt, ending in
            runner.settle(attempt.job, rules: attempt.rules, ending: ending)
        }
        keeper.start()
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.reporter.run(until: { [self] in isStopping && attempts.isEmpty }) }
                group.addTask { await maintenance.run() }
                group.addTask { await sweep.run() }
                await fetchLoop.run()
                // Fetching has stopped: let running jobs finish within the grace period, then hand the rest back.
                await self.drain()
                self.stopping.withLock { $0 = true }
                self.reporter.ready.fire()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.beginShutdown()
        }
        await reporter.flush()
        await keeper.stop()
        if ownsDriver { driver.close() }
        logger.info("worker stopped", metadata: ["processed": "\(processedCount)"])
        if let cause = stopCause.withLock({ $0 }) { throw cause }
    }

    /// Stops the worker because Redis refuses its credentials (`error`), gracefully, as `beginShutdown`; logged once,
    /// and `run` throws it once stopped.
    func stop(because error: JobFarmError) {
        let first = stopCause.withLock { cause -> Bool in
            defer { cause = cause ?? error }
            return cause == nil
        }
        guard first else { return }
        logger.critical("Redis refuses this worker's credentials after start (the password or user changed, or the server it reaches is another one): retrying cannot help. Fix the password in --redis-url / JOBFARM_REDIS_URL and start the worker again. Stopping now: running jobs finish first, their outcomes are reported where the connections still work", metadata: [
            "error": "\(error)",
        ])
        beginShutdown()
    }

    /// Stops fetching; in-flight jobs get `shutdownGrace` to finish.
    public func beginShutdown() {
        let first = stopping.withLock { stopping -> Bool in
            defer { stopping = true }
            return !stopping
        }
        if first { logger.info("graceful shutdown: no new jobs; waiting for the running ones", metadata: ["grace": "\(configuration.shutdownGrace)"]) }
        attempts.slotFreed.fire()
        buffer.drained.fire()
    }

    private func drain() async {
        let deadline = ContinuousClock.now + configuration.shutdownGrace
        while !attempts.isEmpty && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let remaining = attempts.stopAllForShutdown()
        if !remaining.isEmpty {
            logger.warning("grace period over: cancelling and handing back running jobs", metadata: ["jobs": "\(remaining.count)"])
        }
        for task in remaining { task.cancel() }
        // Handlers that ignore cancellation get a few more seconds; then their leases are handed back anyway
        // (the process is about to exit, and with it the handler).
        let hardDeadline = ContinuousClock.now + .seconds(5)
        while !attempts.isEmpty && ContinuousClock.now < hardDeadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        let stuck = attempts.removeAll()
        if !stuck.isEmpty {
            logger.error("handlers ignored cancellation; handing their jobs back", metadata: ["jobs": "\(stuck.map(\.id).joined(separator: ","))"])
            var byQueue: [String: [LeasedJob]] = [:]
            for job in stuck { byQueue[job.queue, default: []].append(job) }
            for (queue, jobs) in byQueue { _ = try? await driver.release(jobs, queue: queue) }
        }
    }
}
