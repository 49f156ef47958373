import ArgumentParser
import FarmMetrics
import JobQueue
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals

struct ExporterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exporter",
        abstract: "Serve the farm's queue metrics (Prometheus text) at /metrics, read from Redis at each scrape.",
        discussion: """
            One exporter per farm: per queue and tier the scripts' counters (enqueued, succeeded, retried, dead-lettered…), \
            depth, oldest age, in flight, delayed, retrying, due, dead letters, paused, live workers. Each worker's own \
            figures come from `jobfarm worker --metrics-port`. See docs/OPERATIONS.md.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(parsing: .unconditional, help: "Port to listen on.") var port: Int = 9490
    @Option(help: "Address to listen on.") var host: String = "0.0.0.0"
    @Option(parsing: .unconditional, help: "Seconds since its last heartbeat after which a worker is no longer counted live.")
    var liveWithin: Double = 60

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port \(port): expected a port 1…65535") }
        try OptionCheck.seconds(liveWithin, "--live-within", positive: true)
    }

    func run() async throws {
        global.bootstrapLogging()
        let farm = try global.makeFarm()
        // Other components' gauges (through swift-metrics) are printed with the queue metrics.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(WorkerMetricsSetup.metricsFactory(registry: registry))
        let exporter = QueueExporter(farm: farm, registry: registry, liveWithin: .milliseconds(Int64(liveWithin * 1000)))
        let logger = Logger(label: "jobfarm.exporter")
        logger.info("serving queue metrics", metadata: ["url": "http://\(host):\(port)/metrics", "redis": "\(farm.configuration.redis)"])
        let server = MetricsServer(host: host, port: port) { await exporter.render() }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: server.makeApplication(logger: logger))],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: Logger(label: "jobfarm.lifecycle")))
        try await group.run()
    }
}
