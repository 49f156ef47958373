import ArgumentParser
import Foundation
import Logging
import MLJobs
import WorkerPools

struct AutoscaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "autoscale",
        abstract: "Print each pool's desired process count and the signal that drove it (--once), or simulate a trace.",
        discussion: """
            The policy (README "Autoscaling") sizes each pool of the workers file from what it must serve: ready jobs \
            per tier against their target wait (premium 1 s, standard 10 s, free 60 s unless the pool's \
            autoscale.target_wait says otherwise), the oldest job's age, scheduled jobs due, jobs in flight, the \
            arrival rate (the queues' enqueued counters) and the service time per job (run_ms / run_count, kept by \
            complete), within processes.min…max. --once reads Redis twice, --sample seconds apart, for the rates. \
            `jobfarm supervise` runs the same policy every autoscale.interval and starts or stops processes to match.
            """,
        subcommands: [SimulateCommand.self])

    @OptionGroup var global: GlobalOptions
    @Option(help: "The workers file (default: $JOBFARM_WORKERS_CONFIG, else workers.yaml).")
    var config: String?
    @Flag(help: "Decide once and print.")
    var once = false
    @Option(parsing: .unconditional, help: "Instead of --once: decide every autoscale.interval and serve the gauges at http://HOST:PORT/metrics (0: any free port, printed), starting no process (for an HPA or KEDA, docs/deploy.md).")
    var metricsPort: Int?
    @Option(help: "The address --metrics-port listens on.")
    var metricsHost: String = "0.0.0.0"
    @Flag(help: "Print JSON: one object per pool with its desired count, driver, reason and signals.")
    var json = false
    @Option(parsing: .unconditional, help: "Seconds between the two readings the rates come from.")
    var sample: Double = 1

    func validate() throws {
        try OptionCheck.seconds(sample, "--sample", atLeast: 0.1)
        if let metricsPort { try OptionCheck.integer(metricsPort, "--metrics-port", atLeast: 0, atMost: 65535) }
    }

    func run() async throws {
        // Here, not in validate(): ArgumentParser validates this command's options before running `simulate` too.
        guard once != (metricsPort != nil) else {
            throw ValidationError("give --once (decide once and print) or --metrics-port PORT (serve the gauges), or use `jobfarm autoscale simulate`")
        }
        let pools = try Self.loadPools(config: config, global: global)
        let farm = try global.makeFarm()
        if let metricsPort {
            // An exporter: the pods run elsewhere, so the live workers are counted from the registry.
            let gauges = AutoscaleGauges()
            let autoscaler = PoolAutoscaler(pools: pools.pools, farm: farm, gauges: gauges)
            let logger = Logger(label: "jobfarm.autoscale")
            let server = AutoscaleMetricsServer.start(gauges, host: metricsHost, port: metricsPort, logger: logger)
            defer { server.cancel() }
            let interval = pools.pools.map(\.autoscale.intervalSeconds).min() ?? 5
            while !Task.isCancelled {
                do {
                    for scaling in try await autoscaler.step() {
                        logger.debug("pool \(scaling.pool): \(scaling.decision.desired)", metadata: ["reason": "\(scaling.decision.reason)"])
                    }
                } catch {
                    logger.warning("cannot read the autoscaling signals; the gauges keep their last values", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
            }
            return
        }
        let autoscaler = PoolAutoscaler(pools: pools.pools, farm: farm)
        try await autoscaler.observe()
        try await Task.sleep(for: .milliseconds(Int64(sample * 1000)))
        let decisions = try await autoscaler.step()
        if json {
            let data = try JSONSerialization.data(withJSONObject: ["pools": decisions.map(\.json)], options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        for scaling in decisions {
            let decision = scaling.decision
            let pool = try pools.pool(named: scaling.pool)
            print("pool \(scaling.pool): desired \(decision.desired) (running \(scaling.signals.processes), min \(pool.minProcesses), max \(pool.maxProcesses)) — \(decision.reason)")
            let tiers = scaling.signals.tiers.map { tier in
                String(format: "%@ %d ready (oldest %.1f s, backlog %.1f s)", tier.name, tier.ready, tier.oldestAgeSeconds, decision.backlogSeconds[tier.name] ?? 0)
            }
            print(String(format: "  %@; %d in flight, %d due now, %d due soon; %.2f jobs/s arriving, %.3f s per job",
                         tiers.joined(separator: ", "), scaling.signals.inFlight, scaling.signals.dueNow, scaling.signals.retrying,
                         decision.arrivalPerSecond, decision.serviceSeconds))
        }
    }

    /// The workers file, its errors as configuration errors (exit 78).
    static func loadPools(config: String?, global: GlobalOptions) throws -> PoolsConfiguration {
        let tiers = global.tiers.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        do {
            return try PoolsConfiguration.load(path: WorkerCommand.configPath(config), tiers: tiers, mlQueues: MLJobOptions.fromEnvironment().mlQueues)
        } catch let error as PoolsConfigurationError {
            throw CLIError(message: "\(error)", exitCode: CLIError.configurationExitCode)
        }
    }
}

struct SimulateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Replay an arrival trace through the autoscaling policy: workers over time, wait p95 per tier, worker-minutes.",
        discussion: """
            The trace is a CSV of jobs per tier per interval (samples in jobs/traces/). The pool's settings (min, \
            max, concurrency, autoscale targets) come from --pool of the workers file when given, else the defaults; \
            the options below override them. Service times are drawn from --service-samples (one measured time in \
            seconds per line) or else exponentially around --service-time. The same trace, settings and --seed \
            print the same table on every machine.
            """)

    @Option(help: "The arrival trace (CSV: seconds,premium,standard,free; see jobs/traces/).")
    var trace: String
    @Option(help: "The random seed (arrival times within a row, service times).")
    var seed: UInt64 = 1
    @Option(help: "Write an SVG plot (processes and desired over time, ready jobs per tier) to this file.")
    var svg: String?
    @Option(help: "Take the pool's settings from this pool of the workers file.")
    var pool: String?
    @Option(help: "The workers file for --pool (default: $JOBFARM_WORKERS_CONFIG, else workers.yaml).")
    var config: String?
    @Option(parsing: .unconditional, help: "Mean service time per job in seconds (exponentially distributed; default 1).")
    var serviceTime: Double?
    @Option(help: "A file of measured service times in seconds, one per line, drawn at random.")
    var serviceSamples: String?
    @Option(parsing: .unconditional, help: "Fewest processes.") var min: Int?
    @Option(parsing: .unconditional, help: "Most processes.") var max: Int?
    @Option(parsing: .unconditional, help: "Jobs per process at once.") var concurrency: Int?
    @Option(parsing: .unconditional, help: "Seconds between policy decisions.") var interval: Double?
    @Option(parsing: .unconditional, help: "Scale-up cooldown in seconds.") var scaleUpCooldown: Double?
    @Option(parsing: .unconditional, help: "Scale-down stabilisation window in seconds.") var scaleDownWindow: Double?
    @Option(parsing: .unconditional, help: "Seconds from starting a process to its first job.") var startup: Double = 5
    @Option(parsing: .unconditional, help: "Seconds between the table's rows (default: about 40 rows).") var every: Double?

    func validate() throws {
        if let serviceTime { try OptionCheck.seconds(serviceTime, "--service-time", positive: true) }
        if let min { try OptionCheck.integer(min, "--min", atLeast: 0) }
        if let max { try OptionCheck.integer(max, "--max", atLeast: Swift.max(1, min ?? 1)) }
        if let concurrency { try OptionCheck.integer(concurrency, "--concurrency", atLeast: 1) }
        if let interval { try OptionCheck.seconds(interval, "--interval", atLeast: 0.1) }
        if let scaleUpCooldown { try OptionCheck.seconds(scaleUpCooldown, "--scale-up-cooldown") }
        if let scaleDownWindow { try OptionCheck.seconds(scaleDownWindow, "--scale-down-window") }
        try OptionCheck.seconds(startup, "--startup")
        if let every { try OptionCheck.seconds(every, "--every", positive: true) }
        if serviceTime != nil && serviceSamples != nil { throw ValidationError("give --service-time or --service-samples, not both") }
    }

    func run() async throws {
        let loaded: AutoscaleTrace
        do {
            loaded = try AutoscaleTrace(path: trace)
        } catch let error as AutoscaleTraceError {
            throw CLIError(message: "\(error)")
        }
        var settings = AutoscaleSettings()
        var bounds = (min: 2, max: 10, concurrency: 10)
        if let pool {
            let configured: PoolConfiguration
            do {
                configured = try PoolsConfiguration.load(path: WorkerCommand.configPath(config), tiers: loaded.tiers).pool(named: pool)
            } catch let error as PoolsConfigurationError {
                throw CLIError(message: "\(error)", exitCode: CLIError.configurationExitCode)
            }
            settings = configured.autoscale
            bounds = (configured.minProcesses, configured.maxProcesses, configured.concurrency)
        }
        if let interval { settings.intervalSeconds = interval }
        if let scaleUpCooldown { settings.scaleUpCooldownSeconds = scaleUpCooldown }
        if let scaleDownWindow { settings.scaleDownWindowSeconds = scaleDownWindow }
        let times: AutoscaleSimulator.ServiceTimes
        if let serviceSamples {
            guard let data = FileManager.default.contents(atPath: serviceSamples) else {
                throw CLIError(message: "\(serviceSamples) cannot be read; give a file of service times in seconds, one per line")
            }
            let samples = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
                .filter { $0.isFinite && $0 >= 0 }
            guard !samples.isEmpty else { throw CLIError(message: "\(serviceSamples) has no service times (seconds, one per line)") }
            times = .samples(samples)
            settings.serviceTimeSeconds = samples.reduce(0, +) / Double(samples.count)
        } else {
            times = .exponential(mean: serviceTime ?? 1)
            settings.serviceTimeSeconds = serviceTime ?? 1
        }
        let policy = AutoscalePolicy(
            settings: settings, minProcesses: min ?? bounds.min, maxProcesses: Swift.max(max ?? bounds.max, min ?? bounds.min),
            concurrency: concurrency ?? bounds.concurrency)
        let result = AutoscaleSimulator(policy: policy, serviceTimes: times, startupSeconds: startup, seed: seed).run(loaded)
        print(String(format: "trace %@: %d jobs over %.0f s; processes %d…%d × %d jobs; decisions every %.1f s, cooldown %.0f s, window %.0f s; seed %llu",
                     (trace as NSString).lastPathComponent, loaded.jobs, loaded.duration, policy.minProcesses, policy.maxProcesses,
                     policy.concurrency, settings.intervalSeconds, settings.scaleUpCooldownSeconds, settings.scaleDownWindowSeconds, seed))
        print(result.table(every: every), terminator: "")
        if let svg {
            try result.svg(title: "\((trace as NSString).lastPathComponent), seed \(seed)").write(toFile: svg, atomically: true, encoding: .utf8)
        }
    }
}
