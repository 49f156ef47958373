import JobProtocol
import JobQueue
import Logging
import Synchronization

/// Runs leased jobs: decodes the envelope, finds the handler, checks the attempt limit, runs the handler in a
/// task of its own (no timer: the timeout sweep watches every deadline) and hands the ending to the reporter.
final class JobRunner: Sendable {
    let registry: HandlerRegistry
    let attempts: RunningAttempts
    let reporter: OutcomeReporter
    private let driver: any WorkerDriver
    private let workerID: String
    private let logger: Logger
    /// Told each handler's run time (the prefetch target follows it).
    private let runTimes: PrefetchBuffer?
    /// Told when jobs start and end (process metrics).
    private let observer: (any WorkerObserver)?
    /// Kind and start of the attempts running, for the observer (by id and fencing token).
    private let observed = Mutex<[String: (kind: String, began: ContinuousClock.Instant)]>([:])

    init(
        registry: HandlerRegistry, attempts: RunningAttempts, reporter: OutcomeReporter, driver: any WorkerDriver, workerID: String, logger: Logger,
        runTimes: PrefetchBuffer? = nil, observer: (any WorkerObserver)? = nil
    ) {
        self.runTimes = runTimes
        self.observer = observer
        self.registry = registry
        self.attempts = attempts
        self.reporter = reporter
        self.driver = driver
        self.workerID = workerID
        self.logger = logger
    }

    /// Starts one leased job (or records at once why it cannot run).
    func start(_ job: LeasedJob) {
        let envelope: JobEnvelope
        do {
            envelope = try JobEnvelope(decoding: job.rawEnvelope)
        } catch {
            logger.warning("malformed job dead-lettered", metadata: ["job": "\(job.id)", "error": "\(error)"])
            record(job, .dead(reason: .malformed, error: "malformed envelope: \(error)"), kind: "unknown")
            return
        }
        guard let entry = registry.entry(for: envelope.kind) else {
            let error = "no handler for kind '\(envelope.kind)' on worker \(workerID) (it runs: \(registry.kinds.joined(separator: ", ")))"
            logger.warning("job of unknown kind dead-lettered", metadata: ["job": "\(job.id)", "kind": "\(envelope.kind)"])
            record(job, .dead(reason: .malformed, error: error), kind: envelope.kind)
            return
        }
        let rules = AttemptRules(
            attempt: job.attempt, maxAttempts: min(envelope.maxAttempts, entry.retryPolicy.maxAttempts),
            retryPolicy: entry.retryPolicy, timeoutMilliseconds: entry.timeoutMilliseconds(envelope.timeoutMilliseconds))
        if let outcome = AttemptDecision.admission(rules) {
            record(job, outcome, kind: envelope.kind)
            return
        }
        if let observer {
            observed.withLock { $0[job.id + " " + job.token] = (envelope.kind, .now) }
            observer.jobStarted(kind: envelope.kind, queue: job.queue, tier: job.tier, queueWait: job.queueWait)
        }
        let race = OutcomeRace()
        let deadline = ContinuousClock.now + .milliseconds(rules.timeoutMilliseconds)
        attempts.insert(job, rules: rules, deadline: deadline, race: race)
        let task = Task {
            await self.execute(job, envelope: envelope, entry: entry, rules: rules, race: race, deadline: deadline)
        }
        attempts.attach(task, to: job.id)
    }

    private func execute(
        _ job: LeasedJob, envelope: JobEnvelope, entry: HandlerRegistry.Entry, rules: AttemptRules, race: OutcomeRace,
        deadline: ContinuousClock.Instant
    ) async {
        let context = JobContext(
            id: job.id, kind: envelope.kind, queue: job.queue, tier: job.tier, attempt: job.attempt,
            maxAttempts: envelope.maxAttempts, deadline: deadline, trace: envelope.trace, logger: logger,
            progress: { [self] fraction in await self.progress(job, fraction) })
        let began = ContinuousClock.now
        do {
            let result = try await entry.run(envelope.payload, context)
            race.finish(.success(result))
        } catch {
            race.finish(.failure(error))
        }
        runTimes?.noteRun(.now - began)
        // The timeout sweep may have settled the attempt first (and recorded it) while this handler ran on.
        if let ending = race.takeEndingIfUnrecorded() {
            settle(job, rules: rules, ending: ending)
        }
        // Only this attempt's entry: the same id may have been fetched again while a stale handler ran on.
        attempts.remove(job.id, race: race)
    }

    /// Records a job that a cancel request reached while it waited in the prefetch buffer (it never ran).
    func cancelWaiting(_ job: LeasedJob, keep: Bool) {
        logger.info("job cancelled by request before it started", metadata: ["job": "\(job.id)"])
        reporter.record(job, .cancelled(error: "cancelled by request before it started", keepAsDeadLetter: keep))
    }

    /// Records how an attempt ended (once per attempt).
    func settle(_ job: LeasedJob, rules: AttemptRules, ending: AttemptEnding) {
        let reason = attempts.stopReason(of: job.id)
        var started: (kind: String, began: ContinuousClock.Instant)?
        if observer != nil { started = observed.withLock { $0.removeValue(forKey: job.id + " " + job.token) } }
        if let outcome = AttemptDecision.outcome(of: ending, stopReason: reason, rules: rules) {
            reporter.record(job, outcome)
            if let started {
                observer?.jobFinished(kind: started.kind, queue: job.queue, tier: job.tier, outcome: outcome.metricName,
                                      runTime: .now - started.began)
            }
        } else if reason == .leaseLost {
            logger.warning("lease lost; result discarded", metadata: ["job": "\(job.id)"])
        } else if reason == .shutdown {
            reporter.release(job)
        }
    }

    /// Records an outcome decided before any handler ran, and tells the observer.
    private func record(_ job: LeasedJob, _ outcome: AttemptOutcome, kind: String) {
        reporter.record(job, outcome)
        observer?.jobFinished(kind: kind, queue: job.queue, tier: job.tier, outcome: outcome.metricName, runTime: nil)
    }

    /// Sends a handler's progress at most every 100 ms per job (and always the final 100 %).
    func progress(_ job: LeasedJob, _ fraction: Double) async {
        if attempts.takeProgressTurn(job.id, fraction: fraction, now: .now) {
            _ = try? await driver.reportProgress(job, fraction: fraction)
        }
    }
}
