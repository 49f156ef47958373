import JobProtocol
import JobQueue
import ModelStore

/// Where each job kind goes. Frontends name a kind and a tier, never a queue; a kind missing here is refused
/// at submission (422) instead of being dead-lettered later as `malformed` by a worker that does not know it.
public struct RoutingTable: Sendable, Equatable {
    /// kind → queue.
    public var queues: [String: String]

    public init(_ queues: [String: String]) {
        self.queues = queues
    }

    /// The kinds this repository ships: the ML kinds run on the `ml` pool, the rest on `default` (workers.yaml).
    public static let `default` = RoutingTable([
        "inference": "ml", "batch_analysis": "ml", "quantize": "ml", "validate": "ml", "train": "ml",
        "noop": "default", "echo": "default", "sleep": "default", "fail": "default",
    ])

    /// The queue of `kind`, or `nil` when the farm does not know the kind.
    public func queue(for kind: String) -> String? { queues[kind] }

    /// Known kinds, sorted.
    public var kinds: [String] { queues.keys.sorted() }

    /// Every queue a kind routes to, sorted.
    public var routedQueues: [String] { Set(queues.values).sorted() }

    /// Parses `kind=queue,kind=queue` (a whole table, not additions to the default).
    public init(parsing text: String) throws {
        var table: [String: String] = [:]
        for item in text.split(separator: ",") {
            let pair = item.split(separator: "=", omittingEmptySubsequences: false).map { String($0).trimmingWhitespace }
            guard pair.count == 2, !pair[0].isEmpty, pair[0].utf8.count <= 128, QueueKeys.isValidName(pair[1]) else {
                throw JobFarmError.invalidArgument(
                    "routing entry '\(item)' must be kind=queue (queue: 1–64 of A–Z a–z 0–9 _ - .), as in inference=ml,echo=default")
            }
            table[pair[0]] = pair[1]
        }
        guard !table.isEmpty else {
            throw JobFarmError.invalidArgument("the routing table is empty: give kind=queue pairs, as in inference=ml,echo=default")
        }
        self.queues = table
    }
}

/// The settings of `jobfarm serve`: one value with defaults, overridden by `JOBFARM_SERVE_*` environment variables
/// (`init(environment:)`), then by flags. The Redis side (URL, namespace, tiers) is the farm's `JobFarmConfiguration`.
public struct DispatcherConfiguration: Sendable {
    /// Address to listen on.
    public var host: String
    /// Port to listen on; 0 picks a free one (tests).
    public var port: Int
    /// Largest request body accepted (413 above it).
    public var bodyLimitBytes: Int
    /// Most jobs in one `POST /v1/jobs:bulk`.
    public var bulkLimit: Int
    /// kind → queue.
    public var routing: RoutingTable
    /// Longest `GET /v1/jobs/{id}/wait`; a longer `timeout` is refused.
    public var maxWait: Duration
    /// `timeout` of a wait that names none.
    public var defaultWait: Duration
    /// How long the live-worker count per queue is reused before the registry is read again.
    public var workerCacheTTL: Duration
    /// Per-kind payload checks run after the field checks (default: the ML kinds' `kindPayloadValidators`).
    public var payloadValidators: [String: any PayloadValidator]
    /// API keys required (the default), or off for local development (Authentication.swift).
    public var authentication: AuthenticationMode
    /// Each tenant's tiers and rate limits (the tenants file); `.unrestricted` without one.
    public var tenants: TenantDirectory
    /// How long a found API key is reused before Redis is asked again: a revoked key is refused at most this late.
    public var keyCacheTTL: Duration
    /// The outbox used while Redis is away, and the circuit breaker in front of Redis.
    public var outbox = OutboxConfiguration()
    /// Interval of the comment lines that keep an idle `GET /v1/jobs/{id}/events` stream open.
    public var eventHeartbeat: Duration = .seconds(15)
    /// Largest model or dataset upload (`POST /v1/models`, `POST /v1/datasets`; 413 above it). Uploads are streamed
    /// into the registry, so this bounds Redis memory, not the dispatcher's.
    public var uploadLimitBytes: Int = 256 << 20

    public init(
        host: String = "127.0.0.1", port: Int = 8080, bodyLimitBytes: Int = 4 << 20, bulkLimit: Int = 1000,
        routing: RoutingTable = .default, maxWait: Duration = .seconds(60), defaultWait: Duration = .seconds(30),
        workerCacheTTL: Duration = .seconds(1), payloadValidators: [String: any PayloadValidator] = DispatcherConfiguration.kindPayloadValidators,
        authentication: AuthenticationMode = .apiKeys, tenants: TenantDirectory = .unrestricted, keyCacheTTL: Duration = .seconds(1)
    ) {
        self.host = host
        self.port = port
        self.bodyLimitBytes = bodyLimitBytes
        self.bulkLimit = bulkLimit
        self.routing = routing
        self.maxWait = maxWait
        self.defaultWait = defaultWait
        self.workerCacheTTL = workerCacheTTL
        self.payloadValidators = payloadValidators
        self.authentication = authentication
        self.tenants = tenants
        self.keyCacheTTL = keyCacheTTL
    }

