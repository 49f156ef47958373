import Compute
import Foundation
import JobQueue
import JobWorker
import Logging

/// Per-worker settings of the ML job kinds. One struct with defaults, passed in.
public struct MLJobOptions: Sendable {
    /// Dynamic batching of `inference` requests (Triton-style).
    public var batching: DynamicBatcher.Configuration
    /// The worker's job concurrency (how many handlers run at once); used to choose BLAS threads.
    public var workerConcurrency: Int
    /// OpenBLAS threads; nil chooses: 1 when `workerConcurrency > 1`, else every core.
    public var blasThreads: Int?
    /// Dedicated compute threads that run forward passes and training (never the cooperative pool);
    /// nil chooses `cores / blasThreads` (at least 1).
    public var computeThreads: Int?
    /// Nice value of the compute threads (0…19): above 0, the worker's coordination threads and a Redis server on
    /// the same machine preempt a forward pass at once. Default 5.
    public var computeNice: Int
    /// Measure the small-batch kernels' batch limits against `sgemm` on this machine (`SmallBatchKernel.calibrate()`,
    /// ~0.9 s of one core, in the background) unless `cacheDirectory` holds this machine's figures, and only when
    /// the worker can get ML jobs (`servesMLQueue`). On in `fromEnvironment()` (what `jobfarm worker` uses) unless
    /// `JOBFARM_KERNEL_CALIBRATION=0`; off by default otherwise (tests, embedders).
    public var calibrateKernels: Bool = false
    /// Where measured limits are cached (`small-batch-limits.json`, beside the OpenBLAS kernel choice); nil: measured
    /// at every start. `fromEnvironment()` sets `JOBFARM_CACHE_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/jobfarm`.
    public var cacheDirectory: String?
    /// The queues this worker serves (`jobfarm worker --queues`); nil: every queue.
    public var servedQueues: [String]?
    /// The queues ML jobs are sent to (`JOBFARM_ML_QUEUES`, default `ml`; `*`: any). A worker serving none of them
    /// keeps the default kernel limits until an ML job reaches it anyway.
    public var mlQueues: [String] = ["ml"]
    /// Bytes of model tensors cached per process.
    public var modelCacheBytes: Int
    /// Cached models unused this long are dropped.
    public var modelIdleTimeout: Duration?
    /// How long an alias or `latest` resolution is reused before asking Redis again.
    public var referenceTTL: Duration
    /// Relative dataset paths are resolved against this directory (default: the working directory).
    public var dataRoot: String?
    /// `farm:NAME` datasets are streamed from Redis into `<spoolDirectory>/jobfarm-datasets/<sha256>.<npy|csv>` and
    /// read from there; nil: the system temporary directory.
    public var spoolDirectory: String?
    /// Bytes of complete copies the spool directory may hold: after each new file is spooled, least recently used
    /// copies (by modification time, refreshed on reuse) are deleted until they fit, never the one just written nor
    /// one a job of this process has open (so a single dataset larger than the bound is still spooled and read).
    public var spoolCacheBytes: Int
    /// Most rows one `inference` job may carry.
    public var maxInferenceRows: Int
    /// Matrices (covariance, correlation, PCA components) with more columns than this are stored as
    /// farm datasets and referenced from the result instead of embedded.
    public var maxEmbeddedMatrixColumns: Int
    /// How the OpenBLAS kernels were chosen, for the start log (`blas_choice`); `jobfarm worker` sets it from its
    /// kernel chooser: "measured: Zen 81.1 vs Haswell 83.3 GFLOP/s (geomean b=64,512; within 5%, the library's own
    /// kept); cached", "only candidate", "set by the environment (OPENBLAS_CORETYPE=SkylakeX)". Nil: no chooser ran
    /// in this process.
    public var blasChoice: String?

    /// The defaults, overridable from the environment: `JOBFARM_ML_MAX_BATCH`, `JOBFARM_ML_MAX_DELAY_MS`
    /// (0 disables batching), `JOBFARM_ML_CONCURRENCY`, `JOBFARM_BLAS_THREADS`, `JOBFARM_COMPUTE_NICE`, `JOBFARM_ML_CACHE_MB`,
    /// `JOBFARM_DATA_ROOT`, `JOBFARM_SPOOL_DIR`, `JOBFARM_SPOOL_CACHE_MB`.
    public init(
        batching: DynamicBatcher.Configuration = .init(), workerConcurrency: Int = 10, blasThreads: Int? = nil,
        computeThreads: Int? = nil, computeNice: Int = 5, modelCacheBytes: Int = 512 << 20, modelIdleTimeout: Duration? = .seconds(600),
        referenceTTL: Duration = .seconds(1), dataRoot: String? = nil, spoolDirectory: String? = nil,
        spoolCacheBytes: Int = 4 << 30, maxInferenceRows: Int = 4096, maxEmbeddedMatrixColumns: Int = 32
    ) {
        self.batching = batching
        self.workerConcurrency = workerConcurrency
        self.blasThreads = blasThreads
        self.computeThreads = computeThreads
        self.computeNice = computeNice
        self.modelCacheBytes = modelCacheBytes
        self.modelIdleTimeout = modelIdleTimeout
        self.referenceTTL = referenceTTL
        self.dataRoot = dataRoot
        self.spoolDirectory = spoolDirectory
        self.spoolCacheBytes = spoolCacheBytes
        self.maxInferenceRows = maxInferenceRows
        self.maxEmbeddedMatrixColumns = maxEmbeddedMatrixColumns
    }

