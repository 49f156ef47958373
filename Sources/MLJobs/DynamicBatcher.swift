import Compute
import Dispatch
import Foundation
import JobQueue
import Synchronization

/// Triton-style dynamic batching of inference requests within one worker process.
///
/// Concurrent requests for the same model and precision (the same `key`) are queued; a queue is run as one
/// forward pass (one product per layer, split across the compute threads) when it holds `maxBatch` rows or when
/// its oldest request has waited `maxDelay`, and only while a pass slot is free (as Triton hands a batch only to a
/// free model instance), so requests gather into bigger batches while a pass runs. Each request gets its own rows of the output.
/// A request of `maxBatch` rows or more runs alone. Requests are checked (shape, finite values) before they join a
/// batch, so one bad request cannot fail others.
///
/// A class over a `Mutex` rather than an actor: the decisions are short and synchronous, and the compute thread
/// that ends a pass starts the next one and answers the waiting handlers itself, with no hop through Swift's
/// cooperative pool (which is busy with the queue's own work when the worker is loaded).
public final class DynamicBatcher: Sendable {
    /// Batching knobs.
    public struct Configuration: Sendable, Equatable {
        /// Off: every request runs its own forward pass.
        public var enabled: Bool
        /// Most rows per forward pass.
        public var maxBatch: Int
        /// Longest a request waits for company.
        public var maxDelay: Duration
        /// When no pass is running at all, start one at once instead of waiting `maxDelay`: an idle worker
        /// answers a lone request at unbatched latency, and requests that arrive during that pass gather into
        /// the next batch. Off: Triton's rule (wait `maxDelay` or `maxBatch` rows).
        public var dispatchWhenIdle: Bool
        /// Batched passes running at once (Triton's instance count); nil uses every compute thread. One leaves
        /// the other cores to the queue work around the passes and lets requests gather while a pass runs.
        public var maxConcurrentPasses: Int?
        /// Threads each batched pass is split across (by weight rows, `MLPModel.logits(rows:batch:threads:)`); nil
        /// uses every compute thread. Only with one pass at a time (`maxConcurrentPasses` 1): with several, each
        /// pass runs on one thread. A batched pass of a large model is bound by memory bandwidth and by FMA
        /// throughput: one pass over every core streams each weight once, where two passes side by side stream it
        /// twice.
        public var threadsPerPass: Int?

        /// 64 rows, 2 ms, dispatch at once when idle, one pass at a time split across every compute thread.
        public init(enabled: Bool = true, maxBatch: Int = 64, maxDelay: Duration = .milliseconds(2), dispatchWhenIdle: Bool = true,
                    maxConcurrentPasses: Int? = 1, threadsPerPass: Int? = nil) {
            self.enabled = enabled
            self.maxBatch = max(1, maxBatch)
            self.maxDelay = maxDelay
            self.dispatchWhenIdle = dispatchWhenIdle
            self.maxConcurrentPasses = maxConcurrentPasses
            self.threadsPerPass = threadsPerPass
        }
    }

    /// One request's answer.
    public struct Answer: Sendable {
        /// `rows × outputs` logits (pre-softmax).
        public let logits: [Float]
        /// Rows in the forward pass this request was part of.
        public let batchRows: Int
        /// Requests in that forward pass.
        public let batchRequests: Int
    }

    private struct Pending: Sendable {
        let rows: [Float]
        let count: Int
        let enqueuedAt: ContinuousClock.Instant
        let continuation: CheckedContinuation<Answer, Error>
    }

    private struct Lane: Sendable {
        let model: MLPModel
        var items: [Pending] = []
        var rows = 0
    }

    /// A batch taken off a lane, to be run outside the lock.
    private struct Batch: Sendable {
        let model: MLPModel
        let items: [Pending]
        let rows: Int
    }

    private struct State: Sendable {
        var lanes: [String: Lane] = [:]
        var running = 0
        var passes = 0
        var requests = 0
        var samples = Samples()
        var sampling = false
    }

