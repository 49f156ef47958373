import ArgumentParser
import Dispatcher
import Foundation
import JobQueue
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

/// `jobfarm serve`: the HTTP dispatcher frontends submit jobs to (docs/openapi.yaml).
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the HTTP dispatcher: submit, wait for and cancel jobs over HTTP (docs/openapi.yaml).",
        discussion: """
            Settings: the defaults, then JOBFARM_SERVE_* environment variables, then these flags. \
            Environment: \(DispatcherConfiguration.environmentVariables.map { "\($0.name) (\($0.meaning))" }.joined(separator: ", ")). \
            SIGTERM/SIGINT: stop accepting connections, finish the requests in flight (a wait in progress answers at once \
            with the job's state), try one last flush of the outbox, exit. While Redis is away, submissions are written \
            to this replica's outbox (SQLite) and answered 202 with spooled: true; the outbox is forwarded to Redis, \
            in order, as soon as it is back, and at the next start.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "Address to listen on (default: $JOBFARM_SERVE_HOST, else 127.0.0.1).") var host: String?
    @Option(parsing: .unconditional, help: "Port to listen on; 0 picks a free one (default: $JOBFARM_SERVE_PORT, else 8080).") var port: Int?
    @Option(parsing: .unconditional, help: "Largest request body in bytes (default: $JOBFARM_SERVE_BODY_LIMIT, else 4194304).") var bodyLimit: Int?
    @Option(parsing: .unconditional, help: "Largest model or dataset upload in bytes, streamed to the registry (default: $JOBFARM_SERVE_UPLOAD_LIMIT, else 268435456).") var uploadLimit: Int?
    @Option(parsing: .unconditional, help: "Most jobs per POST /v1/jobs:bulk (default: $JOBFARM_SERVE_BULK_LIMIT, else 1000).") var bulkLimit: Int?
    @Option(help: "Routing table kind=queue,… replacing the default (ML kinds to ml, the rest to default; $JOBFARM_SERVE_ROUTES).")
    var routes: String?
    @Option(help: "Longest wait a client may ask for, e.g. 60s (default: $JOBFARM_SERVE_MAX_WAIT, else 60s).") var maxWait: String?
    @Option(help: "Tenants file (JSON): each tenant's tiers and rate limits (default: $JOBFARM_SERVE_TENANTS, else every tenant may use every tier, unlimited).")
    var tenants: String?
    @Flag(help: "Run without API keys, every request acting as the operator of tenant 'dev': local development only ($JOBFARM_SERVE_AUTH=off).")
    var noAuth = false
    @Option(help: "How long a found API key is reused before Redis is asked again; a revoked key is refused at most this late (default: $JOBFARM_SERVE_KEY_CACHE_TTL, else 1s; 0 asks every request).")
    var keyCacheTTL: String?
    @OptionGroup(title: "While Redis is away") var outbox: OutboxOptions

    func validate() throws {
        if let port { try OptionCheck.integer(port, "--port", atLeast: 0, atMost: 65535) }
        if let bodyLimit { try OptionCheck.integer(bodyLimit, "--body-limit", atLeast: 1) }
        if let uploadLimit { try OptionCheck.integer(uploadLimit, "--upload-limit", atLeast: 1024) }
        if let bulkLimit { try OptionCheck.integer(bulkLimit, "--bulk-limit", atLeast: 1) }
        try outbox.check()
    }

    func run() async throws {
        let farm = try global.makeFarm()
        // As `jobfarm worker`: a wrong password, database or URL fails here (exit 78 or 64); an unreachable Redis does not.
        try await RedisPreflight(farm: farm, logger: Logger(label: "jobfarm.serve")).checkOnce()
        var configuration: DispatcherConfiguration
        do {
            configuration = try DispatcherConfiguration(environment: ProcessInfo.processInfo.environment)
            if let host { configuration.host = host }
            if let port { configuration.port = port }
            if let bodyLimit { configuration.bodyLimitBytes = bodyLimit }
            if let uploadLimit { configuration.uploadLimitBytes = uploadLimit }
            if let bulkLimit { configuration.bulkLimit = bulkLimit }
            if let routes { configuration.routing = try RoutingTable(parsing: routes) }
            if let maxWait {
                guard let duration = Duration.parse(maxWait) else { throw ValidationError("--max-wait '\(maxWait)' is not a duration such as 60s") }
                configuration.maxWait = duration
            }
            if noAuth { configuration.authentication = .disabled }
            if let path = tenants ?? ProcessInfo.processInfo.environment["JOBFARM_SERVE_TENANTS"], !path.isEmpty {
                configuration.tenants = try TenantDirectory(contentsOfFile: path, tiers: farm.configuration.tiers)
            }
            if let keyCacheTTL {
                guard let duration = Duration.parse(keyCacheTTL), duration <= .seconds(60) else {
                    throw ValidationError("--key-cache-ttl '\(keyCacheTTL)' is not a duration of 0s…60s such as 1s")
                }
                configuration.keyCacheTTL = duration
            }
            try outbox.apply(to: &configuration)
            if configuration.defaultWait > configuration.maxWait { configuration.defaultWait = configuration.maxWait }
            try configuration.validate()
        } catch let error as JobFarmError {
            throw ValidationError("\(error)")
        }
        let logger = Logger(label: "jobfarm.serve")
        let dispatcher = try Dispatcher(farm: farm, configuration: configuration, logger: logger)
        let (host, port) = (configuration.host, configuration.port)
        let application = dispatcher.makeApplication { channel in
            // Printed on stdout so scripts that pass --port 0 learn the port.
            print("listening on http://\(host):\(channel.localAddress?.port ?? port)")
            fflush(nil)
        }
        let group = ServiceGroup(
            configuration: .init(
                // The forwarder first: shutdown runs in reverse, so its last flush follows the application's last request.
                services: [.init(service: dispatcher.makeOutboxForwarder()),
                           .init(service: application, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: Logger(label: "jobfarm.lifecycle")))
        try await group.run()
    }
}

/// `jobfarm serve`'s settings of the outbox and the circuit breaker.
struct OutboxOptions: ParsableArguments {
    @Option(help: "This replica's name (a–z 0–9 -), the suffix of the job ids it chooses (default: $JOBFARM_SERVE_REPLICA, else host name and port).")
    var replica: String?
    @Option(help: "The outbox's SQLite file, one per replica (default: $JOBFARM_SERVE_OUTBOX, else .jobfarm/outbox-<replica>.sqlite).")
    var outbox: String?
    @Option(parsing: .unconditional, help: "Most jobs in the outbox; past it submissions get 503 (default: $JOBFARM_SERVE_OUTBOX_MAX_JOBS, else 100000).")
    var outboxMaxJobs: Int?
    @Option(parsing: .unconditional, help: "Most bytes in the outbox (default: $JOBFARM_SERVE_OUTBOX_MAX_BYTES, else 268435456).")
    var outboxMaxBytes: Int?
    @Option(parsing: .unconditional, help: "Redis failures in a row that open the circuit (default: $JOBFARM_SERVE_BREAKER_FAILURES, else 3).")
    var breakerFailures: Int?
    @Option(help: "How long the circuit stays open before a probe, e.g. 2s (default: $JOBFARM_SERVE_BREAKER_OPEN, else 2s).")
    var breakerOpen: String?
    @Option(help: "Longest wait for Redis before a submission is spooled, e.g. 1s (default: $JOBFARM_SERVE_REDIS_TIMEOUT, else 1s).")
    var redisTimeout: String?
    @Option(help: "Heartbeat interval of the event streams, e.g. 15s (default: $JOBFARM_SERVE_EVENT_HEARTBEAT, else 15s).")
    var eventHeartbeat: String?

    func check() throws {
        if let outboxMaxJobs { try OptionCheck.integer(outboxMaxJobs, "--outbox-max-jobs", atLeast: 1) }
        if let outboxMaxBytes { try OptionCheck.integer(outboxMaxBytes, "--outbox-max-bytes", atLeast: 1024) }
        if let breakerFailures { try OptionCheck.integer(breakerFailures, "--breaker-failures", atLeast: 1) }
    }

    func apply(to configuration: inout DispatcherConfiguration) throws {
        func duration(_ text: String?, _ flag: String) throws -> Duration? {
            guard let text else { return nil }
            guard let value = Duration.parse(text) else { throw ValidationError("\(flag) '\(text)' is not a duration such as 2s or 500ms") }
            return value
        }
        if let replica { configuration.outbox.replica = replica }
        if let outbox { configuration.outbox.path = outbox }
        if let outboxMaxJobs { configuration.outbox.maxJobs = outboxMaxJobs }
        if let outboxMaxBytes { configuration.outbox.maxBytes = outboxMaxBytes }
        if let breakerFailures { configuration.outbox.breaker.failureThreshold = breakerFailures }
        if let value = try duration(breakerOpen, "--breaker-open") { configuration.outbox.breaker.openDuration = value }
        if let value = try duration(redisTimeout, "--redis-timeout") { configuration.outbox.breaker.callTimeout = value }
        if let value = try duration(eventHeartbeat, "--event-heartbeat") { configuration.eventHeartbeat = value }
    }
}
