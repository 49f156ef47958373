import JobProtocol
import RedisClient

/// The Redis implementation of `WorkerDriver`, over the `JobFarm` lease operations.
///
/// Owns one connection per kind of work, so none waits behind another: `fetch` (which blocks in `BLPOP` while
/// idle), `report` (outcomes and releases), `heartbeat` (the lease keeper's thread), `maintenance` (reaper and
/// scheduler) and `progress`. Queue discovery and statistics use the farm's shared connections.
public final class RedisWorkerDriver: WorkerDriver {
    /// The farm whose queues this driver serves.
    public let farm: JobFarm
    private let fetchClient: RedisClient
    private let reportClient: RedisClient
    private let heartbeatClient: RedisClient
    private let maintenanceClient: RedisClient
    private let progressClient: RedisClient

    /// Creates the driver; nothing connects until the first call.
    public init(farm: JobFarm) {
        self.farm = farm
        let redis = farm.configuration.redis
        fetchClient = RedisClient(configuration: redis, name: "fetch")
        reportClient = RedisClient(configuration: redis, name: "report")
        heartbeatClient = RedisClient(configuration: redis, name: "heartbeat")
        maintenanceClient = RedisClient(configuration: redis, name: "maintenance")
        progressClient = RedisClient(configuration: redis, name: "progress")
    }

    public var leaseDuration: Duration { farm.configuration.leaseDuration }
    public var heartbeatInterval: Duration { farm.configuration.heartbeatInterval }
    public var maintenanceInterval: Duration { farm.configuration.maintenanceInterval }
    public var endpointDescription: String { "\(farm.configuration.redis)" }

    public func queues() async throws -> [String] { try await farm.queues() }

    public func fetch(queue: String, count: Int, tiers: [String]?, worker: String) async throws -> [LeasedJob] {
        // Not `farm.fetch`: a connection failure must stay apart from an error of this queue's script.
        let reply = try await fetching { try await fetchClient.pipeline([farm.fetchRequest(queue: queue, count: count, worker: worker, tiers: tiers)])[0] }
        do {
            return try await farm.refusingInvalidText(try farm.leasedJobs(from: reply, queue: queue), on: fetchClient)
        } catch let error as JobFarmError where !error.isConnectionError {
            throw Self.fault(error, queue: queue)
        } catch let error as RedisError {
            throw JobFarmError(error, operation: "fetch")
        }
    }

    public func awaitAndFetch(queues: [String], count: Int, tiers: [String: [String]], timeout: Duration, worker: String) async throws -> FetchRound {
        let (wait, fetched) = try await fetching {
            try await farm.awaitAndFetchEach(queues: queues, count: count, worker: worker, tiers: tiers, timeout: timeout, on: fetchClient)
        }
        var round = FetchRound()
        for (queue, result) in fetched {
            switch result {
            case .success(let jobs): round.jobs += jobs
            case .failure(let error):
                switch Self.fault(error, queue: queue) {
                case let fault as QueueFetchError: round.failures.append(fault)
                default: round.engineFault = round.engineFault ?? error
                }
            }
        }
        if let wait {
            let error = farm.wakeUpError(wait)
            if error.serverCondition != nil || error.isConfigurationError {
                // The server refuses the wait itself (a read-only replica, a loading or busy server): every queue alike.
                round.engineFault = round.engineFault ?? error
                return round
            }
            // The BLPOP answered at once with an error instead of blocking: find the wake-up lists at fault, so
            // that only their queues are set aside.
            let faulty = try await fetching { try await farm.wakeUpKeyFaults(queues: queues, tiers: tiers, on: fetchClient) }
            if faulty.isEmpty {
                round.engineFault = round.engineFault ?? error
                return round
            }
            round.failures += faulty.map { QueueFetchError(queue: $0.queue, key: $0.key, message: "\(wait) (it is a \($0.type), not a list)") }
        }
        return round
    }

    /// Runs a call on the fetch connection; its Redis errors (the connection, the credentials) become `JobFarmError`s.
    private func fetching<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as RedisError { throw JobFarmError(error, operation: "fetch") }
    }

    /// The error a worker acts on for a failed fetch of one queue: a `QueueFetchError` naming the key at fault when
    /// the fault lies in the queue's data, or the error itself when the whole server refuses (read-only, out of
    /// memory, cannot save, not ready) or the credentials are refused: those are the same for every queue.
    static func fault(_ error: JobFarmError, queue: String) -> any Error {
        // A user the ACL refuses one queue's keys (`NOPERM` in a reply) is that queue's fault; a refused password is not.
        if error.isPermissionDenied { return QueueFetchError(queue: queue, message: "\(error)") }
        if error.serverCondition != nil || error.isConnectionError || error.isConfigurationError { return error }
        if case .wrongType(let key, _, let message) = error { return QueueFetchError(queue: queue, key: key, message: message) }
        return QueueFetchError(queue: queue, message: "\(error)")
    }

    public func report(_ outcomes: [(job: LeasedJob, outcome: AttemptOutcome)], queue: String) async throws -> [String] {
        try await farm.report(outcomes, queue: queue, on: reportClient)
    }

    @discardableResult
    public func release(_ jobs: [LeasedJob], queue: String) async throws -> Int {
        try await farm.release(jobs, queue: queue, on: reportClient)
    }

    @discardableResult
    public func reportProgress(_ job: LeasedJob, fraction: Double) async throws -> Bool {
        try await farm.reportProgress(job, fraction: fraction, on: progressClient)
    }

    public func renewLeasesBlocking(_ jobs: [LeasedJob]) throws -> [String: JobFarm.LeaseState] {
        try farm.renewBlocking(jobs, on: heartbeatClient)
    }

    public func registerWorkerBlocking(id: String, info: [String: String]) throws {
        try farm.registerWorkerBlocking(id: id, info: info, ttl: farm.configuration.leaseDuration * 3, on: heartbeatClient)
    }

    public func deregisterWorkerBlocking(id: String) throws {
        try farm.deregisterWorkerBlocking(id: id, on: heartbeatClient)
    }

    public func reapExpiredLeases(queue: String) async throws -> ReapResult {
        try await farm.reapStep(queue: queue, on: maintenanceClient)
    }

    public func promoteDueJobs(queue: String) async throws -> (moved: Int, nextDue: Duration?) {
        try await farm.promoteDueJobs(queue: queue, on: maintenanceClient)
    }

    /// Also runs the batch checker over the queue's batch checks (left by a worker that died before it checked).
    public func applyStaleRunNotices(queue: String) async throws -> Int {
        let applied = try await farm.applyStaleRunNotices(queue: queue, on: maintenanceClient)
        try await farm.checkBatches(queue: queue)
        return applied
    }

    public func sweepRuns() async throws {
        _ = try await farm.sweepRuns(on: maintenanceClient)
    }

    public func isDrained(queues: [String]) async throws -> Bool {
        let stats = try await farm.stats(queues: queues)
        return stats.allSatisfy { $0.depth == 0 && $0.scheduled == 0 && $0.inflight == 0 }
    }

    public func settingsAdvice() async -> [String] { await farm.settingsAdvice() }

    public func close() {
        for client in [fetchClient, reportClient, heartbeatClient, maintenanceClient, progressClient] { client.close() }
    }
}
