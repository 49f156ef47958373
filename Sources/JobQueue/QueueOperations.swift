import JobProtocol
import Logging
import RedisClient
import Synchronization

/// A job leased to a worker: the raw envelope plus the lease's fencing token.
public struct LeasedJob: Sendable {
    public var id: String
    public var queue: String
    public var tier: String
    /// The fencing token: only the holder of the current token may complete, fail, renew or release the job.
    public var token: String
    /// 1 for the first run.
    public var attempt: Int
    /// The envelope as stored (decoded by the worker, so that a malformed one is dead-lettered, not crashed on).
    public var rawEnvelope: String
    /// When the job joined its tier's line (`qt`, ms, the Redis server's clock); nil when the engine did not say.
    public var queuedAt: Int64?
    /// When the job was leased (ms, the Redis server's clock, the same clock as `queuedAt`); nil when unknown.
    public var leasedAt: Int64?

    /// A leased job as a `WorkerDriver` hands it to the worker.
    public init(
        id: String, queue: String, tier: String, token: String, attempt: Int, rawEnvelope: String, queuedAt: Int64? = nil,
        leasedAt: Int64? = nil
    ) {
        self.id = id
        self.queue = queue
        self.tier = tier
        self.token = token
        self.attempt = attempt
        self.rawEnvelope = rawEnvelope
        self.queuedAt = queuedAt
        self.leasedAt = leasedAt
    }

    /// How long the job waited in line before this lease, by the server's clock; nil when the times are unknown.
    public var queueWait: Duration? {
        guard let queuedAt, let leasedAt, queuedAt > 0, leasedAt >= queuedAt else { return nil }
        return .milliseconds(leasedAt - queuedAt)
    }
}

/// The ending of one attempt, reported by a worker.
public enum AttemptOutcome: Sendable, Equatable {
    case succeeded(result: String)
    /// Try again after `delay`.
    case retry(error: String, delay: Duration)
    /// Move to the dead letters.
    case dead(reason: DeadLetterReason, error: String)
    /// Cancelled on request.
    case cancelled(error: String, keepAsDeadLetter: Bool)
}

/// The lease-level operations a worker runs. Each takes the connection to use, so a worker keeps fetch,
/// acknowledgements and heartbeats on separate connections and none waits behind another.
extension JobFarm {
    /// Leases up to `count` jobs from one queue in one round trip, honouring the tier policy.
    /// - Parameter tiers: the tiers to serve (a subset of the configured ones); `nil` serves them all.
    public func fetch(queue: String, count: Int, worker: String, tiers only: [String]? = nil, on client: RedisClient) async throws -> [LeasedJob] {
        let reply = try await run(Scripts.fetch, queue: queue, arguments: fetchArguments(count: count, worker: worker, tiers: only), on: client, retryFor: .zero)
        return try await refusingInvalidText(try leasedJobs(from: reply, queue: queue), on: client)
    }

    /// Dead-letters, as `malformed`, the leased jobs whose envelope is not valid UTF-8 (a foreign producer's bytes),
    /// instead of handing the worker a text in which they became U+FFFD; returns the others.
    func refusingInvalidText(_ fetched: (jobs: [LeasedJob], invalid: [LeasedJob]), on client: RedisClient) async throws -> [LeasedJob] {
        if fetched.invalid.isEmpty { return fetched.jobs }
        let outcomes = fetched.invalid.map { job in
            (job: job, outcome: AttemptOutcome.dead(reason: .malformed, error: "envelope is not valid UTF-8 (refused rather than run with its bytes replaced by U+FFFD)"))
        }
        for queue in Set(fetched.invalid.map(\.queue)) { _ = try await report(outcomes.filter { $0.job.queue == queue }, queue: queue, on: client) }
        return fetched.jobs
    }

