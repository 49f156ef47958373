import JobProtocol
import Logging
import RedisClient
import Synchronization

/// An enqueue built but not sent: the Redis requests of one atomic `enqueueNow` call, for a caller that sends them
/// in a pipeline shared with others (the dispatcher's coalescer), then reads its own reply with `ids(from:)`.
public struct PreparedEnqueue: Sendable {
    /// The requests to send back to back, in this order (a registry `SADD` the first time a queue is seen, then the
    /// script call).
    public let requests: [RedisRequest]
    /// The jobs' ids, in request order.
    public let ids: [String]
    let queue: String
}

extension JobFarm {
    /// Builds the enqueue of `jobs` without sending it, when they take the `enqueueNow` path: one queue, one tier,
    /// to run now, no idempotency key, at most 1,000 jobs. `nil` otherwise (use `enqueue(_:)`).
    /// Throws what `enqueue` throws for an invalid request. Ids are chosen here: sending the requests again after a
    /// connection error never makes a job twice.
    ///
    /// The call stamps the jobs with Redis' clock as last measured (`TIME`, at most a minute old); with
    /// `refreshingClock: false` it never asks Redis, and answers nil when the measure is older than that (a caller
    /// that bounds its Redis calls in time can then bound the `TIME` too, through `enqueue(_:)` or a second call).
    public func prepareEnqueue(_ jobs: [EnqueueRequest], refreshingClock: Bool = true) async throws -> PreparedEnqueue? {
        guard let first = jobs.first, jobs.count <= 1000 else { return nil }
        let tier = first.tier ?? configuration.defaultTier
        for job in jobs {
            guard job.queue == first.queue, (job.tier ?? configuration.defaultTier) == tier, job.idempotencyKey == nil, job.links == nil,
                  job.runAt == nil, (job.delay ?? .zero) <= .zero else { return nil }
        }
        let now = WallClock.nowMilliseconds()
        var generator = FastRandom()
        var envelopes: [JobEnvelope] = []
        envelopes.reserveCapacity(jobs.count)
        for job in jobs {
            let (env, delayMs) = try makeEnvelope(job, now: now, generator: &generator)
            guard delayMs == 0 else { return nil }
            envelopes.append(env)
        }
        guard let serverNow = refreshingClock ? await estimatedServerMilliseconds() : knownServerMilliseconds() else { return nil }
        let queue = first.queue
        var lastPayload: JSONValue?
        var lastPayloadText = ""
        let arguments = Self.enqueueNowArguments(envelopes, count: envelopes.count, queue: queue, qt: serverNow, tier: tier,
                                                 lastPayload: &lastPayload, lastPayloadText: &lastPayloadText)
        var requests: [RedisRequest] = []
        if !registeredQueues.withLock({ $0.contains(queue) }) {
            requests.append(.command(RedisCommand("SADD", QueueKeys.registry(namespace: configuration.namespace), queue)))
        }
        requests.append(.packedScript(Scripts.enqueueNow, keys: [keys(queue).prefix], arguments: arguments))
        return PreparedEnqueue(requests: requests, ids: envelopes.map(\.id), queue: queue)
    }

    /// The ids of a prepared enqueue from its replies (one per request, in order); throws the script's error.
    public func ids(of prepared: PreparedEnqueue, replies: [RESPValue]) async throws -> [String] {
        try await results(of: prepared, replies: replies).map(\.id)
    }

    /// Per job, in request order, its id and whether it was a duplicate (its id already in use: a repeated
    /// deterministic id), from the prepared enqueue's replies (one per request, in order); throws the script's error.
    public func results(of prepared: PreparedEnqueue, replies: [RESPValue]) async throws -> [EnqueueResult] {
        guard replies.count == prepared.requests.count, let reply = replies.last else {
            throw JobFarmError.redisFailed(operation: "enqueue", cause: .unexpectedReply("expected \(prepared.requests.count) replies, got \(replies.count)"))
        }
        if let message = reply.errorMessage { throw JobFarmError(reply: message, script: Scripts.enqueueNow.name) }
        var results: [EnqueueResult]
        switch reply {
        case .integer:
            // The script answers a count when it created every job it was sent.
            results = prepared.ids.map { EnqueueResult(id: $0, duplicate: false) }
        case .array(let answers) where answers.count == prepared.ids.count:
            // A created job answers its id; a duplicate a one-element array holding the original id.
            results = zip(prepared.ids, answers).map { id, answer in
                if let original = answer.array?.first?.string { return EnqueueResult(id: original, duplicate: true) }
                return EnqueueResult(id: answer.string ?? id, duplicate: false)
            }
        default:
            throw JobFarmError.redisFailed(operation: "enqueue", cause: .unexpectedReply("enqueueNow answered \(reply)"))
        }
        if replies.count > 1 {
            if replies[0].errorMessage != nil {
                // The registry failed, the jobs are enqueued: say so once (workers without --queues miss the queue).
                let error = try await registryError(replies[0])
                if reportedProblems.withLock({ $0.insert(error.description).inserted }) {
                    logger.error("enqueue could not register the queue: \(error) (workers started without --queues do not see it)")
                }
            } else {
                registeredQueues.withLock { _ = $0.insert(prepared.queue) }
            }
        }
        return results
    }
}
