import Compute
import Foundation
import Logging
import Synchronization

/// Where a worker's small-batch kernel limits come from (docs/JOBS.md, "Small-batch kernel limits").
public enum KernelLimitsPlan: Equatable, Sendable {
    /// The built-in limits (`SmallBatchKernel.defaultLimits`); `reason` goes to the log.
    case defaulted(reason: String)
    /// The figures a worker of this machine measured before.
    case cached(SmallBatchLimitsCache.Entry)
    /// Measure now (`SmallBatchKernel.calibrate()`), in the background, and cache the figures.
    case measure
}

extension MLJobOptions {
    /// Whether the queues this worker serves can carry ML jobs: every queue (`servedQueues` nil), or one of
    /// `mlQueues` among them (`*` in `mlQueues`: any queue).
    public var servesMLQueue: Bool {
        guard let servedQueues else { return true }
        return mlQueues.contains("*") || servedQueues.contains(where: mlQueues.contains)
    }

    /// The thread counts whose split limits this worker measures (`SmallBatchKernel.calibrateSplit`): its batched
    /// passes' threads when they are more than one (none without batching).
    public func splitThreads(cores: Int = ProcessInfo.processInfo.activeProcessorCount) -> [Int] {
        guard batching.enabled else { return [] }
        let threads = DynamicBatcher.passThreads(configuration: batching, computeThreads: resolvedComputeThreads(cores: cores))
        return threads > 1 ? [threads] : []
    }

    /// The plan for this process's small-batch kernel limits. `anyQueue` leaves the served queues out of it (an ML
    /// job came after all). Pure: the caller passes the cache's entry for this process's key.
    public func kernelLimitsPlan(accelerated: Bool, cached: SmallBatchLimitsCache.Entry?, anyQueue: Bool = false) -> KernelLimitsPlan {
        guard calibrateKernels else { return .defaulted(reason: "calibration off (JOBFARM_KERNEL_CALIBRATION=0)") }
        guard accelerated else { return .defaulted(reason: "no AVX2/FMA/F16C on this CPU: sgemm at every batch") }
        if !anyQueue && !servesMLQueue {
            let served = (servedQueues ?? []).joined(separator: ",")
            return .defaulted(reason: "no ML queue served (--queues \(served); ML queues: \(mlQueues.joined(separator: ",")), JOBFARM_ML_QUEUES); measured or read from the cache if an ML job comes")
        }
        if let cached { return .cached(cached) }
        return .measure
    }
}

/// Sets this process's small-batch kernel limits once: from the cache, by measuring in the background (and caching
/// the figures), or not at all (defaults). A worker that serves no ML queue puts it off until an ML job arrives.
final class KernelLimitsSetup: Sendable {
    private enum Stage { case idle, deferred, done }

    private let options: MLJobOptions
    private let logger: Logger
    private let stage = Mutex(Stage.idle)
    /// Lets `ensureStarted()` skip the lock once the limits are settled.
    private let settled = Atomic<Bool>(false)

