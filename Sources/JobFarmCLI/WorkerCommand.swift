import ArgumentParser
import Foundation
import JobKinds
import JobQueue
import JobWorker
import MLJobs
import Logging
import ServiceLifecycle
import UnixSignals

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Run a worker process (SIGTERM/SIGINT: finish running jobs, hand the rest back).")

    @OptionGroup var global: GlobalOptions
    @Option(help: "Queues to serve in preference order, each optionally with tiers: default,ml:premium+standard. Default: every queue.")
    var queues: String?
    @Option(parsing: .unconditional, help: "Jobs run at once.") var concurrency: Int = 10
    @Option(parsing: .unconditional, help: "Most jobs leased per fetch.") var fetchBatch: Int = 100
    @Option(parsing: .unconditional, help: "Seconds running jobs get to finish on shutdown.") var shutdownGrace: Double = 25
    @Flag(help: "Exit once the served queues are empty (nothing queued, scheduled or in flight).") var exitWhenEmpty = false
    @Option(help: "Worker id (default: host-pid-random).") var id: String?

    func validate() throws {
        try OptionCheck.integer(concurrency, "--concurrency", atLeast: 1)
        try OptionCheck.integer(fetchBatch, "--fetch-batch", atLeast: 1)
        try OptionCheck.seconds(shutdownGrace, "--shutdown-grace")
    }

    func run() async throws {
        global.bootstrapLogging()
        // First, before any connection: the OpenBLAS kernel choice may re-execute this process with
        // OPENBLAS_CORETYPE set (the library reads it only when it loads). See BLASKernelSelection.
        let blasChoice = BLASKernelSelection.run(logger: Logger(label: "jobfarm.blas"))
        let farm = try global.makeFarm()
        // Before the worker is built: a wrong password, database or URL fails here at once; an unreachable Redis
        // is waited for, each retry logged.
        if try await RedisPreflight(farm: farm, logger: Logger(label: "jobfarm.worker")).run() == .interrupted { return }
        var queueNames: [String]?
        var tiersByQueue: [String: [String]] = [:]
        if let queues {
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
        ml.blasChoice = blasChoice
        ml.servedQueues = queueNames  // no ML queue among them: the small-batch kernel calibration is skipped
        let registry = makeRegistry(farm: farm, mlOptions: ml)
        let worker = Worker(
            farm: farm, registry: registry,
            configuration: WorkerConfiguration(
                queues: queueNames, tiersByQueue: tiersByQueue, concurrency: concurrency, fetchBatch: fetchBatch,
                exitWhenEmpty: exitWhenEmpty, shutdownGrace: .milliseconds(Int64(shutdownGrace * 1000)), id: id),
            logger: Logger(label: "jobfarm.worker"))
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: Logger(label: "jobfarm.lifecycle")))
        // A worker that Redis refuses after start (its password changed) stops gracefully and exits as the pre-flight
        // would (78): a supervisor should not restart it until the URL changes.
        try await reportingErrors { try await group.run() }
    }
}
