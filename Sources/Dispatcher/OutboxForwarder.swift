import JobProtocol
import JobQueue
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// Drains the outbox into Redis: in the order jobs were accepted, each under its pre-chosen id, a row deleted only
/// after Redis confirmed it. Runs as soon as Redis is back (the circuit closes, or a probe succeeds) and at start
/// (what a previous run of this replica left). A `Service` in the dispatcher's `ServiceGroup`: put it before the
/// application, so that at SIGTERM the application stops accepting and finishes its requests first, then the
/// forwarder tries one last flush (bounded by `finalFlush`) and closes the outbox.
///
/// Exactly once: a row forwarded twice (a crash between Redis' confirmation and the delete, a timed-out call that
/// landed after all) is enqueued under the same id, and enqueueing an id that exists (pending, leased or finished,
/// until its retention ends) makes no second job. A cancelled row is enqueued scheduled a year ahead, then cancelled
/// in the same way as any job, so it never runs and `GET` shows it `cancelled` afterwards.
public struct OutboxForwarder: Service {
    let farm: JobFarm
    let outbox: Outbox
    let breaker: CircuitBreaker
    let batch: Int
    let finalFlush: Duration
    let logger: Logger
    /// Beaten while the forwarder runs (this replica's presence, for the per-replica limits).
    let liveReplicas: LiveReplicas?
    private let wakeUps: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    init(farm: JobFarm, outbox: Outbox, breaker: CircuitBreaker, batch: Int, finalFlush: Duration = .seconds(5), logger: Logger,
         liveReplicas: LiveReplicas? = nil) {
        self.farm = farm
        self.liveReplicas = liveReplicas
        self.outbox = outbox
        self.breaker = breaker
        self.batch = batch
        self.finalFlush = finalFlush
        self.logger = logger
        (wakeUps, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let wake = self.wake
        outbox.onSpooled.withLock { $0 = { wake.yield() } }
    }

    public func run() async throws {
        // A tick to probe an open circuit after its cool-down, and to retry after a failed round.
        let wake = self.wake
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                wake.yield()
            }
        }
        defer { ticker.cancel() }
        let presence = liveReplicas.map { [farm, logger] live in
            Task { await live.run(client: RedisClient(configuration: farm.configuration.redis, name: "dispatcher-presence"), logger: logger) }
        }
        defer { presence?.cancel() }
        if outbox.depth > 0 {
            logger.notice("forwarding the jobs a previous run left in the outbox", metadata: ["jobs": "\(outbox.depth)", "outbox": "\(outbox.path)"])
        }
        let idempotencyClient = RedisClient(configuration: farm.configuration.redis, name: "dispatcher-idempotency")
        for await _ in wakeUps.cancelOnGracefulShutdown() {
            await drain()
            await copyIdempotencyRecords(client: idempotencyClient)
        }
        // Graceful shutdown: the application has stopped and finished its requests (it is later in the group).
        let outbox = self.outbox
        let left = try? await withDeadline(finalFlush) { [self] in
            await drain(ignoringBreaker: true)
            return outbox.depth
        }
        if let left, left == 0 {
            logger.info("outbox empty at shutdown")
        } else {
            logger.warning("jobs stay in the outbox until this replica starts again", metadata: ["jobs": "\(outbox.depth)", "outbox": "\(outbox.path)"])
        }
        outbox.close()
    }

    /// Forwards rounds of up to `batch` jobs while the outbox holds some and Redis takes them.
    func drain(ignoringBreaker: Bool = false) async {
        while outbox.depth > 0 {
            guard ignoringBreaker || breaker.mayAllowCall else { return }
            let entries: [OutboxEntry]
            do {
                entries = try await outbox.claimOldest(batch)
            } catch {
                logger.error("cannot read the outbox", metadata: ["error": "\(error)", "outbox": "\(outbox.path)"])
                try? await outbox.finish(forwarded: [])
                return
            }
            guard ignoringBreaker || breaker.allowsCall() else {
                try? await outbox.finish(forwarded: [])
                return
            }
            do {
                // One PING (no retries) first: while Redis is away a round fails at once instead of spending the
                // enqueue's connection retries; in a half-open circuit it is the probe.
                let farm = self.farm
                do {
                    _ = try await withDeadline(breaker.settings.callTimeout) { try await farm.ping() }
                } catch {
                    breaker.record(error)
                    try? await outbox.finish(forwarded: [])
                    return
                }
            }
            var forwarded: [OutboxEntry] = []
            do {
                try await forward(entries)
                forwarded = entries
                breaker.recordSuccess()
            } catch {
                breaker.record(error)
                if !CircuitBreaker.meansRedisIsDown(error), !(error is CancellationError) {
                    logger.error("forwarding the outbox failed; retrying", metadata: ["error": "\(error)"])
                }
            }
            do {
                try await outbox.finish(forwarded: forwarded)
            } catch {
                // Redis has the jobs; the rows stay and are forwarded again, which is a no-op for each id.
                logger.error("cannot delete forwarded jobs from the outbox", metadata: ["error": "\(error)"])
                return
            }
            if forwarded.isEmpty { return }
        }
    }

    /// Hands `entries` to Redis in their order: one bulk enqueue, then the cancels of cancelled rows.
    private func forward(_ entries: [OutboxEntry]) async throws {
        let farm = self.farm
        let yearAhead = WallClock.nowMilliseconds() + 365 * 86_400_000
        let requests = entries.map { entry -> EnqueueRequest in
            var request = entry.request
            if entry.cancelled {
                request.runAt = yearAhead
                request.delay = nil
            }
            return request
        }
        let cancelled = entries.filter(\.cancelled).map { (id: $0.id, queue: $0.request.queue) }
        let limit = max(breaker.settings.callTimeout * 5, .seconds(5))
        try await withDeadline(limit) {
            _ = try await farm.enqueue(requests)
            for job in cancelled { _ = try await farm.cancel(id: job.id, queue: job.queue) }
        }
    }
}
