import JobProtocol
import JobQueue
import Logging
import Synchronization
import Testing
@testable import JobWorker

/// A queue engine in memory for the worker's parts (pure unit tests: no Redis, no worker process).
final class FakeDriver: WorkerDriver {
    struct Calls {
        var fetches: [String] = []
        var waits: [[String]] = []
        var reports: [(queue: String, count: Int)] = []
        var releases: [(queue: String, count: Int)] = []
    }

    let calls = Mutex(Calls())
    /// Per queue: what a fetch does (default: no jobs).
    let fetchBehaviour = Mutex<[String: @Sendable () throws -> [LeasedJob]]>([:])
    /// Queues whose wake-up lists are broken (the wait answers at once with an error for them).
    let brokenWakeUp = Mutex<Set<String>>([])
    /// Per queue: what a scheduler step does (default: nothing due); every call is counted in `promotes`.
    let promoteBehaviour = Mutex<[String: @Sendable () throws -> Void]>([:])
    let promotes = Mutex<[String: Int]>([:])
    let maintenance: Duration

    init(maintenanceInterval: Duration = .milliseconds(500)) {
        maintenance = maintenanceInterval
    }

    var leaseDuration: Duration { .seconds(10) }
    var heartbeatInterval: Duration { .seconds(2) }
    var maintenanceInterval: Duration { maintenance }
    var endpointDescription: String { "fake" }

    func queues() async throws -> [String] { [] }
    func fetch(queue: String, count: Int, tiers: [String]?, worker: String) async throws -> [LeasedJob] {
        calls.withLock { $0.fetches.append(queue) }
        return try fetchBehaviour.withLock { $0[queue] }?() ?? []
    }
    func awaitAndFetch(queues: [String], count: Int, tiers: [String: [String]], timeout: Duration, worker: String) async throws -> FetchRound {
        calls.withLock { $0.waits.append(queues) }
        let broken = brokenWakeUp.withLock { $0 }.intersection(queues)
        if broken.isEmpty { try await Task.sleep(for: timeout) }
        return FetchRound(jobs: [], failures: broken.sorted().map { QueueFetchError(queue: $0, key: "\($0):signal", message: "WRONGTYPE") })
    }
    func report(_ outcomes: [(job: LeasedJob, outcome: AttemptOutcome)], queue: String) async throws -> [String] {
        calls.withLock { $0.reports.append((queue, outcomes.count)) }
        return []
    }
    func release(_ jobs: [LeasedJob], queue: String) async throws -> Int {
        calls.withLock { $0.releases.append((queue, jobs.count)) }
        return jobs.count
    }
    func reportProgress(_ job: LeasedJob, fraction: Double) async throws -> Bool { true }
    func renewLeasesBlocking(_ jobs: [LeasedJob]) throws -> [String: JobFarm.LeaseState] { [:] }
    func registerWorkerBlocking(id: String, info: [String: String]) throws {}
    func deregisterWorkerBlocking(id: String) throws {}
    func reapExpiredLeases(queue: String) async throws -> ReapResult { ReapResult() }
    func promoteDueJobs(queue: String) async throws -> (moved: Int, nextDue: Duration?) {
        promotes.withLock { $0[queue, default: 0] += 1 }
        try promoteBehaviour.withLock { $0[queue] }?()
        return (0, nil)
    }
    func isDrained(queues: [String]) async throws -> Bool { false }
    func settingsAdvice() async -> [String] { [] }
    func close() {}
}

func leasedJob(_ id: String, queue: String = "default", attempt: Int = 1) -> LeasedJob {
    LeasedJob(id: id, queue: queue, tier: "standard", token: "1", attempt: attempt, rawEnvelope: "")
}

private var quietLogger: Logger {
    var logger = Logger(label: "test.parts")
    logger.logLevel = .critical
    return logger
}

@Suite("Worker parts")
struct WorkerPartsTests {
    // MARK: - Attempt decision

    static let policy = RetryPolicy(base: .seconds(1), multiplier: 2, cap: .seconds(300), maxAttempts: 5, jitter: 0)

    func decide(_ ending: AttemptEnding, _ reason: StopReason?, attempt: Int = 1, max: Int = 3) -> AttemptOutcome? {
        AttemptDecision.outcome(
            of: ending, stopReason: reason,
            rules: AttemptRules(attempt: attempt, maxAttempts: max, retryPolicy: Self.policy, timeoutMilliseconds: 500))
    }