    /// The environment variables read by `init(environment:)`, with what each sets.
    public static let environmentVariables: [(name: String, meaning: String)] = [
        ("JOBFARM_SERVE_HOST", "address to listen on (127.0.0.1)"),
        ("JOBFARM_SERVE_PORT", "port (8080)"),
        ("JOBFARM_SERVE_BODY_LIMIT", "largest request body in bytes (4194304)"),
        ("JOBFARM_SERVE_BULK_LIMIT", "most jobs per bulk request (1000)"),
        ("JOBFARM_SERVE_ROUTES", "kind=queue,… (the ML kinds to ml, the rest to default)"),
        ("JOBFARM_SERVE_MAX_WAIT", "longest wait, e.g. 60s"),
        ("JOBFARM_SERVE_EVENT_HEARTBEAT", "interval of the event streams' heartbeat comments, e.g. 15s"),
    ] + accessEnvironmentVariables + OutboxConfiguration.environmentVariables + registryEnvironmentVariables

    /// The defaults, overridden by whichever `JOBFARM_SERVE_*` variables are set; names the variable that is wrong.
    public init(environment: [String: String]) throws {
        self.init()
        if let value = environment["JOBFARM_SERVE_HOST"], !value.isEmpty { host = value }
        if let value = environment["JOBFARM_SERVE_PORT"] {
            guard let number = Int(value) else { throw JobFarmError.invalidArgument("JOBFARM_SERVE_PORT '\(value)' is not a port number") }
            port = number
        }
        if let value = environment["JOBFARM_SERVE_BODY_LIMIT"] {
            guard let number = Int(value) else { throw JobFarmError.invalidArgument("JOBFARM_SERVE_BODY_LIMIT '\(value)' is not a number of bytes") }
            bodyLimitBytes = number
        }
        if let value = environment["JOBFARM_SERVE_BULK_LIMIT"] {
            guard let number = Int(value) else { throw JobFarmError.invalidArgument("JOBFARM_SERVE_BULK_LIMIT '\(value)' is not a number") }
            bulkLimit = number
        }
        if let value = environment["JOBFARM_SERVE_ROUTES"] { routing = try RoutingTable(parsing: value) }
        if let value = environment["JOBFARM_SERVE_MAX_WAIT"] {
            guard let duration = Duration.parse(value) else {
                throw JobFarmError.invalidArgument("JOBFARM_SERVE_MAX_WAIT '\(value)' is not a duration such as 60s")
            }
            maxWait = duration
        }
        try applyAccessEnvironment(environment)
        if let value = environment["JOBFARM_SERVE_EVENT_HEARTBEAT"] {
            guard let duration = Duration.parse(value) else {
                throw JobFarmError.invalidArgument("JOBFARM_SERVE_EVENT_HEARTBEAT '\(value)' is not a duration such as 15s")
            }
            eventHeartbeat = duration
        }
        try outbox.apply(environment: environment)
        try applyRegistryEnvironment(environment)
        try validate()
    }

    /// Checks the settings, naming the first that is wrong and what would be right.
    public func validate() throws {
        guard (0...65_535).contains(port) else { throw JobFarmError.invalidArgument("port \(port) must be 0…65535") }
        guard bodyLimitBytes >= 1024 else { throw JobFarmError.invalidArgument("the body limit \(bodyLimitBytes) must be at least 1024 bytes") }
        guard bulkLimit >= 1 else { throw JobFarmError.invalidArgument("the bulk limit \(bulkLimit) must be at least 1") }
        guard maxWait >= .seconds(1) else { throw JobFarmError.invalidArgument("the longest wait must be at least 1s") }
        if defaultWait > maxWait {
            throw JobFarmError.invalidArgument("the default wait \(defaultWait) is longer than the longest wait \(maxWait)")
        }
        guard !routing.queues.isEmpty else { throw JobFarmError.invalidArgument("the routing table is empty") }
        guard (1024...BlobStore.maxBytes).contains(uploadLimitBytes) else {
            throw JobFarmError.invalidArgument("the upload limit \(uploadLimitBytes) must be 1024…\(BlobStore.maxBytes) bytes")
        }
        guard eventHeartbeat >= .milliseconds(100) else { throw JobFarmError.invalidArgument("the event heartbeat must be at least 100ms") }
        try outbox.validate()
    }
}

extension String {
    var trimmingWhitespace: String {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }
}
