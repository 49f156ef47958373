import Dispatch
import Foundation
import JobQueue
import Logging
import Synchronization

/// Renews the leases of a worker's running jobs on a thread of its own, so that handlers that keep every
/// core of the cooperative pool busy (BLAS) never starve the heartbeat. Lost leases and cancel requests
/// found on the way cancel the matching handlers. Also keeps the worker in the registry of live workers.
final class LeaseKeeper: Sendable {
    private let driver: any WorkerDriver
    private let attempts: RunningAttempts
    private let unreported: @Sendable () -> [LeasedJob]
    private let waiting: PrefetchBuffer?
    private let cancelWaiting: @Sendable (LeasedJob, Bool) -> Void
    private let handBack: @Sendable (LeasedJob) -> Void
    private let workerID: String
    private let info: [String: String]
    private let processed: @Sendable () -> Int
    private let failed: @Sendable () -> Int
    private let logger: Logger
    private let stopped = Mutex(false)
    private let finished = DispatchSemaphore(value: 0)

    /// - Parameters:
    ///   - info: what the registry shows about this worker (host, pid, queues, concurrency…).
    ///   - unreported: jobs whose handler has ended but whose outcome is not recorded yet (their leases are kept).
    ///   - processed: the number of attempts recorded so far, for the registry.
    ///   - waiting: jobs leased ahead of the free slots: renewed too; one a cancel request reaches is recorded as
    ///     cancelled (`cancelWaiting`, with whether to keep it as a dead letter), one whose lease is lost is dropped,
    ///     and one that has waited longer than a heartbeat interval is handed back (`handBack`).
    init(
        driver: any WorkerDriver, attempts: RunningAttempts, workerID: String, info: [String: String], logger: Logger,
        unreported: @escaping @Sendable () -> [LeasedJob], processed: @escaping @Sendable () -> Int,
        failed: @escaping @Sendable () -> Int = { 0 },
        waiting: PrefetchBuffer? = nil, cancelWaiting: @escaping @Sendable (LeasedJob, Bool) -> Void = { _, _ in },
        handBack: @escaping @Sendable (LeasedJob) -> Void = { _ in }
    ) {
        self.waiting = waiting
        self.cancelWaiting = cancelWaiting
        self.handBack = handBack
        self.driver = driver
        self.attempts = attempts
        self.unreported = unreported
        self.workerID = workerID
        self.info = info
        self.logger = logger
        self.processed = processed
        self.failed = failed
    }

    func start() {
        let thread = Thread { [self] in loop() }
        thread.name = "jobfarm-lease-keeper"
        thread.start()
    }

    /// Stops the thread and waits (a round trip at most) until it has deregistered the worker.
    func stop() async {
        stopped.withLock { $0 = true }
        let finished = self.finished
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                _ = finished.wait(timeout: .now() + 5)
                continuation.resume()
            }
        }
    }

    private var isStopped: Bool { stopped.withLock { $0 } }

    /// One heartbeat now, off the cooperative pool; returns whether it reached the engine. The maintenance loop
    /// calls it after an outage, before its next reaper step.
    func renewNow() async -> Bool {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { [self] in
                do {
                    try beat()
                    continuation.resume(returning: true)
                } catch {
                    continuation.resume(returning: false)
                }
            }
        }
    }

    /// One heartbeat: renews the leases of the running attempts and of the finished ones whose outcome is not
    /// recorded yet, and the registry entry.
    func beat() throws {
        let jobs = attempts.renewable()
        let running = Set(jobs.map(\.id))
        // A finished job keeps its lease until its outcome is recorded; what the heartbeat says of it changes nothing
        // here (the report settles it), and an id fetched again meanwhile is renewed for its new attempt only.
        let finished = unreported().filter { !running.contains($0.id) }
        // Jobs that waited in the buffer for longer than a heartbeat: this worker is not keeping up with them, and
        // another may be idle. Handed back (no attempt counted) rather than renewed.
        for job in waiting?.takeStale(olderThan: driver.heartbeatInterval) ?? [] { handBack(job) }
        let buffered = (waiting?.leased() ?? []).filter { !running.contains($0.id) }
        let bufferedIDs = Set(buffered.map(\.id))
        if !jobs.isEmpty || !finished.isEmpty || !buffered.isEmpty {
            let states = try driver.renewLeasesBlocking(jobs + finished + buffered)
            var cancelled: [String: Bool] = [:]
            var lost: Set<String> = []
            for (id, state) in states {
                if running.contains(id) {
                    switch state {
                    case .held: break
                    case .lost: attempts.stop(id, because: .leaseLost)
                    case .cancelRequested(let keep): attempts.stop(id, because: .cancelRequested(keep: keep))
                    }
                } else if bufferedIDs.contains(id) {
                    switch state {
                    case .held: break
                    case .lost: lost.insert(id)
                    case .cancelRequested(let keep): cancelled[id] = keep
                    }
                }
            }
            if let waiting, !cancelled.isEmpty || !lost.isEmpty {
                // Only those still waiting: a job the starter took meanwhile is running and the next beat reaches it.
                for job in waiting.take(Set(cancelled.keys).union(lost)) {
                    if let keep = cancelled[job.id] {
                        cancelWaiting(job, keep)
                    } else {
                        logger.warning("lease lost while the job waited in the prefetch buffer; dropped", metadata: ["job": "\(job.id)"])
                    }
                }
            }
        }
        var current = info
        current["busy"] = String(jobs.count)
        current["processed"] = String(processed())
        current["failed"] = String(failed())
        try driver.registerWorkerBlocking(id: workerID, info: current)
    }

    private func loop() {
        let interval = driver.heartbeatInterval
        var next = ContinuousClock.now
        while !isStopped {
            do { try beat() } catch {
                logger.warning("heartbeat failed; retrying", metadata: ["error": "\(error)"])
            }
            next += interval
            // Sleep in short steps so that stop() is honoured quickly.
            while !isStopped && ContinuousClock.now < next {
                Thread.sleep(forTimeInterval: min(0.05, max(0, (next - ContinuousClock.now).seconds)))
            }
            if ContinuousClock.now > next + interval { next = .now }
        }
        try? driver.deregisterWorkerBlocking(id: workerID)
        finished.signal()
    }
}