    /// Blocks until a job may be waiting in one of the queues (BLPOP on the wake-up lists of the tiers served, and
    /// on each queue's tier-less list that foreign clients push to; at most `timeout`),
    /// then fetches from every queue in the same round trip: the fetches are pipelined behind the BLPOP, and
    /// Redis runs them the moment the BLPOP returns (or times out). `count` is shared among the queues.
    /// Throws the first fetch error (the jobs other queues leased in that round are then left to the reaper). A
    /// `BLPOP` that failed (a wake-up list of the wrong type) returns at once: when nothing was leased, that is thrown
    /// (`wrongType` naming the list) rather than an empty answer the caller would loop on without pause.
    /// `RedisWorkerDriver.awaitAndFetch` reports both per queue and keeps every leased job.
    public func awaitAndFetch(
        queues: [String], count: Int, worker: String, tiers: [String: [String]] = [:], timeout: Duration, on client: RedisClient
    ) async throws -> [LeasedJob] {
        let round: (wait: String?, fetched: [(queue: String, result: Result<[LeasedJob], JobFarmError>)])
        do {
            round = try await awaitAndFetchEach(queues: queues, count: count, worker: worker, tiers: tiers, timeout: timeout, on: client)
        } catch let error as RedisError {
            throw JobFarmError(error, operation: "fetch")
        }
        var jobs: [LeasedJob] = []
        for (_, result) in round.fetched { jobs += try result.get() }
        if jobs.isEmpty, let message = round.wait {
            if let fault = try await wakeUpKeyFaults(queues: queues, tiers: tiers, on: client).first {
                throw JobFarmError.wrongType(key: fault.key, operation: "fetch",
                                             message: "waiting for work: \(fault.key) is a \(fault.type), expected a list (\(message))")
            }
            throw wakeUpError(message)
        }
        return jobs
    }

    /// `awaitAndFetch` with each part's own result: the `BLPOP`'s error reply (nil when it blocked or woke as it
    /// should) and, per queue, its leased jobs or its script's error. Throws only for the connection. Jobs whose
    /// envelope is not valid UTF-8 are dead-lettered on the way (`refusingInvalidText`).
    func awaitAndFetchEach(
        queues: [String], count: Int, worker: String, tiers: [String: [String]], timeout: Duration, on client: RedisClient
    ) async throws -> (wait: String?, fetched: [(queue: String, result: Result<[LeasedJob], JobFarmError>)]) {
        if client.isCluster && queues.count > 1 {
            return try await awaitAndFetchEachOnCluster(queues: queues, count: count, worker: worker, tiers: tiers, timeout: timeout, on: client)
        }
        var requests: [RedisRequest] = [.command(wakeUpWait(queues: queues, tiers: tiers, timeout: timeout))]
        // The count is shared among the queues, so one wake-up never leases more than `count` plus one per queue.
        let share = max(1, count / max(1, queues.count))
        for queue in queues { requests.append(fetchRequest(queue: queue, count: share, worker: worker, tiers: tiers[queue])) }
        let replies = try await client.pipeline(requests, blockingFor: timeout)
        // Every queue's fetch ran; all that came are leased to us.
        var fetched: [(queue: String, result: Result<[LeasedJob], JobFarmError>)] = []
        for (queue, reply) in zip(queues, replies.dropFirst()) {
            do {
                fetched.append((queue, .success(try await refusingInvalidText(try leasedJobs(from: reply, queue: queue), on: client))))
            } catch let error as JobFarmError {
                fetched.append((queue, .failure(error)))
            } catch let error as RedisError {
                fetched.append((queue, .failure(JobFarmError(error, operation: "fetch"))))
            }
        }
        return (replies[0].errorMessage, fetched)
    }

    /// The wake-up lists a worker blocks on: per queue the tier-less list, then the lists of the tiers served.
    func wakeUpKeys(queues: [String], tiers: [String: [String]]) -> [(queue: String, key: String)] {
        var keys: [(String, String)] = []
        for queue in queues {
            let k = self.keys(queue)
            keys.append((queue, k.signal))
            for tier in servedTiers(tiers[queue]) { keys.append((queue, k.signal(tier: tier))) }
        }
        return keys
    }

