import Compute
import MLJobs
import Testing

/// Where a worker's small-batch kernel limits come from: pure decisions, with injected cache entries.
@Suite struct KernelLimitsPlanTests {
    let cached = SmallBatchLimitsCache.Entry(measuredAt: "2026-11-30T12:00:00Z", limits: [16, 16, 32], detail: "injected")

    func options(queues: [String]?, environment: [String: String] = [:]) -> MLJobOptions {
        var options = MLJobOptions.fromEnvironment(environment)
        options.servedQueues = queues
        return options
    }

    @Test func aWorkerThatCanGetMLJobsUsesTheCacheOrMeasures() {
        for queues in [nil, ["ml"], ["default", "ml"]] {
            #expect(options(queues: queues).kernelLimitsPlan(accelerated: true, cached: cached) == .cached(cached), "\(queues ?? [])")
            #expect(options(queues: queues).kernelLimitsPlan(accelerated: true, cached: nil) == .measure, "\(queues ?? [])")
        }
    }

    @Test func aWorkerWithoutAnMLQueueKeepsTheDefaults() {
        let plan = options(queues: ["default", "bench"]).kernelLimitsPlan(accelerated: true, cached: cached)
        guard case .defaulted(let reason) = plan else { Issue.record("\(plan)"); return }
        #expect(reason.contains("no ML queue served (--queues default,bench; ML queues: ml"), "\(reason)")
        // Until an ML job comes anyway.
        #expect(options(queues: ["default"]).kernelLimitsPlan(accelerated: true, cached: nil, anyQueue: true) == .measure)
    }

    @Test func theMLQueuesCanBeNamed() {
        let named = options(queues: ["inference", "default"], environment: ["JOBFARM_ML_QUEUES": "inference, training"])
        #expect(named.mlQueues == ["inference", "training"])
        #expect(named.kernelLimitsPlan(accelerated: true, cached: nil) == .measure)
        let any = options(queues: ["default"], environment: ["JOBFARM_ML_QUEUES": "*"])
        #expect(any.kernelLimitsPlan(accelerated: true, cached: nil) == .measure)
        #expect(options(queues: ["ml"], environment: ["JOBFARM_ML_QUEUES": " , "]).mlQueues == ["ml"], "an empty list keeps the default")
    }

    @Test func explicitSettingsAndCPUsWithoutTheKernels() {
        for value in ["0", "off", "false", "no"] {
            let plan = options(queues: ["ml"], environment: ["JOBFARM_KERNEL_CALIBRATION": value]).kernelLimitsPlan(accelerated: true, cached: cached)
            #expect(plan == .defaulted(reason: "calibration off (JOBFARM_KERNEL_CALIBRATION=0)"), "\(value)")
        }
        // Off unless asked for outside `jobfarm worker` (tests, embedders).
        var embedded = MLJobOptions()
        embedded.servedQueues = ["ml"]
        #expect(embedded.kernelLimitsPlan(accelerated: true, cached: cached) == .defaulted(reason: "calibration off (JOBFARM_KERNEL_CALIBRATION=0)"))
        guard case .defaulted = options(queues: ["ml"]).kernelLimitsPlan(accelerated: false, cached: cached) else {
            Issue.record("a CPU without AVX2/FMA/F16C never uses the small-batch kernels")
            return
        }
    }

    @Test func theCacheDirectoryIsTheKernelChoicesOne() {
        #expect(options(queues: nil, environment: ["JOBFARM_CACHE_DIR": "/var/cache/jf", "HOME": "/home/x"]).cacheDirectory == "/var/cache/jf")
        #expect(options(queues: nil, environment: ["HOME": "/home/x"]).cacheDirectory == "/home/x/.cache/jobfarm")
        #expect(options(queues: nil, environment: [:]).cacheDirectory == nil)
    }

    /// The split limits measured at start are those of the batcher's passes: one pass at a time across the compute
    /// threads; none when passes run side by side on one thread each or batching is off.
    @Test func splitThreadsFollowTheBatchersPasses() {
        var options = MLJobOptions.fromEnvironment([:])
        options.blasThreads = 1
        options.computeThreads = 4
        options.batching = .init(enabled: true, maxConcurrentPasses: 1)
        #expect(options.splitThreads(cores: 4) == [4])
        options.batching.threadsPerPass = 2
        #expect(options.splitThreads(cores: 4) == [2])
        options.batching.maxConcurrentPasses = 2
        #expect(options.splitThreads(cores: 4) == [])
        options.batching = .init(enabled: false)
        #expect(options.splitThreads(cores: 4) == [])
        options.batching = .init(enabled: true, maxConcurrentPasses: 1)
        options.computeThreads = 1
        #expect(options.splitThreads(cores: 4) == [])
    }
}