    /// Timings, for benchmarks: how long requests waited in the batcher and how long passes ran.
    public struct Samples: Sendable {
        /// Seconds from `submit` to the start of the request's pass.
        public var waits: [Double] = []
        /// Seconds each pass ran, with its rows.
        public var passes: [(seconds: Double, rows: Int)] = []

        mutating func add(wait: Double) { if waits.count < 100_000 { waits.append(wait) } }
        mutating func add(pass: Double, rows: Int) { if passes.count < 100_000 { passes.append((pass, rows)) } }
    }

    /// Takes the timings recorded since the last call (the first 100,000 of each). Recording starts with the
    /// first call, so a worker that never asks keeps none.
    public func takeSamples() -> Samples {
        state.withLock { state in
            defer { state.samples = Samples(); state.sampling = true }
            return state.samples
        }
    }

    /// What a locked decision asks the caller to do once the lock is released.
    private struct Actions: Sendable {
        var batches: [Batch] = []
        var timers: [ContinuousClock.Instant] = []
    }

    /// The configuration in force.
    public let configuration: Configuration
    private let executor: ComputeExecutor
    /// Passes allowed at once: the compute threads.
    private let maxRunningPasses: Int
    /// Threads each batched pass uses.
    public let passThreads: Int
    private let state = Mutex(State())
    private let timers = DispatchQueue(label: "jobfarm.batcher.timers")

    /// Creates a batcher running passes on `executor`.
    public init(configuration: Configuration, executor: ComputeExecutor) {
        self.configuration = configuration
        self.executor = executor
        self.maxRunningPasses = Self.runningPasses(configuration: configuration, computeThreads: executor.threadCount)
        self.passThreads = Self.passThreads(configuration: configuration, computeThreads: executor.threadCount)
    }

    static func runningPasses(configuration: Configuration, computeThreads: Int) -> Int {
        max(1, min(configuration.maxConcurrentPasses ?? computeThreads, computeThreads))
    }

    /// The threads each batched pass uses with `computeThreads` compute threads.
    public static func passThreads(configuration: Configuration, computeThreads: Int) -> Int {
        // Split passes share one pool of kernel threads, one layer at a time: with several passes at once each
        // pass runs on its own lane instead.
        runningPasses(configuration: configuration, computeThreads: computeThreads) > 1
            ? 1 : max(1, configuration.threadsPerPass ?? computeThreads)
    }

    /// Forward passes run so far (for tests and benchmarks).
    public var passes: Int { state.withLock { $0.passes } }
    /// Requests served so far.
    public var requests: Int { state.withLock { $0.requests } }

    /// Runs `count` rows through `model` (batched with other requests of the same `key`) and returns the logits.
    public func submit(key: String, model: MLPModel, rows: [Float], count: Int) async throws -> Answer {
        guard count >= 1, rows.count == count * model.inputSize else {
            throw ComputeError.shapeMismatch("request has \(rows.count) values for \(count) rows of \(model.inputSize) features")
        }
        if let index = rows.firstIndex(where: { !$0.isFinite }) {
            throw ComputeError.nonFiniteValue("input row \(index / model.inputSize) feature \(index % model.inputSize) is \(rows[index])")
        }
        guard configuration.enabled, count < configuration.maxBatch else {
            state.withLock {
                $0.requests += 1
                $0.passes += 1
            }
            let logits = try await executor.run { try model.logits(rows: rows, batch: count) }
            return Answer(logits: logits, batchRows: count, batchRequests: 1)
        }
        return try await withCheckedThrowingContinuation { continuation in
            let item = Pending(rows: rows, count: count, enqueuedAt: .now, continuation: continuation)
            let actions = state.withLock { state in enqueue(&state, key: key, model: model, item) }
            perform(actions)
        }
    }

    // MARK: - Decisions (under the lock)