    func wakeUpWait(queues: [String], tiers: [String: [String]], timeout: Duration) -> RedisCommand {
        var blpop = RedisCommand("BLPOP")
        for (_, key) in wakeUpKeys(queues: queues, tiers: tiers) { blpop.append(key) }
        blpop.append(format3(max(0.01, timeout.seconds)))
        return blpop
    }

    /// One `fetch` script call, for a pipeline.
    func fetchRequest(queue: String, count: Int, worker: String, tiers only: [String]?) -> RedisRequest {
        .script(Scripts.fetch, keys: [keys(queue).prefix], arguments: [queue] + fetchArguments(count: count, worker: worker, tiers: only))
    }

    /// The wake-up lists that exist with another type than LIST (one round trip of `TYPE`s): what a `BLPOP` that
    /// failed at once met.
    func wakeUpKeyFaults(queues: [String], tiers: [String: [String]], on client: RedisClient) async throws -> [(queue: String, key: String, type: String)] {
        let keys = wakeUpKeys(queues: queues, tiers: tiers)
        let types = try await client.send(keys.map { RedisCommand("TYPE", $0.key) })
        return zip(keys, types).compactMap { key, type in
            let name = type.string ?? "?"
            return name == "list" || name == "none" ? nil : (key.queue, key.key, name)
        }
    }

    /// The error for a `BLPOP` that failed although none of its lists is of the wrong type.
    func wakeUpError(_ message: String) -> JobFarmError {
        JobFarmError(RedisError(reply: message, context: "waiting for a wake-up (BLPOP)"), operation: "fetch")
    }

    /// The configured tiers in preference order, restricted to `only` when given.
    private func servedTiers(_ only: [String]?) -> [String] {
        let tiers = tierOrder()
        return only.map { only in tiers.filter(only.contains) } ?? tiers
    }

    private func fetchArguments(count: Int, worker: String, tiers only: [String]?) -> [String] {
        let tiers = servedTiers(only)
        var aging: Int64 = 0
        var share = TierPolicy.defaultAgedShare
        if case .strict(let agingAfter?, let agedShare) = configuration.tierPolicy {
            aging = agingAfter.milliseconds
            share = agedShare
        }
        // `1`: each job's qt and the server's time come back with it (the worker's queue-wait figures).
        return [String(count), String(configuration.leaseDuration.milliseconds), worker, String(aging), String(tiers.count)] + tiers
            + [String(share), "1"]
    }

    /// The jobs of a fetch reply (7 items per job, with its times, then possibly an array of what the script
    /// skipped), split into those to run and those whose envelope is not valid UTF-8.
    func leasedJobs(from reply: RESPValue, queue: String) throws -> (jobs: [LeasedJob], invalid: [LeasedJob]) {
        if let message = reply.errorMessage { throw JobFarmError(reply: message, script: Scripts.fetch.name) }
        let items = reply.array ?? []
        var jobs: [LeasedJob] = []
        var invalid: [LeasedJob] = []
        let group = 7
        jobs.reserveCapacity(items.count / group)
        for base in stride(from: 0, to: items.count - (group - 1), by: group) {
            var text = ""
            var valid = true
            if case .bulk(let bytes) = items[base + 4] {
                if let decoded = String(validating: bytes, as: UTF8.self) { text = decoded } else { valid = false }
            }
            let job = LeasedJob(
                id: items[base].string ?? "", queue: queue, tier: items[base + 3].string ?? "",
                token: items[base + 1].string ?? "", attempt: items[base + 2].int ?? 1,
                rawEnvelope: text, queuedAt: items[base + 5].int.map(Int64.init), leasedAt: items[base + 6].int.map(Int64.init))
            if valid { jobs.append(job) } else { invalid.append(job) }
        }
        if items.count % group == 1 { logSkipped(items.last, queue: queue, by: "fetch") }
        return (jobs, invalid)
    }