    init(options: MLJobOptions, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    private var cachePath: String? { options.cacheDirectory.map { $0 + "/" + SmallBatchLimitsCache.fileName } }

    /// At start: decides, applies cached figures or starts the measurement. Returns what the start log says
    /// (`small_batch_limits`).
    func start() -> String { begin(anyQueue: false) ?? "already settled" }

    /// Before an ML job's forward pass: a worker that put the limits off (no ML queue served) settles them now.
    func ensureStarted() {
        if settled.load(ordering: .relaxed) { return }
        guard stage.withLock({ $0 == .deferred }), let summary = begin(anyQueue: true) else { return }
        logger.info("an ML job came to a worker that serves no ML queue", metadata: ["small_batch_limits": "\"\(summary)\""])
    }

    /// Nil when the limits were settled already.
    private func begin(anyQueue: Bool) -> String? {
        let splitThreads = options.splitThreads()
        let key = SmallBatchLimitsCache.currentKey(splitThreads: splitThreads)
        // The file is read only by a worker that may use what it holds.
        let useful = options.calibrateKernels && SmallBatchKernel.accelerated && (anyQueue || options.servesMLQueue)
        let cached = useful ? cachePath.flatMap { SmallBatchLimitsCache.load(path: $0).entry(for: key) } : nil
        let plan = options.kernelLimitsPlan(accelerated: SmallBatchKernel.accelerated, cached: cached, anyQueue: anyQueue)
        var next = Stage.done
        if case .defaulted = plan, !anyQueue, !options.servesMLQueue { next = .deferred }
        let proceed = stage.withLock { stage -> Bool in
            guard stage != .done else { return false }
            stage = next
            return true
        }
        guard proceed else { return nil }
        if next == .done { settled.store(true, ordering: .relaxed) }
        let defaults = Self.format(SmallBatchKernel.limits)
        switch plan {
        case .defaulted(let reason):
            return "defaulted (\(defaults) rows): \(reason)"
        case .cached(let entry):
            entry.apply()
            return "cached (\(Self.format(entry)) rows, measured \(entry.measuredAt))"
        case .measure:
            let thread = Thread { [self] in measure(key: key, splitThreads: splitThreads) }
            thread.name = "jf.calibrate"
            thread.start()
            return "measuring in the background (\(defaults) rows meanwhile; then cached in \(cachePath ?? "nothing: no cache directory"))"
        }
    }

    /// Measures at the compute threads' priority, one worker of the machine at a time (a lock file beside the cache):
    /// a worker that waited reads the figures the other one wrote.
    private func measure(key: String, splitThreads: [Int]) {
        if options.computeNice != 0 { ComputeThreadPriority.setCurrentThread(nice: options.computeNice) }
        var lock: Int32 = -1
        if let directory = options.cacheDirectory {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            lock = open(directory + "/" + SmallBatchLimitsCache.lockFileName, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
            if lock >= 0 { while flock(lock, LOCK_EX) != 0 && errno == EINTR {} }
        }
        defer { if lock >= 0 { close(lock) } }
        if let path = cachePath, let entry = SmallBatchLimitsCache.load(path: path).entry(for: key) {
            entry.apply()
            logger.info("small-batch kernel limits read from the cache (another worker measured them meanwhile)", metadata: [
                "small_batch_limits": "\"cached (\(Self.format(entry)) rows)\""])
            return
        }
        let before = SmallBatchKernel.limits
        let results = SmallBatchKernel.calibrate()
        let limits = SmallBatchKernel.limits
        var splitLimits: [String: [Int]] = [:]
        var details = results.map(\.description)
        for threads in splitThreads {
            let split = SmallBatchKernel.calibrateSplit(threads: threads)
            details += split.map(\.description)
            if !split.isEmpty { splitLimits[String(threads)] = split.map(\.limit) }
        }
        // FP16 and int8 layers' own limits: their OpenBLAS path converts the weights first.
        var precisions: [String: SmallBatchLimitsCache.PrecisionLimits] = [:]
        for precision in [Precision.fp16, .int8] {
            let one = SmallBatchKernel.calibrate(precision: precision, threads: 1)
            details += one.map(\.description)
            guard one.count == SmallBatchKernel.SizeClass.allCases.count else { continue }
            var entry = SmallBatchLimitsCache.PrecisionLimits(limits: one.map(\.limit))
            for threads in splitThreads where threads > 1 {
                let split = SmallBatchKernel.calibrate(precision: precision, threads: threads)
                details += split.map(\.description)
                if split.count == SmallBatchKernel.SizeClass.allCases.count {
                    entry.splitLimits = (entry.splitLimits ?? [:]).merging([String(threads): split.map(\.limit)]) { $1 }
                }
            }
            precisions[precision.rawValue] = entry
        }
        let detail = details.joined(separator: "; ")
        let entry = SmallBatchLimitsCache.Entry(measuredAt: ISO8601DateFormatter().string(from: Date()), limits: limits,
                                                detail: detail, splitLimits: splitLimits.isEmpty ? nil : splitLimits,
                                                precisions: precisions.isEmpty ? nil : precisions)
        var cacheNote = "not cached: no cache directory (set JOBFARM_CACHE_DIR or HOME)"
        if let path = cachePath {
            var cache = SmallBatchLimitsCache.load(path: path)
            cache.entries[key] = entry
            do {
                try cache.store(path: path)
                cacheNote = path
            } catch {
                cacheNote = "not cached: \(error) (check that \(path) is writable)"
            }
        }
        logger.info("small-batch kernel limits measured", metadata: [
            "small_batch_limits": "\"measured (\(Self.format(entry)) rows; defaults \(Self.format(before)))\"",
            "cache": "\"\(cacheNote)\"",
            "detail": "\"\(detail)\"",
        ])
    }

    static func format(_ limits: [Int]) -> String { limits.map(String.init).joined(separator: "/") }

    /// `16/16/32`, then each thread count's split limits: `16/16/32, split on 2 threads 24/32/48`, then FP16's and
    /// int8's the same way: `; fp16 64/96/128, split on 2 threads 128/128/128`.
    static func format(_ entry: SmallBatchLimitsCache.Entry) -> String {
        func split(_ table: [String: [Int]]?) -> String {
            (table ?? [:]).sorted { $0.key < $1.key }.map { ", split on \($0.key) threads \(format($0.value))" }.joined()
        }
        return format(entry.limits) + split(entry.splitLimits)
            + (entry.precisions ?? [:]).sorted { $0.key < $1.key }.map { "; \($0.key) \(format($0.value.limits))\(split($0.value.splitLimits))" }.joined()
    }
}
