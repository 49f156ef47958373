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
        // Not `farm.fetch`: a connection failure must stay a `RedisError`, apart from an error of this queue's script.
        let reply = try await fetchClient.pipeline([farm.fetchRequest(queue: queue, count: count, worker: worker, tiers: tiers)])[0]
        if let message = reply.errorMessage { throw QueueFetchError(queue: queue, message: "fetch script: \(message)") }
        do {
            return try await farm.refusingInvalidText(try farm.leasedJobs(from: reply, queue: queue), on: fetchClient)
        } catch let error as JobFarmError where !error.isConnectionError {
            throw QueueFetchError(queue: queue, message: "\(error)")
        }
    }

    public func awaitAndFetch(queues: [String], count: Int, tiers: [String: [String]], timeout: Duration, worker: String) async throws -> FetchRound {
        let (wait, fetched) = try await farm.awaitAndFetchEach(
            queues: queues, count: count, worker: worker, tiers: tiers, timeout: timeout, on: fetchClient)
        var round = FetchRound()
        for (queue, result) in fetched {
            switch result {
            case .success(let jobs): round.jobs += jobs
            case .failure(let error): round.failures.append(QueueFetchError(queue: queue, message: "\(error)"))
            }
        }
        if let wait {
            // The BLPOP answered at once with an error instead of blocking: find the wake-up lists at fault, so
            // that only their queues are set aside.
            let faulty = try await farm.wakeUpKeyFaults(queues: queues, tiers: tiers, on: fetchClient)
            if faulty.isEmpty { throw farm.wakeUpError(wait) }
            round.failures += faulty.map { QueueFetchError(queue: $0.queue, key: $0.key, message: "\(wait) (it is a \($0.type), not a list)") }
        }
        return round
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

    public func isDrained(queues: [String]) async throws -> Bool {
        let stats = try await farm.stats(queues: queues)
        return stats.allSatisfy { $0.depth == 0 && $0.scheduled == 0 && $0.inflight == 0 }
    }

    public func settingsAdvice() async -> [String] { await farm.settingsAdvice() }

    public func close() {
        for client in [fetchClient, reportClient, heartbeatClient, maintenanceClient, progressClient] { client.close() }
    }
}