    @Test func decisionTableCoversEveryEndingAndStopReason() {
        let reasons: [StopReason?] = [nil, .timeout, .cancelRequested(keep: false), .cancelRequested(keep: true), .leaseLost, .shutdown]
        let endings: [(String, AttemptEnding)] = [
            ("success", .success("{}")), ("failure", .failure(JobError.retryable("boom"))),
            ("nonRetryable", .failure(JobError.nonRetryable("bad input"))), ("timedOut", .timedOut),
        ]
        for attempt in [1, 3] {
            let last = attempt == 3
            for (name, ending) in endings {
                for reason in reasons {
                    let outcome = decide(ending, reason, attempt: attempt)
                    let expected: AttemptOutcome?
                    switch (name, reason) {
                    case (_, .leaseLost?): expected = nil
                    case ("success", _): expected = .succeeded(result: "{}")
                    case (_, .shutdown?): expected = nil
                    case (_, .cancelRequested(let keep)?): expected = .cancelled(error: "cancelled by request while running", keepAsDeadLetter: keep)
                    case ("timedOut", _), (_, .timeout?):
                        expected = last ? .dead(reason: .timeout, error: "timed out after 500 ms")
                            : .retry(error: "timed out after 500 ms", delay: .seconds(1))
                    case ("nonRetryable", nil): expected = .dead(reason: .nonRetryable, error: "bad input")
                    case ("failure", nil): expected = last ? .dead(reason: .exhausted, error: "boom") : .retry(error: "boom", delay: .seconds(1))
                    default: Issue.record("case not in the table: \(name) \(String(describing: reason))"); continue
                    }
                    #expect(outcome == expected, "\(name), \(String(describing: reason)), attempt \(attempt)")
                }
            }
        }
        // The delay follows the policy: attempt 2 of 5 waits base × 2.
        #expect(decide(.failure(JobError.retryable("x")), nil, attempt: 2, max: 5) == .retry(error: "x", delay: .seconds(2)))
    }

    @Test func admissionRefusesAttemptsBeyondTheLimit() {
        let rules = { (attempt: Int) in AttemptRules(attempt: attempt, maxAttempts: 3, retryPolicy: Self.policy, timeoutMilliseconds: 1) }
        #expect(AttemptDecision.admission(rules(3)) == nil)
        guard case .dead(.exhausted, let error)? = AttemptDecision.admission(rules(4)) else {
            Issue.record("attempt 4 of 3 must be dead-lettered as exhausted")
            return
        }
        #expect(error.contains("attempt 4 exceeds the limit of 3"))
    }

    // MARK: - Timeout sweep

    @Test func timeoutSweepSettlesOverdueAttemptsOnce() {
        let attempts = RunningAttempts()
        let rules = AttemptRules(attempt: 1, maxAttempts: 3, retryPolicy: Self.policy, timeoutMilliseconds: 100)
        let now = ContinuousClock.now
        attempts.insert(leasedJob("late"), rules: rules, deadline: now - .milliseconds(1), race: OutcomeRace())
        attempts.insert(leasedJob("on-time"), rules: rules, deadline: now + .seconds(60), race: OutcomeRace())
        let cancelled = OutcomeRace()
        attempts.insert(leasedJob("cancelled"), rules: rules, deadline: now - .milliseconds(1), race: cancelled)
        attempts.stop("cancelled", because: .cancelRequested(keep: false))
        let finished = OutcomeRace()
        finished.finish(.success("{}"))
        attempts.insert(leasedJob("finished"), rules: rules, deadline: now - .milliseconds(1), race: finished)
        _ = finished.takeEndingIfUnrecorded()  // the handler's ending was already recorded

        let settled = Mutex<[String: AttemptEnding]>([:])
        let sweep = TimeoutSweep(attempts: attempts) { attempt, ending in settled.withLock { $0[attempt.job.id] = ending } }
        #expect(sweep.sweep(now: now) == 2)
        let ids = settled.withLock { Set($0.keys) }
        #expect(ids == ["late", "cancelled"])
        #expect(attempts.stopReason(of: "late") == .timeout)
        #expect(attempts.stopReason(of: "cancelled") == .cancelRequested(keep: false), "a stop in progress keeps its reason")
        #expect(attempts.stopReason(of: "on-time") == nil)
        // A recorded timeout is no longer renewed (nor is an attempt whose ending was recorded as its deadline passed).
        #expect(Set(attempts.renewable().map(\.id)) == ["on-time", "cancelled"])
        #expect(sweep.sweep(now: now + .seconds(1)) == 0, "nothing is settled twice")
    }

    // MARK: - Outcome reporter

    @Test func reporterSendsOneReportPerQueuePerFlush() async {
        let driver = FakeDriver()
        let reporter = OutcomeReporter(driver: driver, logger: quietLogger)
        for index in 0..<250 { reporter.record(leasedJob("a\(index)", queue: "a"), .succeeded(result: "{}")) }
        for index in 0..<40 { reporter.record(leasedJob("b\(index)", queue: "b"), .retry(error: "x", delay: .zero)) }
        reporter.release(leasedJob("r1", queue: "a"))
        reporter.release(leasedJob("r2", queue: "a"))
        #expect(reporter.processedCount == 290)
        await reporter.flush()
        let calls = driver.calls.withLock { $0 }
        #expect(calls.reports.map(\.queue) == ["a", "b"])
        #expect(calls.reports.map(\.count) == [250, 40])
        #expect(calls.releases.map(\.count) == [2])
        #expect(reporter.isIdle)
        await reporter.flush()
        #expect(driver.calls.withLock { $0.reports.count } == 2, "an empty flush sends nothing")
    }