    private func enqueue(_ state: inout State, key: String, model: MLPModel, _ item: Pending) -> Actions {
        state.requests += 1
        var lane = state.lanes[key] ?? Lane(model: model)
        let wasEmpty = lane.items.isEmpty
        lane.items.append(item)
        lane.rows += item.count
        state.lanes[key] = lane
        if lane.rows >= configuration.maxBatch {
            return readyBatches(&state, now: .now)
        }
        if configuration.dispatchWhenIdle && state.running == 0 {
            var actions = Actions()
            take(&state, key: key, into: &actions)
            return actions
        }
        var actions = Actions()
        if wasEmpty { actions.timers.append(item.enqueuedAt + configuration.maxDelay) }
        return actions
    }

    /// Batches of every ready lane (full, or oldest request waited `maxDelay`), oldest first, while threads are free.
    private func readyBatches(_ state: inout State, now: ContinuousClock.Instant) -> Actions {
        var actions = Actions()
        while state.running < maxRunningPasses {
            let ready = state.lanes.filter { _, lane in
                guard let first = lane.items.first else { return false }
                return lane.rows >= configuration.maxBatch || now >= first.enqueuedAt + configuration.maxDelay
            }.min { $0.value.items[0].enqueuedAt < $1.value.items[0].enqueuedAt }
            guard let (key, _) = ready else { break }
            take(&state, key: key, into: &actions)
        }
        return actions
    }

    /// Takes up to `maxBatch` rows from the front of a lane as one batch.
    private func take(_ state: inout State, key: String, into actions: inout Actions) {
        guard var lane = state.lanes[key], !lane.items.isEmpty else { return }
        var taken: [Pending] = []
        var rows = 0
        while let next = lane.items.first, taken.isEmpty || rows + next.count <= configuration.maxBatch {
            taken.append(next)
            rows += next.count
            lane.items.removeFirst()
        }
        lane.rows -= rows
        if lane.items.isEmpty {
            state.lanes[key] = nil
        } else {
            state.lanes[key] = lane
            actions.timers.append(lane.items[0].enqueuedAt + configuration.maxDelay)
        }
        state.running += 1
        state.passes += 1
        actions.batches.append(Batch(model: lane.model, items: taken, rows: rows))
    }

    // MARK: - Effects (outside the lock)

    private func perform(_ actions: Actions) {
        for batch in actions.batches { run(batch) }
        for deadline in actions.timers { arm(deadline) }
    }

    private func arm(_ deadline: ContinuousClock.Instant) {
        let delay = max(.zero, deadline - .now)
        let (seconds, attoseconds) = delay.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000) + 50_000
        timers.asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) {
            let actions = self.state.withLock { state in self.readyBatches(&state, now: .now) }
            self.perform(actions)
        }
    }

    /// Runs one pass on a compute thread, which answers every request and starts whatever became ready.
    private func run(_ batch: Batch) {
        executor.submit {
            let started = ContinuousClock.now
            var input = [Float]()
            input.reserveCapacity(batch.rows * batch.model.inputSize)
            for item in batch.items { input.append(contentsOf: item.rows) }
            do {
                let logits = try batch.model.logits(rows: input, batch: batch.rows, threads: self.passThreads)
                let width = batch.model.outputSize
                var offset = 0
                for item in batch.items {
                    let slice = Array(logits[(offset * width)..<((offset + item.count) * width)])
                    item.continuation.resume(returning: Answer(logits: slice, batchRows: batch.rows, batchRequests: batch.items.count))
                    offset += item.count
                }
            } catch {
                for item in batch.items { item.continuation.resume(throwing: error) }
            }
            let elapsed = ContinuousClock.now - started
            let seconds = elapsed.seconds
            InferenceMetrics.pass(rows: batch.rows, requests: batch.items.count, time: elapsed)
            let next = self.state.withLock { state -> Actions in
                state.running -= 1
                if state.sampling {
                    state.samples.add(pass: seconds, rows: batch.rows)
                    for item in batch.items { state.samples.add(wait: (started - item.enqueuedAt).seconds) }
                }
                return self.readyBatches(&state, now: .now)
            }
            self.perform(next)
        }
    }
}
