import JobQueue
import RedisClient
import Synchronization

/// Merges concurrent submissions bound for the same queue and tier into one `enqueueNow` call.
///
/// Redis runs a script call in ~35–65 µs whatever it holds, and ~3 µs more per job: a thousand single submissions
/// in flight, each its own call, cost Redis twenty times the CPU of the same jobs in a few calls. While a call for a
/// queue and tier is in flight, the submissions for them that arrive wait and go together in the next one (at most
/// `maxJobs`); a submission that finds none in flight goes at once, so nothing waits at low load.
///
/// What is shared: only the script call. Each submission keeps its own ids and duplicate answers; the jobs were
/// checked before they reach here, so what can still fail is the queue's (a key of the wrong type, Redis gone) and
/// fails every submission of that call alike, as it would have failed each alone. A merged batch whose envelopes
/// cannot be built together (one invalid job) is sent submission by submission instead, so that only that one fails.
public final class SubmissionMerger: Sendable {
    /// A queue and tier: the submissions one call can carry.
    public struct Lane: Hashable, Sendable {
        public var queue: String
        public var tier: String
    }

    private final class Entry: Sendable {
        let jobs: [EnqueueRequest]
        let deadline: ContinuousClock.Instant
        private let results: OnceContinuation<[EnqueueResult]>

        init(_ jobs: [EnqueueRequest], deadline: ContinuousClock.Instant, continuation: CheckedContinuation<[EnqueueResult], any Error>) {
            self.jobs = jobs
            self.deadline = deadline
            self.results = OnceContinuation(continuation)
        }

        func resume(_ result: Result<[EnqueueResult], any Error>) { results.resume(result) }
    }

    private struct LaneState {
        var waiting: [Entry] = []
        var busy = false
    }

    private let farm: JobFarm
    private let redis: RedisCoalescer
    private let maxJobs: Int
    private let lanes = Mutex<[Lane: LaneState]>([:])
    private let counters = Mutex<(calls: Int, submissions: Int)>((0, 0))

    public init(farm: JobFarm, redis: RedisCoalescer, maxJobs: Int = 1000) {
        self.farm = farm
        self.redis = redis
        self.maxJobs = max(1, maxJobs)
    }

    /// The lane of `jobs` when they can join a merged call: one queue and tier, to run now, no idempotency key or
    /// links, ids chosen, at most `maxJobs`; nil otherwise.
    public func lane(of jobs: [EnqueueRequest], defaultTier: String) -> Lane? {
        guard let first = jobs.first, jobs.count <= maxJobs else { return nil }
        let tier = first.tier ?? defaultTier
        for job in jobs {
            guard job.id != nil, job.queue == first.queue, (job.tier ?? defaultTier) == tier, job.idempotencyKey == nil,
                  job.links == nil, job.runAt == nil, (job.delay ?? .zero) <= .zero else { return nil }
        }
        return Lane(queue: first.queue, tier: tier)
    }

    /// Script calls made and submissions they carried so far.
    public var statistics: (calls: Int, submissions: Int) { counters.withLock { $0 } }

    /// Enqueues `jobs` (all of `lane`, to run now, no idempotency key, ids chosen) within `limit`: throws
    /// `RedisCallTimedOut` when Redis has not answered by then, what the enqueue throws otherwise.
    public func enqueue(_ jobs: [EnqueueRequest], lane: Lane, within limit: Duration) async throws -> [EnqueueResult] {
        let deadline = ContinuousClock.now + limit
        return try await withCheckedThrowingContinuation { continuation in
            let entry = Entry(jobs, deadline: deadline, continuation: continuation)
            let batch: [Entry]? = lanes.withLock { lanes in
                lanes[lane, default: LaneState()].waiting.append(entry)
                guard !lanes[lane]!.busy else { return nil }
                lanes[lane]!.busy = true
                return Self.take(&lanes[lane]!, upTo: maxJobs)
            }
            if let batch { Task { await self.serve(lane: lane, first: batch) } }
        }
    }

    /// Enqueues `jobs` on their own within `limit`: through `JobFarm.prepareEnqueue` and the shared round trips when
    /// they take its one-call path (asking Redis' clock when it is due), else `JobFarm.enqueueReporting`.
    static func enqueueUnmerged(_ jobs: [EnqueueRequest], farm: JobFarm, redis: RedisCoalescer, within limit: Duration) async throws -> [EnqueueResult] {
        try await withDeadline(limit) {
            guard let prepared = try await farm.prepareEnqueue(jobs) else { return try await farm.enqueueReporting(jobs) }
            let replies: [RESPValue]
            do {
                replies = try await redis.pipeline(prepared.requests)
            } catch let error as RedisError {
                throw JobFarmError(error, operation: "enqueue")
            }
            return try await farm.results(of: prepared, replies: replies)
        }
    }

    /// The oldest waiting entries, at least one, up to `limit` jobs.
    private static func take(_ state: inout LaneState, upTo limit: Int) -> [Entry] {
        takeOldest(&state.waiting, upTo: limit) { $0.jobs.count }
    }

    /// Sends the lane's batches one call at a time until nobody waits.
    private func serve(lane: Lane, first: [Entry]) async {
        var batch = first
        while true {
            await send(batch)
            let next: [Entry]? = lanes.withLock { lanes in
                if lanes[lane]?.waiting.isEmpty ?? true {
                    lanes[lane] = nil
                    return nil
                }
                return Self.take(&lanes[lane]!, upTo: maxJobs)
            }
            guard let next else { return }
            batch = next
        }
    }

    private func send(_ batch: [Entry]) async {
        counters.withLock { $0.calls += 1; $0.submissions += batch.count }
        // The oldest entry's deadline bounds the call: the others' are later.
        let limit = max(.zero, batch.map(\.deadline).min()! - ContinuousClock.now)
        do {
            let jobs = batch.count == 1 ? batch[0].jobs : batch.flatMap(\.jobs)
            let prepared: PreparedEnqueue?
            do {
                prepared = try await farm.prepareEnqueue(jobs, refreshingClock: false)
            } catch where batch.count > 1 {
                // One invalid job among them: each submission on its own, so that only its own fails.
                for entry in batch { await send([entry]) }
                return
            }
            let results: [EnqueueResult]
            if let prepared {
                let replies: [RESPValue]
                do {
                    replies = try await redis.pipeline(prepared.requests, within: limit)
                } catch let error as RedisError {
                    throw JobFarmError(error, operation: "enqueue")
                }
                if replies.contains(where: { $0.errorMessage != nil }) {
                    // An error reply leads to a further look-up (rare): bounded like the rest.
                    results = try await withDeadline(limit) { [farm] in try await farm.results(of: prepared, replies: replies) }
                } else {
                    results = try await farm.results(of: prepared, replies: replies)
                }
            } else {
                // Redis' clock not known this minute (one `TIME`), or not the one-call path: the library's way.
                results = try await Self.enqueueUnmerged(jobs, farm: farm, redis: redis, within: limit)
            }
            var offset = 0
            for entry in batch {
                entry.resume(.success(Array(results[offset..<offset + entry.jobs.count])))
                offset += entry.jobs.count
            }
        } catch {
            for entry in batch { entry.resume(.failure(error)) }
        }
    }
}