    /// The tier order for one fetch: the configured order, or a weighted random order.
    func tierOrder() -> [String] {
        guard case .weighted(let weights) = configuration.tierPolicy else { return configuration.tiers }
        var remaining = configuration.tiers
        var order: [String] = []
        var generator = SystemRandomNumberGenerator()
        while !remaining.isEmpty {
            let total = remaining.reduce(0) { $0 + max(1, weights[$1] ?? 1) }
            var pick = Int.random(in: 0..<total, using: &generator)
            for (index, tier) in remaining.enumerated() {
                pick -= max(1, weights[tier] ?? 1)
                if pick < 0 {
                    order.append(tier)
                    remaining.remove(at: index)
                    break
                }
            }
        }
        return order
    }

    /// Records the outcomes of many attempts of one queue in one round trip (two scripts, pipelined).
    /// Returns the ids whose lease had been lost: their outcome was refused, as the fencing token requires.
    public func report(
        _ outcomes: [(job: LeasedJob, outcome: AttemptOutcome)], queue: String, on client: RedisClient
    ) async throws -> [String] {
        var successes: [String] = [String(configuration.retention.milliseconds)]
        var successIDs: [String] = []
        var failures: [String] = [String(configuration.retention.milliseconds)]
        var failureIDs: [String] = []
        for (job, outcome) in outcomes {
            switch outcome {
            case .succeeded(let result):
                successes += [job.id, job.token, result]
                successIDs.append(job.id)
            case .retry(let error, let delay):
                failures += [job.id, job.token, "retry", error, String(delay.milliseconds)]
                failureIDs.append(job.id)
            case .dead(let reason, let error):
                failures += [job.id, job.token, reason.rawValue, error, "0"]
                failureIDs.append(job.id)
            case .cancelled(let error, let keep):
                failures += [job.id, job.token, keep ? "cancelled_dead" : "cancelled", error, "0"]
                failureIDs.append(job.id)
            }
        }
        var requests: [RedisRequest] = []
        let prefix = [keys(queue).prefix]
        if !successIDs.isEmpty { requests.append(.script(Scripts.complete, keys: prefix, arguments: [queue] + successes)) }
        if !failureIDs.isEmpty { requests.append(.script(Scripts.fail, keys: prefix, arguments: [queue] + failures)) }
        if requests.isEmpty { return [] }
        // Safe to repeat: a second `complete` of a recorded success answers 1; a repeated `fail` answers 0 and
        // the job stays as the first call left it.
        let replies = try await retrying(for: .seconds(3600), what: "report") { try await client.pipeline(requests) }
        var refused: [String] = []
        var noticed: [String] = []
        var replyIndex = 0
        for (ids, script) in [(successIDs, Scripts.complete), (failureIDs, Scripts.fail)] where !ids.isEmpty {
            let reply = replies[replyIndex]
            replyIndex += 1
            if let message = reply.errorMessage { throw JobFarmError(reply: message, script: script.name) }
            // 1: recorded; 2: recorded, and the job's end left a notice for its pipeline run; 0: the lease was lost.
            for (id, flag) in zip(ids, reply.array ?? []) {
                switch flag.int {
                case 1: break
                case 2: noticed.append(id)
                default: refused.append(id)
                }
            }
        }
        // A pipeline job ended: advance its run now (its next steps start two round trips later). A batch job whose
        // end left its queue's part final queued a check: run the batch checker now too.
        if !noticed.isEmpty {
            await drainRunNotices(queue: queue, ids: noticed, on: self.client)
            do {
                try await checkBatches(queue: queue)
            } catch {
                logger.warning("could not check the batches of ended jobs now; the maintenance loop checks them within seconds",
                               metadata: ["queue": "\(queue)", "error": "\(error)"])
            }
        }
        return refused
    }

    /// What a heartbeat learned about one lease.
    public enum LeaseState: Sendable, Equatable {
        case held
        case lost
        case cancelRequested(keepAsDeadLetter: Bool)
    }