    /// Defaults with the `JOBFARM_*` environment overrides applied (what `jobfarm worker` uses).
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> MLJobOptions {
        var options = MLJobOptions()
        if let v = environment["JOBFARM_ML_MAX_BATCH"].flatMap(Int.init), v >= 1 { options.batching.maxBatch = v }
        if let v = environment["JOBFARM_ML_MAX_DELAY_MS"].flatMap(Double.init), v >= 0 {
            options.batching.maxDelay = .microseconds(Int64(v * 1000))
            options.batching.enabled = v > 0
        }
        if let v = environment["JOBFARM_ML_CONCURRENCY"].flatMap(Int.init), v >= 1 { options.workerConcurrency = v }
        if let v = environment["JOBFARM_BLAS_THREADS"].flatMap(Int.init), v >= 1 { options.blasThreads = v }
        if let v = environment["JOBFARM_COMPUTE_NICE"].flatMap(Int.init), (0...19).contains(v) { options.computeNice = v }
        options.calibrateKernels = !["0", "false", "off", "no"].contains(environment["JOBFARM_KERNEL_CALIBRATION"]?.lowercased() ?? "")
        options.cacheDirectory = BLASKernelChooser.cacheDirectory(environment: environment)
        if let list = environment["JOBFARM_ML_QUEUES"] {
            let queues = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if !queues.isEmpty { options.mlQueues = queues }
        }
        if let v = environment["JOBFARM_ML_CACHE_MB"].flatMap(Int.init), v >= 0 { options.modelCacheBytes = v << 20 }
        if let v = environment["JOBFARM_DATA_ROOT"] { options.dataRoot = v }
        if let v = environment["JOBFARM_SPOOL_DIR"], !v.isEmpty { options.spoolDirectory = v }
        if let v = environment["JOBFARM_SPOOL_CACHE_MB"].flatMap(Int.init), v >= 0, v <= Int.max >> 20 { options.spoolCacheBytes = v << 20 }
        return options
    }

    /// The BLAS thread count these options lead to on a machine with `cores` cores.
    public func resolvedBLASThreads(cores: Int = ProcessInfo.processInfo.activeProcessorCount) -> Int {
        if let blasThreads { return max(1, blasThreads) }
        return workerConcurrency > 1 ? 1 : max(1, cores)
    }

    /// The compute thread count these options lead to.
    public func resolvedComputeThreads(cores: Int = ProcessInfo.processInfo.activeProcessorCount) -> Int {
        if let computeThreads { return max(1, computeThreads) }
        return max(1, cores / resolvedBLASThreads(cores: cores))
    }
}

/// Registers `inference`, `batch_analysis`, `quantize`, `validate` and `train` for a worker of `farm`.
///
/// Sets the process's OpenBLAS thread count from `options` (BLAS threads × compute threads ≤ cores) and logs it
/// with the kernel family OpenBLAS runs and how it was chosen (`options.blasChoice`).
/// - Returns: the shared environment (model cache, batcher), for tests and benchmarks.
@discardableResult
public func registerMLJobs(
    into registry: inout HandlerRegistry, farm: JobFarm, options: MLJobOptions = .fromEnvironment(),
    logger: Logger = Logger(label: "jobfarm.ml")
) -> MLEnvironment {
    let environment = MLEnvironment(farm: farm, options: options, logger: logger)
    BLASThreads.set(options.resolvedBLASThreads())
    // After the thread count is set: it is part of what the limits depend on.
    let limits = environment.kernelLimits.start()
    logger.info("ML kinds ready", metadata: [
        "blas_core": "\(BLASInfo.coreName)", "blas_threads": "\(BLASThreads.current)",
        "blas_choice": "\"\(options.blasChoice ?? "not measured (no kernel chooser in this process)")\"",
        "compute_threads": "\(options.resolvedComputeThreads())", "compute_nice": "\(options.computeNice)",
        "small_batch_kernels": "\(SmallBatchKernel.accelerated ? SmallBatchKernel.instructionSet == .avx512 ? "avx512" : "avx2" : "off (no AVX2/FMA/F16C)")",
        "small_batch_limits": "\"\(limits)\"",
        "openblas_coretype": "\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(auto)")",
        "openblas_thread_timeout": "\(ProcessInfo.processInfo.environment["OPENBLAS_THREAD_TIMEOUT"] ?? "(OpenBLAS default)")",
        "f16c": "\(FP16Conversion.hardwareAccelerated)",
        "batching": "\(options.batching.enabled ? "maxBatch=\(options.batching.maxBatch) maxDelay=\(options.batching.maxDelay) passThreads=\(environment.batcher.passThreads)" : "off")",
    ])
    registry.register(InferenceJob(environment: environment))
    registry.register(BatchAnalysisJob(environment: environment))
    registry.register(QuantizeJob(environment: environment))
    registry.register(ValidateJob(environment: environment))
    registry.register(TrainJob(environment: environment))
    registry.register(PromoteJob(environment: environment))
    return environment
}
