import JobProtocol

/// What a worker runtime needs from a queue engine: lease jobs, report how their attempts ended, keep their leases,
/// and run the maintenance steps every worker shares. The contract between `JobWorker` and a queue's storage, in
/// the manner of swift-jobs' `JobQueueDriver`: the runtime is written against it, and `RedisWorkerDriver` is the
/// Redis implementation (tests use fakes).
///
/// An implementation owns its connections, so that a slow call of one kind (a blocking wait, a report retried
/// through an outage) never holds up another (a heartbeat). Methods named `…Blocking` are called from a thread of
/// the worker's own (the lease keeper) and may block it; every other method may be called concurrently with
/// methods of another kind, but the worker never overlaps two calls of the same kind.
public protocol WorkerDriver: Sendable {
    /// How long a lease lasts without a renewal.
    var leaseDuration: Duration { get }
    /// How often the worker renews its leases.
    var heartbeatInterval: Duration { get }
    /// How often the worker runs the maintenance steps (`promoteDueJobs`, `reapExpiredLeases`).
    var maintenanceInterval: Duration { get }
    /// Where the jobs are, for the worker's start-up log line.
    var endpointDescription: String { get }

    /// Every queue known to the engine (a worker started without a list serves them all).
    func queues() async throws -> [String]
    /// Leases up to `count` jobs of one queue in one round trip, honouring the tier policy.
    /// - Parameter tiers: the tiers to serve; `nil` serves them all.
    /// - Throws: `QueueFetchError` when the fault lies in this queue's data (the other queues may go on); any
    ///   other error is the engine's as a whole, the same for every queue: unreachable, not ready, refusing writes
    ///   (`JobFarmError.serverCondition`), or refusing the credentials (`isConfigurationError`).
    func fetch(queue: String, count: Int, tiers: [String]?, worker: String) async throws -> [LeasedJob]
    /// Waits up to `timeout` for a wake-up on any of the queues, then leases up to `count` jobs among them, in the
    /// round trip of the wait. Faults of single queues come back in the round, and so does a fault of the whole
    /// engine met after jobs were leased (`engineFault`); an engine that cannot be reached throws.
    func awaitAndFetch(queues: [String], count: Int, tiers: [String: [String]], timeout: Duration, worker: String) async throws -> FetchRound
    /// Records how attempts of one queue ended, in one round trip. Returns the ids whose outcome was refused
    /// because the lease had been lost (the fencing token no longer matched).
    func report(_ outcomes: [(job: LeasedJob, outcome: AttemptOutcome)], queue: String) async throws -> [String]
    /// Hands leased jobs of one queue back to the front of their line without counting the attempt (shutdown).
    @discardableResult
    func release(_ jobs: [LeasedJob], queue: String) async throws -> Int
    /// Records a running job's progress (0…1). Returns false when the lease is lost.
    @discardableResult
    func reportProgress(_ job: LeasedJob, fraction: Double) async throws -> Bool
    /// Renews the leases of running jobs (any queues) in one round trip; returns what became of each.
    func renewLeasesBlocking(_ jobs: [LeasedJob]) throws -> [String: JobFarm.LeaseState]
    /// Records the worker in the registry of live workers, expiring unless renewed.
    func registerWorkerBlocking(id: String, info: [String: String]) throws
    /// Removes the worker from the registry (clean exit).
    func deregisterWorkerBlocking(id: String) throws
    /// One reaper step on one queue: returns expired leases to their line (or the dead letters as `poison`).
    func reapExpiredLeases(queue: String) async throws -> ReapResult
    /// One scheduler step on one queue: moves due delayed and retrying jobs to their line. Returns how many moved
    /// and the time until the next is due (`nil` when none is scheduled).
    func promoteDueJobs(queue: String) async throws -> (moved: Int, nextDue: Duration?)
    /// One pipeline step on one queue: applies the run notices left more than a few seconds ago (by a process that
    /// died before applying them, or written with no worker around). Returns how many were applied.
    func applyStaleRunNotices(queue: String) async throws -> Int
    /// The pipeline runs' sweeper, once per maintenance pass: re-enqueues steps claimed but never enqueued.
    func sweepRuns() async throws
    /// True when none of the queues has a job queued, scheduled or in flight (`--exit-when-empty`).
    func isDrained(queues: [String]) async throws -> Bool
    /// Advice on the engine's settings, logged once at start (empty when all is well).
    func settingsAdvice() async -> [String]
    /// Closes the connections; the driver is not used afterwards.
    func close()
}

/// What one `awaitAndFetch` brought: the jobs leased, and the queues whose part failed (their jobs leased
/// before the failure, if any, are in `jobs` all the same).
public struct FetchRound: Sendable {
    public var jobs: [LeasedJob]
    public var failures: [QueueFetchError]
    /// A fault of the whole engine met in this round (a read-only or out-of-memory server, refused credentials):
    /// the worker runs the jobs leased and pauses its fetching as a whole, as if `awaitAndFetch` had thrown it.
    public var engineFault: (any Error)?

    public init(jobs: [LeasedJob] = [], failures: [QueueFetchError] = [], engineFault: (any Error)? = nil) {
        self.jobs = jobs
        self.failures = failures
        self.engineFault = engineFault
    }
}

/// A fetch that failed because of one queue's data (a key of the wrong type, a script error), not the connection:
/// the worker backs that queue off and keeps serving the others.
public struct QueueFetchError: Error, CustomStringConvertible, Sendable, Equatable {
    public var queue: String
    /// The key at fault, when known.
    public var key: String?
    /// The engine's error.
    public var message: String

    public init(queue: String, key: String? = nil, message: String) {
        self.queue = queue
        self.key = key
        self.message = message
    }

    public var description: String {
        if let key {
            return "queue '\(queue)': key \(key): \(message). A client outside the farm wrote to this key: inspect it "
                + "(redis-cli TYPE \(key)) and delete or repair it (docs/PROTOCOL.md, Keys); the worker retries on its own"
        }
        return "queue '\(queue)': \(message). Inspect the queue's keys (docs/PROTOCOL.md, Keys); the worker retries on its own"
    }
}

/// One reaper step's work.
public struct ReapResult: Sendable, Equatable {
    /// Jobs put back in line.
    public var requeued: Int
    /// Jobs dead-lettered as `poison`.
    public var poisoned: Int
    /// While above zero, the step reaped nothing: nobody had reached the queue for longer than the engine takes for
    /// an outage, and the leases get this much more time to be renewed or reported first.
    public var graceRemaining: Duration

    public init(requeued: Int = 0, poisoned: Int = 0, graceRemaining: Duration = .zero) {
        self.requeued = requeued
        self.poisoned = poisoned
        self.graceRemaining = graceRemaining
    }
}

extension WorkerDriver {
    /// Engines without pipelines have no notices.
    public func applyStaleRunNotices(queue: String) async throws -> Int { 0 }
    /// Engines without pipelines have no runs.
    public func sweepRuns() async throws {}
}