    /// Renews the leases of many queues in one round trip, from a thread that may block (the lease keeper
    /// runs on a thread of its own so that busy handlers never delay it). Returns the state of each lease; the jobs
    /// of a queue whose heartbeat script failed (a key of the wrong type) are left out, and that failure is logged once.
    /// Throws only when Redis cannot be reached.
    public func renewBlocking(_ jobs: [LeasedJob], on client: RedisClient) throws -> [String: LeaseState] {
        var byQueue: [String: [LeasedJob]] = [:]
        for job in jobs { byQueue[job.queue, default: []].append(job) }
        let queues = Array(byQueue.keys)
        let requests: [RedisRequest] = queues.map { queue in
            var arguments = [queue, String(configuration.leaseDuration.milliseconds)]
            for job in byQueue[queue]! { arguments += [job.id, job.token] }
            return .script(Scripts.heartbeat, keys: [keys(queue).prefix], arguments: arguments)
        }
        let replies = try blockingCall("heartbeat") { try client.pipelineBlocking(requests) }
        var states: [String: LeaseState] = [:]
        for (queue, reply) in zip(queues, replies) {
            if let message = reply.errorMessage {
                // One queue's broken key (a foreign client's write) must not stop the heartbeats of the others: its
                // jobs are left out (not renewed, so not reported lost either), and it is logged once.
                let error = JobFarmError(reply: message, script: Scripts.heartbeat.name)
                if reportedProblems.withLock({ $0.insert("heartbeat \(queue): \(message)").inserted }) {
                    logger.error("heartbeat of queue \(queue) failed; its leases are not renewed until the key is repaired", metadata: ["error": "\(error)"])
                }
                continue
            }
            for (job, flag) in zip(byQueue[queue]!, reply.array ?? []) {
                switch flag.int {
                case 1: states[job.id] = .held
                case 2: states[job.id] = .cancelRequested(keepAsDeadLetter: false)
                case 3: states[job.id] = .cancelRequested(keepAsDeadLetter: true)
                default: states[job.id] = .lost
                }
            }
        }
        return states
    }

    /// Records this worker in the registry (`jf:workers`, `jf:worker:<id>`), expiring unless renewed.
    public func registerWorkerBlocking(id: String, info: [String: String], ttl: Duration, on client: RedisClient) throws {
        let ns = configuration.namespace
        var hash = RedisCommand("HSET", QueueKeys.worker(namespace: ns, id: id))
        for (key, value) in info.sorted(by: { $0.key < $1.key }) {
            hash.append(key)
            hash.append(value)
        }
        hash.append("seen")
        hash.append(String(WallClock.nowMilliseconds()))
        // The record outlives the last heartbeat by the gone-worker retention, so that `jobfarm workers` can still
        // show a worker that vanished.
        let keep = ttl + configuration.goneWorkerRetention
        _ = try blockingCall("worker registry") {
            try client.pipelineBlocking([
            .command(hash),
            .command(RedisCommand("PEXPIRE", QueueKeys.worker(namespace: ns, id: id), String(keep.milliseconds))),
            .command(RedisCommand("ZADD", QueueKeys.workers(namespace: ns), String(WallClock.nowMilliseconds()), id)),
            ])
        }
    }

