import ArgumentParser
import Foundation
import JobKinds
import JobQueue
import JobWorker
import MLJobs
import Logging
import Schedules
import ServiceLifecycle
import UnixSignals
import WorkerPools

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Run a worker process (SIGTERM/SIGINT: finish running jobs, hand the rest back).")

    @OptionGroup var global: GlobalOptions
    @Option(help: "Run one process of this pool of the workers file; options given here override the pool's settings.")
    var pool: String?
    @Option(help: "The workers file (default: $JOBFARM_WORKERS_CONFIG, else workers.yaml). Read only with --pool.")
    var config: String?
    @Option(help: "Queues to serve in preference order, each optionally with tiers: default,ml:premium+standard. Default: every queue.")
    var queues: String?
    @Option(parsing: .unconditional, help: "Jobs run at once (default 10).") var concurrency: Int?
    @Option(parsing: .unconditional, help: "Most jobs leased per fetch (default 100).") var fetchBatch: Int?
    @Option(parsing: .unconditional, help: "Seconds running jobs get to finish on shutdown (default 25).") var shutdownGrace: Double?
    @Flag(help: "Exit once the served queues are empty (nothing queued, scheduled or in flight).") var exitWhenEmpty = false
    @Option(help: "Worker id (default: host-pid-random).") var id: String?
    @Option(parsing: .unconditional, help: "Serve this worker's process metrics (Prometheus text) at http://0.0.0.0:PORT/metrics (default: the pool's metrics_port_base + --metrics-index under supervise; none otherwise).")
    var metricsPort: Int?

    func validate() throws {
        if let concurrency { try OptionCheck.integer(concurrency, "--concurrency", atLeast: 1) }
        if let fetchBatch { try OptionCheck.integer(fetchBatch, "--fetch-batch", atLeast: 1) }
        if let shutdownGrace { try OptionCheck.seconds(shutdownGrace, "--shutdown-grace") }
        if let metricsPort, !(1...65535).contains(metricsPort) { throw ValidationError("--metrics-port \(metricsPort): expected a port 1…65535") }
        if config != nil && pool == nil { throw ValidationError("--config is read only with --pool NAME; add --pool") }
    }

    /// The workers file `--config` names, else `$JOBFARM_WORKERS_CONFIG`, else `workers.yaml`.
    static func configPath(_ option: String?) -> String {
        option ?? ProcessInfo.processInfo.environment["JOBFARM_WORKERS_CONFIG"] ?? "workers.yaml"
    }

    /// The `--pool` pool, read from the workers file (nil without `--pool`).
    func readPool() throws -> PoolConfiguration? {
        try readPoolAndFile()?.pool
    }

    /// The `--pool` pool and the whole file it is in (nil without `--pool`).
    func readPoolAndFile() throws -> (pool: PoolConfiguration, file: PoolsConfiguration)? {
        guard let pool else { return nil }
        let tiers = global.tiers.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        do {
            let file = try PoolsConfiguration.load(path: Self.configPath(config), tiers: tiers, mlQueues: MLJobOptions.fromEnvironment().mlQueues)
            return (try file.pool(named: pool), file)
        } catch let error as PoolsConfigurationError {
            throw CLIError(message: "\(error)", exitCode: CLIError.configurationExitCode)
        }
    }

    func run() async throws {
        global.bootstrapLogging()
        // Started by `jobfarm supervise`: stop gracefully once the supervisor is gone.
        SupervisorWatch.startIfSupervised()
        let poolFile = try readPoolAndFile()
        let poolSettings = poolFile?.pool
        let concurrency = self.concurrency ?? poolSettings?.concurrency ?? 10
        let fetchBatch = self.fetchBatch ?? poolSettings?.fetchBatch ?? 100
        let shutdownGrace = self.shutdownGrace ?? poolSettings?.shutdownGraceSeconds ?? 25
        // First, before any connection: the OpenBLAS kernel choice may re-execute this process with
        // OPENBLAS_CORETYPE set (the library reads it only when it loads). See BLASKernelSelection.
        let blasChoice = BLASKernelSelection.run(logger: Logger(label: "jobfarm.blas"))
        let farm = try global.makeFarm(poolTierPolicy: poolSettings?.tierPolicy)
        // Before the worker is built: a wrong password, database or URL fails here at once; an unreachable Redis
        // is waited for, each retry logged.
        if try await RedisPreflight(farm: farm, logger: Logger(label: "jobfarm.worker")).run() == .interrupted { return }
        var queueNames: [String]? = poolSettings?.queues
        var tiersByQueue: [String: [String]] = poolSettings?.tiersByQueue ?? [:]
        if let poolSettings, queues == nil {
            // The file's tiers were checked against --tiers when it was read.
            logger(for: poolSettings).info("pool \(poolSettings.name) of \(Self.configPath(config))", metadata: [
                "queues": "\(poolSettings.queuesText)", "concurrency": "\(concurrency)", "fetch_batch": "\(fetchBatch)",
            ])
        }
        if let queues {
            tiersByQueue = [:]
            queueNames = []
            for item in queues.split(separator: ",") {
                let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
                queueNames!.append(parts[0])
                if parts.count == 2 {
                    let tiers = parts[1].split(separator: "+").map(String.init)
                    for tier in tiers where !farm.configuration.tiers.contains(tier) {
                        throw ValidationError("--queues \(item): tier '\(tier)' is not one of \(farm.configuration.tiers.joined(separator: ", "))")
                    }
                    tiersByQueue[parts[0]] = tiers
                }
            }
        }
        // The ML kinds size their BLAS threads so that BLAS threads × concurrency does not oversubscribe the cores.
        var ml = MLJobOptions.fromEnvironment()
        ml.workerConcurrency = concurrency
        if let poolSettings {
            // The JOBFARM_* variables, like options, override the file.
            let environment = ProcessInfo.processInfo.environment
            if environment["JOBFARM_BLAS_THREADS"] == nil, let value = poolSettings.blasThreads { ml.blasThreads = value }
            if let value = poolSettings.computeThreads { ml.computeThreads = value }
            if environment["JOBFARM_ML_MAX_BATCH"] == nil, let value = poolSettings.maxBatch { ml.batching.maxBatch = value }
            if environment["JOBFARM_ML_MAX_DELAY_MS"] == nil, let value = poolSettings.maxBatchDelayMilliseconds {
                ml.batching.maxDelay = .microseconds(Int64(value * 1000))
                ml.batching.enabled = value > 0
            }
        }
        ml.blasChoice = blasChoice
        ml.servedQueues = queueNames  // no ML queue among them: the small-batch kernel calibration is skipped
        var registry = makeRegistry(farm: farm, mlOptions: ml)
        // The pool's per-kind retry policies and timeout caps replace the handlers' own.
        if let poolFile { try PoolKindOverrides.apply(poolFile.pool, in: poolFile.file, to: &registry) }
        var configuration = WorkerConfiguration(
            queues: queueNames, tiersByQueue: tiersByQueue, concurrency: concurrency, fetchBatch: fetchBatch,
            exitWhenEmpty: exitWhenEmpty, shutdownGrace: .milliseconds(Int64(shutdownGrace * 1000)),
            id: self.id ?? poolSettings.map { "\($0.name)-\(ProcessInfo.processInfo.hostName)-\(getpid())" })
        configuration.pool = poolSettings?.name
        let metrics = metricsPort.map { _ in WorkerMetricsSetup.bootstrap() }
        configuration.observer = metrics
        let worker = Worker(farm: farm, registry: registry, configuration: configuration, logger: Logger(label: "jobfarm.worker"))
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup),
            // Every worker keeps the schedules' chains of firing jobs in place (once a minute).
            .init(service: ScheduleChainService(book: ScheduleBook(farm: farm)), successTerminationBehavior: .ignore),
        ]
        if let metrics, let metricsPort {
            services.append(.init(service: WorkerMetricsSetup.server(metrics: metrics, worker: worker, port: metricsPort)))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: Logger(label: "jobfarm.lifecycle")))
        // A worker that Redis refuses after start (its password changed) stops gracefully and exits as the pre-flight
        // would (78): a supervisor should not restart it until the URL changes.
        try await reportingErrors { try await group.run() }
    }
}

extension WorkerCommand {
    func logger(for pool: PoolConfiguration) -> Logger {
        var logger = Logger(label: "jobfarm.worker")
        logger[metadataKey: "pool"] = "\(pool.name)"
        return logger
    }
}
