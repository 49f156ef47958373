import Foundation
import Hummingbird
import JobProtocol
import JobQueue
import Logging
import RedisClient

/// What a metrics exporter reads of the dispatcher's fallback while Redis is away.
public protocol OutboxGaugeSource: Sendable {
    /// Jobs in this replica's outbox.
    var outboxJobs: Int { get }
    /// Bytes of job requests in this replica's outbox.
    var outboxBytes: Int { get }
    /// The circuit breaker's state.
    var circuitState: CircuitState { get }
}

extension Dispatcher: OutboxGaugeSource {
    public var outboxJobs: Int { outbox.depth }
    public var outboxBytes: Int { outbox.bytes }
    public var circuitState: CircuitState { breaker.current }

    /// The service that forwards the outbox to Redis; run it in the same `ServiceGroup`, before the application
    /// (`[forwarder, application]`: graceful shutdown runs in reverse, so the forwarder's last flush comes after
    /// the application has finished its requests). Make one per dispatcher.
    public func makeOutboxForwarder() -> OutboxForwarder {
        OutboxForwarder(farm: farm, outbox: outbox, breaker: breaker, batch: configuration.outbox.forwardBatch, logger: logger,
                        liveReplicas: liveReplicas)
    }

    /// A new job id chosen by this replica: a ULID, a dot, the replica's name (which outbox holds it while spooled).
    func makeJobID() -> String { JobID.make() + "." + replica }

    // MARK: - Submissions

    /// Places validated jobs: straight into Redis while the circuit is closed and nothing waits in the outbox;
    /// otherwise (or when Redis does not answer in time) durably into the outbox (`spooled`).
    /// Ids are chosen before Redis is tried, so a job spooled after a call that may have landed is the same job.
    func place(_ submitted: [EnqueueRequest]) async throws -> Placement {
        var jobs = ownedByCaller(submitted)
        for index in jobs.indices where jobs[index].id == nil { jobs[index].id = makeJobID() }
        // While the outbox holds jobs, new ones go behind them: this replica's submissions reach Redis in order.
        if outbox.depth == 0, breaker.allowsCall() {
            let batch = jobs
            do {
                let limit = breaker.settings.callTimeout
                let results = if let lane = merger.lane(of: batch, defaultTier: farm.configuration.defaultTier) {
                    try await merger.enqueue(batch, lane: lane, within: limit)
                } else {
                    try await SubmissionMerger.enqueueUnmerged(batch, farm: farm, redis: redis, within: limit)
                }
                breaker.recordSuccess()
                return Placement(ids: results.map(\.id), spooled: false, duplicates: results.map(\.duplicate))
            } catch {
                breaker.record(error)
                guard CircuitBreaker.meansRedisIsDown(error) else { throw error }
                logger.warning("Redis did not take a submission; spooling it", metadata: ["error": "\(error)", "jobs": "\(jobs.count)"])
                try await spool(jobs, attempted: true)
                return Placement(ids: jobs.map { $0.id ?? "" }, spooled: true)
            }
        }
        try await spool(jobs, attempted: false)
        return Placement(ids: jobs.map { $0.id ?? "" }, spooled: true)
    }

    private func spool(_ jobs: [EnqueueRequest], attempted: Bool) async throws {
        let written: Bool
        do {
            written = try await outbox.spool(jobs, attempted: attempted, enforceBound: !attempted)
        } catch {
            logger.error("cannot write to the outbox", metadata: ["error": "\(error)", "outbox": "\(outbox.path)"])
            throw Problem(.serviceUnavailable, detail: "Redis is unreachable and this replica cannot write its outbox; retry later",
                          headers: [.retryAfter: "\(breaker.retryAfterSeconds)"])
        }
        guard written else {
            throw Problem(.serviceUnavailable,
                          detail: "Redis is unreachable and this replica's outbox is full (\(outbox.depth) jobs); nothing was accepted: retry after Retry-After seconds",
                          headers: [.retryAfter: "\(max(breaker.retryAfterSeconds, 5))"])
        }
    }

    /// The answer for admitted jobs: 201 when they are in Redis, 202 with `spooled: true` when in the outbox.
    func acceptedResponse(_ jobs: [EnqueueRequest], _ admitted: Admission, bulk: Bool) async -> Response {
        var accepted: [JSONValue] = []
        accepted.reserveCapacity(jobs.count)
        for (index, (job, id)) in zip(jobs, admitted.ids).enumerated() {
            let duplicate = index < admitted.duplicates.count && admitted.duplicates[index]
            accepted.append(await acceptedJSON(job, id: id, spooled: admitted.spooled, duplicate: duplicate))
        }
        let status: HTTPResponse.Status = admitted.spooled ? .accepted : .created
        var headers = admitted.headers
        if bulk { return Self.json(status, .object(["jobs": .array(accepted)]), headers: headers) }
        headers[.location] = "/v1/jobs/\(admitted.ids.first ?? "")"
        return Self.json(status, accepted.first ?? .null, headers: headers)
    }