    /// Runs a blocking client call, classifying its Redis errors.
    private func blockingCall<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as RedisError {
            throw JobFarmError(error, operation: operation)
        }
    }

    /// Takes this worker out of the live workers (clean exit); its record stays, marked `stopped`, for the gone-worker
    /// retention.
    public func deregisterWorkerBlocking(id: String, on client: RedisClient) throws {
        let ns = configuration.namespace
        let now = WallClock.nowMilliseconds()
        let keep = configuration.goneWorkerRetention.milliseconds
        let record = QueueKeys.worker(namespace: ns, id: id)
        var commands: [RedisRequest] = [.command(RedisCommand("ZREM", QueueKeys.workers(namespace: ns), id))]
        if keep > 0 {
            commands += [
                .command(RedisCommand("HSET", record, "stopped", String(now), "busy", "0")),
                .command(RedisCommand("PEXPIRE", record, String(keep))),
                .command(RedisCommand("ZADD", QueueKeys.goneWorkers(namespace: ns), String(now), id)),
            ]
        } else {
            commands.append(.command(RedisCommand("DEL", record)))
        }
        _ = try blockingCall("worker registry") { try client.pipelineBlocking(commands) }
    }

    /// Records a handler's progress (0…1) and publishes it. Returns false when the lease is lost.
    @discardableResult
    public func reportProgress(_ job: LeasedJob, fraction: Double, on client: RedisClient) async throws -> Bool {
        let value = String(format3(min(1, max(0, fraction))))
        let reply = try await run(Scripts.progress, queue: job.queue, arguments: [job.id, job.token, value], on: client, retryFor: .seconds(1))
        return reply.int == 1
    }

    /// Hands leased jobs back to the front of their queue without counting the attempt (graceful shutdown).
    @discardableResult
    public func release(_ jobs: [LeasedJob], queue: String, on client: RedisClient) async throws -> Int {
        if jobs.isEmpty { return 0 }
        var arguments: [String] = [String(configuration.retention.milliseconds)]
        for job in jobs { arguments += [job.id, job.token] }
        return try await run(Scripts.release, queue: queue, arguments: arguments, on: client, retryFor: .seconds(10)).int ?? 0
    }

    /// One reaper step: returns expired leases to their queue, or to the dead letters as `poison`.
    /// Safe with any number of workers running it at once (one atomic script).
    public func reapExpiredLeases(queue: String, limit: Int = 1000, on client: RedisClient) async throws -> (requeued: Int, poisoned: Int) {
        let result = try await reapStep(queue: queue, limit: limit, on: client)
        return (result.requeued, result.poisoned)
    }

    /// One reaper step with the lease clock (docs/PROTOCOL.md §6, row "outage"): when no reaper step reached the
    /// queue for `leaseClockGap`, nothing is reaped for `leaseGrace` from now.
    func reapStep(queue: String, limit: Int = 1000, on client: RedisClient) async throws -> ReapResult {
        let reply = try await run(
            Scripts.reap, queue: queue,
            arguments: [String(limit), String(configuration.maxLeaseLosses), String(configuration.retention.milliseconds),
                        String(configuration.leaseGrace.milliseconds), String(configuration.leaseClockGap.milliseconds)],
            on: client, retryFor: .zero)
        let values = reply.array ?? []
        func value(_ index: Int) -> Int { index < values.count ? values[index].int ?? 0 : 0 }
        if values.count > 3 { logSkipped(values[3], queue: queue, by: "reap") }
        return ReapResult(requeued: value(0), poisoned: value(1), graceRemaining: .milliseconds(value(2)))
    }

    /// One scheduler step: moves due delayed and retrying jobs to their tier. Returns how many moved and the
    /// time until the next one is due (nil when none is scheduled).
    public func promoteDueJobs(queue: String, limit: Int = 1000, on client: RedisClient) async throws -> (moved: Int, nextDue: Duration?) {
        let reply = try await run(Scripts.promote, queue: queue, arguments: [String(limit)], on: client, retryFor: .zero)
        let values = reply.array ?? []
        if values.count > 2 { logSkipped(values[2], queue: queue, by: "promote") }
        let next = values.count > 1 ? values[1].int ?? -1 : -1
        return (values.first?.int ?? 0, next >= 0 ? .milliseconds(next) : nil)
    }
}

/// A number with up to three decimals, no exponent.
func format3(_ value: Double) -> String {
    let scaled = (value * 1000).rounded()
    let whole = Int64(scaled) / 1000
    let fraction = abs(Int64(scaled) % 1000)
    if fraction == 0 { return String(whole) }
    var digits = String(fraction)
    digits = String(repeating: "0", count: 3 - digits.count) + digits
    while digits.hasSuffix("0") { digits.removeLast() }
    return "\(whole).\(digits)"
}
