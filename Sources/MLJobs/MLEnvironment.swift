import Compute
import Dispatch
import Foundation
import JobQueue
import JobWorker
import Logging
import ModelStore
import RedisClient
import Synchronization

/// Runs blocking compute (BLAS forward passes, training, statistics) on threads of its own, never on Swift's
/// cooperative pool, and awaits the result. Work goes to the lane with the fewest pending items.
///
/// Each lane is a dedicated thread, started with a `nice` value (5 by default) so that the worker's
/// coordination — Redis replies, the cooperative pool, a Redis server on the same machine — preempts a running
/// forward pass at once instead of waiting for the scheduler's time slice: on a machine whose cores are all
/// computing, every hand-off of a job otherwise costs up to a few milliseconds. The helper threads of the
/// small-batch kernels take the same value (`ComputeThreadPriority`).
public final class ComputeExecutor: Sendable {
    private final class Lane: @unchecked Sendable {
        // Guarded by `condition`.
        private var work: [@Sendable () -> Void] = []
        private var stopping = false
        private let condition = NSCondition()

        init(name: String, nice: Int32) {
            let thread = Thread { [self] in
                if nice != 0 { ComputeThreadPriority.setCurrentThread(nice: Int(nice)) }
                while true {
                    condition.lock()
                    while work.isEmpty && !stopping { condition.wait() }
                    if work.isEmpty {  // stopping, and nothing left to run
                        condition.unlock()
                        return
                    }
                    let next = work.removeFirst()
                    condition.unlock()
                    next()
                }
            }
            thread.name = name
            thread.start()
        }

        func async(_ body: @escaping @Sendable () -> Void) {
            condition.lock()
            work.append(body)
            condition.signal()
            condition.unlock()
        }

        /// Lets the thread end once its queue is empty.
        func stop() {
            condition.lock()
            stopping = true
            condition.signal()
            condition.unlock()
        }
    }

    private let lanes: [Lane]
    private let pending: Mutex<[Int]>

    /// Creates `threads` lanes whose threads run at `nice` (0 = the process's own priority). The threads end when
    /// the executor is released, after the work already submitted.
    public init(threads: Int, nice: Int = 5) {
        let count = max(1, threads)
        let niceValue = Int32(clamping: max(0, min(19, nice)))
        ComputeThreadPriority.setKernelHelpers(nice: Int(niceValue))
        // Linux thread names hold 15 bytes.
        lanes = (0..<count).map { Lane(name: "jf.compute.\($0)", nice: niceValue) }
        pending = Mutex([Int](repeating: 0, count: count))
    }

    deinit {
        for lane in lanes { lane.stop() }
    }

    /// Number of lanes.
    public var threadCount: Int { lanes.count }

    /// Runs `body` on a compute lane without waiting for it (the caller resumes whoever waits from `body`).
    public func submit(_ body: @escaping @Sendable () -> Void) {
        let lane = pending.withLock { counts -> Int in
            let index = counts.indices.min { counts[$0] < counts[$1] } ?? 0
            counts[index] += 1
            return index
        }
        lanes[lane].async {
            body()
            self.pending.withLock { $0[lane] -= 1 }
        }
    }

    /// Runs `body` on a compute lane and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit { continuation.resume(with: Result { try body() }) }
        }
    }
}

/// What every ML handler of one worker process shares: the registry connections, the model cache,
/// the dynamic batcher and the compute threads.
public final class MLEnvironment: Sendable {
    /// The farm the worker serves.
    public let farm: JobFarm
    /// The options in force.
    public let options: MLJobOptions
    /// The model registry (its own Redis connection).
    public let models: ModelRegistry
    /// The dataset store.
    public let datasets: DatasetStore
    /// Loaded models, LRU by bytes.
    public let cache: ModelCache
    /// Groups concurrent inference requests.
    public let batcher: DynamicBatcher
    /// Threads for blocking compute.
    public let executor: ComputeExecutor
    private let resolved: Mutex<[String: (version: ModelVersion, at: ContinuousClock.Instant)]> = Mutex([:])

    /// Sets the small-batch kernel limits (cached, measured or defaults).
    let kernelLimits: KernelLimitsSetup

    /// Creates the environment; opens no connection until first use.
    public init(farm: JobFarm, options: MLJobOptions, logger: Logger = Logger(label: "jobfarm.ml")) {
        self.farm = farm
        self.options = options
        kernelLimits = KernelLimitsSetup(options: options, logger: logger)
        let client = RedisClient(configuration: farm.configuration.redis, name: "ml-models")
        models = ModelRegistry(client: client, namespace: farm.configuration.namespace)
        datasets = DatasetStore(
            client: RedisClient(configuration: farm.configuration.redis, name: "ml-datasets"),
            namespace: farm.configuration.namespace)
        cache = ModelCache(capacityBytes: options.modelCacheBytes, idleTimeout: options.modelIdleTimeout)
        executor = ComputeExecutor(threads: options.resolvedComputeThreads(), nice: options.computeNice)
        batcher = DynamicBatcher(configuration: options.batching, executor: executor)
    }

    /// Resolves a model reference; pinned versions are remembered for good, aliases and `latest` for `referenceTTL`.
    /// `forServing`: as an inference request does (`ModelRegistry.resolveForServing`: a precision asked for by name
    /// is served only by a version validated against its FP32 source).
    public func resolve(_ text: String, forServing: Bool = false) async throws -> ModelVersion {
        let now = ContinuousClock.now
        let key = forServing ? "serve " + text : text
        if let hit = resolved.withLock({ $0[key] }) {
            let pinned: Bool
            if case .version = try ModelReference(parsing: text).selector { pinned = true } else { pinned = false }
            if pinned || now - hit.at < options.referenceTTL { return hit.version }
        }
        let version = forServing ? try await models.resolveForServing(ModelReference(parsing: text)) : try await models.resolve(text)
        resolved.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[key] = (version, now)
        }
        return version
    }

    /// Forgets cached alias resolutions (after this process moved an alias).
    public func forgetResolutions() { resolved.withLock { $0.removeAll() } }

    /// The model of `version` at `precision` (the stored precision when nil), from the cache or loaded.
    public func model(_ version: ModelVersion, precision: Precision?) async throws -> MLPModel {
        kernelLimits.ensureStarted()
        let stored = Precision(rawValue: version.precision)
        let target = precision ?? stored ?? .fp32
        let base = try await cache.model(for: version.sha256 + "|stored") { [models] in try await models.load(version) }
        if target == stored { return base }
        return try await cache.model(for: version.sha256 + "|" + target.rawValue) { [executor] in
            try await executor.run { try Quantization.convert(base, to: target).model }
        }
    }
}

/// Maps registry, compute and decoding errors of bad input to `JobError.nonRetryable`; connection errors stay
/// retryable.
func classify(_ error: Error, _ context: String = "") -> Error {
    let prefix = context.isEmpty ? "" : context + ": "
    switch error {
    case let error as ComputeError: return JobError.nonRetryable(prefix + error.description)
    case let error as ModelStoreError:
        // A local disk problem (spooling a farm dataset) is the worker's, not the input's: another attempt may succeed.
        if case .io = error { return JobError.retryable(prefix + error.description) }
        return JobError.nonRetryable(prefix + error.description)
    case let error as RedisError: return JobError.retryable(prefix + "\(error)")
    default: return error
    }
}

/// Runs `body`, turning bad-input errors into `JobError.nonRetryable`.
func classifying<T>(_ context: String = "", _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        throw classify(error, context)
    }
}