    // MARK: - Spooled jobs and the breaker

    /// The status of job `id` when this replica's outbox holds it.
    func spooledStatus(id: String) async throws -> JSONValue? {
        guard let entry = try await outbox.entry(id: id) else { return nil }
        guard Self.callerMaySee(trace: entry.request.trace) else { throw Problem.notFound(job: id) }
        let job = entry.request
        let state = entry.cancelled ? "cancelled" : (job.runAt.map { $0 > WallClock.nowMilliseconds() } ?? false) ? "scheduled" : "queued"
        var object: [String: JSONValue] = [
            "id": .string(id), "queue": .string(job.queue), "kind": .string(job.kind),
            "tier": .string(job.tier ?? farm.configuration.defaultTier), "state": .string(state),
            "attempts": .number(0), "maxAttempts": .number(Double(job.maxAttempts)), "cancelRequested": .bool(entry.cancelled),
            "enqueuedAt": .string(Self.rfc3339(entry.acceptedAt)), "spooled": .bool(true), "links": Self.links(id),
        ]
        if let runAt = job.runAt { object["runAt"] = .string(Self.rfc3339(runAt)) }
        return .object(object)
    }

    /// Cancels job `id` in the outbox; nil when the outbox does not hold it (cancel it in Redis then).
    func cancelSpooled(id: String) async throws -> Response? {
        if let entry = try await outbox.entry(id: id), !Self.callerMaySee(trace: entry.request.trace) { throw Problem.notFound(job: id) }
        switch try await outbox.cancel(id: id) {
        case .absent: return nil
        case .cancelled:
            return Self.json(.ok, .object(["id": .string(id), "outcome": .string("cancelled"), "links": Self.links(id)]))
        case .forwarding:
            // Being handed to Redis right now: once it is there, cancel it there.
            await outbox.waitUntilForwarded(id: id)
            return try await cancelSpooled(id: id)
        }
    }

    /// While job `id` is spooled, waits (up to `limit`) for the forwarder to hand it to Redis. Returns its spooled
    /// status when it is still in the outbox at the end, and the time spent.
    func waitWhileSpooled(id: String, upTo limit: Duration) async throws -> (status: JSONValue?, spent: Duration) {
        let clock = ContinuousClock()
        let start = clock.now
        guard var status = try await spooledStatus(id: id) else { return (nil, .zero) }
        // A local SQLite lookup every 100 ms: the outbox publishes no events.
        while clock.now - start < limit {
            if Task.isCancelled { break }
            try? await Task.sleep(for: .milliseconds(100))
            guard let now = try await spooledStatus(id: id) else { return (nil, clock.now - start) }
            status = now
        }
        return (status, clock.now - start)
    }

    /// Runs a Redis call through the breaker: refused at once (503) while the circuit is open, bounded by the
    /// breaker's call timeout, its outcome recorded.
    func redisCall<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        guard breaker.allowsCall() else { throw redisUnavailable() }
        do {
            let value = try await withDeadline(breaker.settings.callTimeout, body)
            breaker.recordSuccess()
            return value
        } catch {
            breaker.record(error)
            if error is RedisCallTimedOut { throw redisUnavailable() }
            throw error
        }
    }

    func redisUnavailable() -> Problem {
        Problem(.serviceUnavailable, detail: "Redis is unreachable; retry after Retry-After seconds (submissions are still accepted)",
                headers: [.retryAfter: "\(breaker.retryAfterSeconds)"])
    }

    /// `/readyz`: ready while Redis answers, or while it does not and the outbox can take submissions.
    func readyOrSpooling() async throws -> Response {
        if breaker.mayAllowCall {
            let farm = self.farm
            if let roundTrip = try? await redisCall({ try await farm.ping() }) {
                return Self.json(.ok, .object([
                    "status": .string("ready"), "redisMilliseconds": .number(roundTrip.seconds * 1000),
                    "outboxJobs": .number(Double(outbox.depth)),
                ]))
            }
        }
        if outbox.isHealthy {
            return Self.json(.ok, .object(["status": .string("spooling"), "outboxJobs": .number(Double(outbox.depth))]))
        }
        throw Problem(.serviceUnavailable,
                      detail: "Redis does not answer and this replica's outbox is full or failing; check that Redis runs and the --redis-url, and the outbox's disk",
                      headers: [.retryAfter: "\(breaker.retryAfterSeconds)"])
    }
}
