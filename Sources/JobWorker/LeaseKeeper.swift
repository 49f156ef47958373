import Dispatch
import Foundation
import JobProtocol
import JobQueue
import RedisClient
import Synchronization

/// Renews the leases of a worker's running jobs on a thread of its own, so that handlers that keep every
/// core of the cooperative pool busy (BLAS) never starve the heartbeat. Lost leases and cancel requests
/// found on the way cancel the matching handlers.
final class LeaseKeeper: Sendable {
    private let worker: Worker
    private let client: RedisClient
    private let stopped = Mutex(false)
    private let finished = DispatchSemaphore(value: 0)

    init(worker: Worker) {
        self.worker = worker
        self.client = RedisClient(configuration: worker.farm.configuration.redis, name: "heartbeat")
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

    private func loop() {
        let farm = worker.farm
        let interval = farm.configuration.heartbeatInterval
        let info: [String: String] = [
            "host": ProcessInfo.processInfo.hostName, "pid": String(getpid()),
            "queues": worker.configuration.queues?.joined(separator: ",") ?? "*",
            "concurrency": String(worker.configuration.concurrency), "kinds": worker.registry.kinds.joined(separator: ","),
            "started": String(WallClock.nowMilliseconds()),
        ]
        var next = ContinuousClock.now
        while !isStopped {
            let jobs = worker.activeJobs()
            do {
                if !jobs.isEmpty {
                    let states = try farm.renewBlocking(jobs, on: client)
                    for (id, state) in states {
                        switch state {
                        case .held: break
                        case .lost: worker.stop(id, because: .leaseLost)
                        case .cancelRequested(let keep): worker.stop(id, because: .cancelRequested(keep: keep))
                        }
                    }
                }
                var current = info
                current["busy"] = String(jobs.count)
                current["processed"] = String(worker.processedCount)
                try farm.registerWorkerBlocking(id: worker.configuration.id, info: current, ttl: farm.configuration.leaseDuration * 3, on: client)
            } catch {
                worker.logger.warning("heartbeat failed; retrying", metadata: ["error": "\(error)"])
            }
            next += interval
            // Sleep in short steps so that stop() is honoured quickly.
            while !isStopped && ContinuousClock.now < next {
                Thread.sleep(forTimeInterval: min(0.05, max(0, (next - ContinuousClock.now).seconds)))
            }
            if ContinuousClock.now > next + interval { next = .now }
        }
        try? farm.deregisterWorkerBlocking(id: worker.configuration.id, on: client)
        client.close()
        finished.signal()
    }
}