    @Test func reporterLoopFlushesWhatGathersAndEndsWhenFinished() async {
        let driver = FakeDriver()
        let reporter = OutcomeReporter(driver: driver, logger: quietLogger)
        let finished = Mutex(false)
        let loop = Task { await reporter.run(until: { finished.withLock { $0 } }) }
        reporter.record(leasedJob("1"), .succeeded(result: "{}"))
        for _ in 0..<200 where driver.calls.withLock({ $0.reports.isEmpty }) { try? await Task.sleep(for: .milliseconds(5)) }
        #expect(driver.calls.withLock { $0.reports.map(\.count) } == [1])
        finished.withLock { $0 = true }
        reporter.ready.fire()
        await loop.value
    }

    // MARK: - Fetch loop

    @Test func backoffGrowsIsCappedLogsOnceAndRecovers() {
        var backoff = QueueBackoff(initialPause: .milliseconds(100), maximumPause: .seconds(1))
        let now = ContinuousClock.now
        var firsts: [Bool] = []
        var pauses: [Duration] = []
        for step in 0..<6 {
            let (first, pause) = backoff.failed("q", error: "WRONGTYPE", at: .wait, now: now + .seconds(step))
            firsts.append(first)
            pauses.append(pause)
        }
        #expect(firsts == [true, false, false, false, false, false])
        #expect(pauses == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        #expect(!backoff.isReady("q", at: now + .seconds(5)))
        #expect(backoff.isReady("q", at: now + .seconds(6)))
        #expect(backoff.isReady("other", at: now))
        #expect(backoff.succeeded("q", at: .fetch, now: now) == nil, "a plain fetch does not prove the wake-up lists work")
        #expect(backoff.succeeded("q", at: .wait, now: now)?.failures == 6)
        #expect(backoff.faults.isEmpty)
        #expect(backoff.failed("q", error: "again", at: .fetch, now: now).first, "a new run of failures is logged again")
    }

    @Test func aFailingQueueIsSetAsideWhileTheOthersAreServed() async throws {
        let driver = FakeDriver()
        let started = Mutex<[String]>([])
        let served = Mutex(0)
        driver.fetchBehaviour.withLock {
            $0["bad"] = { throw QueueFetchError(queue: "bad", key: "bad:t:standard", message: "WRONGTYPE Operation against a key holding the wrong kind of value") }
            $0["good"] = {
                let n = served.withLock { value -> Int in
                    value += 1
                    return value
                }
                return n <= 3 ? [leasedJob("g\(n)", queue: "good")] : []
            }
        }
        let stopping = Mutex(false)
        let attempts = RunningAttempts()
        let loop = FetchLoop(
            driver: driver, configuration: WorkerConfiguration(queues: ["bad", "good"], concurrency: 4, idleWait: .milliseconds(50)),
            attempts: attempts, logger: quietLogger, backoff: QueueBackoff(initialPause: .milliseconds(100), maximumPause: .milliseconds(400)),
            isStopping: { stopping.withLock { $0 } }, beginShutdown: {}, start: { job in started.withLock { $0.append(job.id) } })
        let task = Task { await loop.run() }
        try await Task.sleep(for: .milliseconds(1200))
        stopping.withLock { $0 = true }
        await task.value
        #expect(started.withLock { $0 } == ["g1", "g2", "g3"], "the good queue is served")
        let calls = driver.calls.withLock { $0 }
        let badFetches = calls.fetches.filter { $0 == "bad" }.count
        // 100 + 200 + 400 + 400 ms of pauses in 1.2 s: a handful of tries, not thousands.
        #expect((2...8).contains(badFetches), "bad queue tried \(badFetches) times")
        #expect(calls.waits.allSatisfy { !$0.contains("bad") || $0 == ["bad", "good"] } )
        #expect(calls.waits.contains(["good"]), "the wait goes on for the good queue alone")
        #expect(loop.faults["bad"]?.failures == badFetches)
    }

    @Test func aBrokenWakeUpListMakesABackedOffWaitNotASpin() async throws {
        let driver = FakeDriver()
        driver.brokenWakeUp.withLock { $0 = ["q"] }
        let stopping = Mutex(false)
        let loop = FetchLoop(
            driver: driver, configuration: WorkerConfiguration(queues: ["q"], concurrency: 4, idleWait: .milliseconds(50)),
            attempts: RunningAttempts(), logger: quietLogger, backoff: QueueBackoff(initialPause: .milliseconds(100), maximumPause: .milliseconds(400)),
            isStopping: { stopping.withLock { $0 } }, beginShutdown: {}, start: { _ in })
        let task = Task { await loop.run() }
        try await Task.sleep(for: .milliseconds(1200))
        let waits = driver.calls.withLock { $0.waits.count }
        #expect((2...8).contains(waits), "\(waits) waits in 1.2 s")
        #expect(loop.faults["q"]?.site == .wait)
        // Repaired: the next wait works and the queue is served again.
        driver.brokenWakeUp.withLock { $0 = [] }
        try await Task.sleep(for: .milliseconds(800))
        stopping.withLock { $0 = true }
        await task.value
        #expect(loop.faults.isEmpty)
    }
}
