import ArgumentParser
import Foundation
import Logging
import MLJobs
import WorkerPools

struct SuperviseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "supervise",
        abstract: "Run every pool of the workers file, each restarted if it exits; autoscale the pools whose min < max.",
        discussion: """
            Each process is `jobfarm worker --pool NAME --config FILE` with this command's Redis, namespace, tiers, \
            lease and log level. A process that exits is restarted after 1 s, doubling for each exit in a row up to \
            30 s. A pool starts with processes.min processes; when its max is higher, the autoscaling policy (the one \
            `jobfarm autoscale --once` prints) decides its count every autoscale.interval and processes are started \
            or scaled in (SIGTERM: the worker stops fetching, finishes its running jobs within shutdown_grace and \
            hands the rest back). --metrics-port serves the policy's gauges (jobfarm_desired_workers{pool}, \
            jobfarm_backlog_seconds{pool,tier}, …) at /metrics for Prometheus, an HPA or KEDA (docs/deploy.md). \
            SIGTERM or SIGINT sends SIGTERM to every worker (running jobs finish within the pool's shutdown_grace, \
            the rest go back to their queue) and waits for them; a second signal, or --stop-timeout, kills them.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "The workers file (default: $JOBFARM_WORKERS_CONFIG, else workers.yaml).")
    var config: String?
    @Option(help: "Append each worker's output to DIR/worker-POOL-N.log (default: this command's output).")
    var logDir: String?
    @Option(parsing: .unconditional, help: "Seconds workers get after SIGTERM before they are killed (default: the longest shutdown_grace + 5).")
    var stopTimeout: Double?
    @Flag(help: "Check the workers file, print its pools and exit (0: the file is good).")
    var check = false
    @Option(parsing: .unconditional, help: "Seconds before the first restart of a worker that exited; doubled for each exit in a row.")
    var restartDelay: Double = 1
    @Option(help: "Where to write the Prometheus file_sd targets of the workers' /metrics (pools with metrics_port_base; default: jobfarm-targets.json beside the workers file).")
    var targetsFile: String?
    @Option(help: "The host name Prometheus reaches the workers by, in the targets file.")
    var targetsHost: String = "127.0.0.1"
    @Flag(help: "Keep every pool at processes.min (no autoscaling).")
    var noAutoscale = false
    @Option(parsing: .unconditional, help: "Serve the autoscaler's gauges at http://HOST:PORT/metrics (0: any free port, printed).")
    var metricsPort: Int?
    @Option(help: "The address --metrics-port listens on.")
    var metricsHost: String = "127.0.0.1"

    func validate() throws {
        if let stopTimeout { try OptionCheck.seconds(stopTimeout, "--stop-timeout") }
        try OptionCheck.seconds(restartDelay, "--restart-delay")
        if let metricsPort { try OptionCheck.integer(metricsPort, "--metrics-port", atLeast: 0, atMost: 65535) }
    }

    func run() async throws {
        global.bootstrapLogging()
        let path = WorkerCommand.configPath(config)
        let tiers = global.tiers.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        let pools: PoolsConfiguration
        do {
            pools = try PoolsConfiguration.load(path: path, tiers: tiers, mlQueues: MLJobOptions.fromEnvironment().mlQueues)
        } catch let error as PoolsConfigurationError {
            throw CLIError(message: "\(error)", exitCode: CLIError.configurationExitCode)
        }
        // A kind named under retry: or timeouts: that no worker runs fails here, before any worker starts.
        for pool in pools.pools {
            if let error = PoolKindOverrides.unknownKindError(pool, in: pools, kinds: PoolKindOverrides.workerKinds) { throw error }
        }
        if check {
            for pool in pools.pools {
                let processes = pool.minProcesses == pool.maxProcesses ? "\(pool.minProcesses)" : "\(pool.minProcesses) (max \(pool.maxProcesses))"
                print("pool \(pool.name): \(processes) process(es), queues \(pool.queuesText), concurrency \(pool.concurrency)")
            }
            return
        }
        if let logDir {
            try FileManager.default.createDirectory(atPath: logDir, withIntermediateDirectories: true)
        }
        let logger = Logger(label: "jobfarm.supervise")
        let executable = Bundle.main.executablePath ?? CommandLine.arguments[0]
        let absolutePath = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        // The children get what this command was given explicitly; the rest they read as it did (environment, file).
        var shared = ["--config", absolutePath, "--tiers", global.tiers, "--lease", "\(global.lease)", "--log-level", global.logLevel]
        if let url = global.redisURL { shared += ["--redis-url", url] }
        if let namespace = global.namespace { shared += ["--namespace", namespace] }
        if let policy = global.tierPolicy { shared += ["--tier-policy", policy] }
        let childArguments = shared
        let supervisorPID = getpid()
        // Each process of a pool with metrics_port_base serves /metrics on its own port; Prometheus finds them in the
        // targets file.
        var portBases: [String: Int] = [:]
        for pool in pools.pools { portBases[pool.name] = pool.metricsPortBase }
        let metricsPorts = portBases
        var targetsPath: String?
        if !metricsPorts.isEmpty {
            let file = targetsFile ?? URL(fileURLWithPath: absolutePath).deletingLastPathComponent().appendingPathComponent("jobfarm-targets.json").path
            var counts: [String: Int] = [:]
            for pool in pools.pools { counts[pool.name] = pool.minProcesses }
            try MetricsTargets.write(to: file, pools: pools.pools, counts: counts, host: targetsHost)
            logger.info("Prometheus file_sd targets of the workers' /metrics written", metadata: ["file": "\(file)"])
            targetsPath = file
        }
        var configuration = PoolSupervisor.Configuration(
            executable: executable, processes: pools.pools.map { ($0.name, $0.minProcesses) }
        ) { slot, start in
            var arguments = ["worker", "--pool", slot.pool, "--id", "\(slot.pool)-\(slot.index)-\(supervisorPID)-\(start)"] + childArguments
            if let base = metricsPorts[slot.pool] { arguments += ["--metrics-port", String(base + slot.index - 1)] }
            return arguments
        }
        configuration.logDirectory = logDir
        if let targetsPath {
            // Rewritten (temporary file, then rename) whenever a pool's processes change: Prometheus finds the new
            // workers and forgets the ones scaled in.
            let allPools = pools.pools, host = targetsHost
            configuration.slotsChanged = { slots in
                do {
                    try MetricsTargets.write(to: targetsPath, pools: allPools, slots: slots, host: host)
                    logger.info("Prometheus file_sd targets rewritten", metadata: [
                        "file": "\(targetsPath)", "processes": "\(slots.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.count)" }.joined(separator: ","))",
                    ])
                } catch {
                    logger.warning("cannot rewrite the Prometheus targets file; Prometheus keeps the old targets", metadata: [
                        "file": "\(targetsPath)", "error": "\(error)",
                    ])
                }
            }
        }
        configuration.restartDelay = .milliseconds(Int64(restartDelay * 1000))
        configuration.maximumRestartDelay = max(.seconds(30), configuration.restartDelay)
        let longestGrace = pools.pools.map(\.shutdownGraceSeconds).max() ?? 25
        configuration.stopTimeout = .milliseconds(Int64((stopTimeout ?? longestGrace + 5) * 1000))
        for pool in pools.pools {
            logger.info("pool \(pool.name)", metadata: [
                "processes": "\(pool.minProcesses)", "max": "\(pool.maxProcesses)", "queues": "\(pool.queuesText)",
                "concurrency": "\(pool.concurrency)", "autoscaled": "\(pool.isAutoscaled && !noAutoscale)",
            ])
        }
        let gauges = AutoscaleGauges()
        let scaled = noAutoscale ? [] : pools.pools.filter(\.isAutoscaled)
        if !scaled.isEmpty {
            let farm = try global.makeFarm()
            let autoscaler = PoolAutoscaler(pools: scaled, farm: farm, gauges: gauges)
            let scaleLogger = Logger(label: "jobfarm.autoscale")
            configuration.scaleInterval = .milliseconds(Int64((scaled.map(\.autoscale.intervalSeconds).min() ?? 5) * 1000))
            configuration.scaler = { running in
                do {
                    let decisions = try await autoscaler.step(processes: running)
                    return Dictionary(uniqueKeysWithValues: decisions.map {
                        ($0.pool, PoolSupervisor.ScaleTarget(count: $0.decision.desired, reason: $0.decision.reason))
                    })
                } catch {
                    scaleLogger.warning("cannot read the autoscaling signals; the pools keep their counts", metadata: ["error": "\(error)"])
                    return [:]
                }
            }
        }
        let server = metricsPort.map { AutoscaleMetricsServer.start(gauges, host: metricsHost, port: $0, logger: logger) }
        await PoolSupervisor(configuration: configuration, logger: logger).run()
        server?.cancel()
        logger.info("every worker stopped")
    }
}
