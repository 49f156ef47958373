import JobProtocol
import Logging
import RedisClient

/// The front door of the queue library: what the CLI, the HTTP dispatcher, the autoscaler and the pipeline
/// engine use to enqueue, inspect, wait for and cancel jobs, and to manage dead letters.
///
/// Thread-safe; share one per process. Workers use the lower-level operations in `QueueOperations.swift`.
public final class JobFarm: Sendable {
    public let configuration: JobFarmConfiguration
    let clients: [RedisClient]
    let logger: Logger
    let events: JobEvents

    /// Creates the farm handle. Nothing connects until the first call.
    /// - Parameter connections: Redis connections used round-robin by concurrent callers.
    public init(configuration: JobFarmConfiguration, connections: Int = 2, logger: Logger = Logger(label: "jobfarm")) throws {
        try configuration.validate()
        self.configuration = configuration
        self.clients = (0..<max(1, connections)).map { RedisClient(configuration: configuration.redis, name: "farm\($0)") }
        self.logger = logger
        self.events = JobEvents(configuration: configuration)
    }

    deinit {
        events.stop()
        for client in clients { client.close() }
    }

    private let next = AtomicCounter()
    /// Problems a script skipped (keys of the wrong type) already logged, so each is logged once.
    let reportedProblems = Mutex<Set<String>>([])

    /// Logs, once per problem, what a script skipped and reported in its reply (a tier's list or a wake-up list of
    /// the wrong type): the rest of the queue was served.
    func logSkipped(_ reply: RESPValue?, queue: String, by script: String) {
        guard let problems = reply?.array?.compactMap(\.string), !problems.isEmpty else { return }
        for problem in problems where reportedProblems.withLock({ $0.insert(problem).inserted }) {
            logger.error("\(script) skipped a key of the wrong type: \(problem). Look at it (redis-cli TYPE / DUMP), then DEL or RENAME it; the rest of the queue is served meanwhile", metadata: ["queue": "\(queue)"])
        }
    }
    /// Queues this process has added to the registry set (so bulk enqueues skip the SADD).
    let registeredQueues = Mutex<Set<String>>([])

    /// The Redis server's clock as this process last measured it: server ms minus local wall-clock ms, and when.
    let serverClock = Mutex<(offset: Int64, measured: ContinuousClock.Instant)?>(nil)

    /// Redis' clock from the last `TIME` when that is under a minute old and succeeded, else nil (no Redis call).
    func knownServerMilliseconds() -> Int64? {
        guard let known = serverClock.withLock({ $0 }), ContinuousClock.now - known.measured < .seconds(60), known.offset != .min else {
            return nil
        }
        return WallClock.nowMilliseconds() + known.offset
    }

    /// The Redis server's time in ms, estimated from a `TIME` taken at most a minute ago (one round trip when older),
    /// placed a millisecond early so that it is not ahead of the server; `nil` when `TIME` fails.
    func estimatedServerMilliseconds() async -> Int64? {
        let now = ContinuousClock.now
        if let known = serverClock.withLock({ $0 }), now - known.measured < .seconds(60) {
            // `Int64.min`: TIME failed (refused by an ACL, say) less than a minute ago; not asked again until then.
            return known.offset == .min ? nil : WallClock.nowMilliseconds() + known.offset
        }
        guard let reply = try? await client.send([RedisCommand("TIME")])[0].array, reply.count == 2,
              let seconds = reply[0].string.flatMap({ Int64($0) }), let micros = reply[1].string.flatMap({ Int64($0) })
        else {
            serverClock.withLock { $0 = (.min, now) }
            return nil
        }
        let after = WallClock.nowMilliseconds()
        // The server read its clock somewhere within the round trip: take the end, so the estimate errs early (by up
        // to a round trip; `enqueueNow` writes the server's time itself when the estimate is more than 250 ms off).
        let offset = seconds * 1000 + micros / 1000 - after - 1
        serverClock.withLock { $0 = (offset, now) }
        return WallClock.nowMilliseconds() + offset
    }

    /// A connection for one call (round-robin).
    var client: RedisClient { clients[next.increment() % clients.count] }

    func keys(_ queue: String) -> QueueKeys { QueueKeys(namespace: configuration.namespace, queue: queue) }

    /// Runs a script, retrying connection failures until `deadline` (the scripts are safe to repeat).
    func run(
        _ script: RedisScript, queue: String, arguments: [String], on client: RedisClient? = nil,
        retryFor deadline: Duration = .seconds(10)
    ) async throws -> RESPValue {
        let keys = [keys(queue).prefix]
        return try await retrying(for: deadline, what: script.name) {
            try await (client ?? self.client).run(script, keys: keys, arguments: [queue] + arguments)
        }
    }

    /// Repeats `body` while it fails on the connection, with a growing pause, until `deadline` has passed.
    func retrying<T: Sendable>(for deadline: Duration, what: String, _ body: () async throws -> T) async throws -> T {
        let clock = ContinuousClock()
        let start = clock.now
        var pause = Duration.milliseconds(20)
        while true {
            do {
                return try await body()
            } catch let error as RedisError where error.isConnectionError {
                if clock.now - start + pause > deadline {
                    throw JobFarmError(error, operation: what)
                }
                logger.debug("retrying after connection error", metadata: ["op": "\(what)", "error": "\(error)"])
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(1))
            } catch let error as RedisError {
                throw JobFarmError(error, operation: what)
            }
        }
    }

    // MARK: - Queues

    /// Every queue that has ever had a job enqueued (the registry set).
    public func queues() async throws -> [String] {
        let registry = QueueKeys.registry(namespace: configuration.namespace)
        let reply = try await retrying(for: .seconds(10), what: "queues") { try await client.send([RedisCommand("SMEMBERS", registry)])[0] }
        if reply.errorMessage != nil { throw try await registryError(reply) }
        return (reply.array ?? []).compactMap(\.string).sorted()
    }

    /// The error for a failed command on the queue registry: `wrongType` when it is not a SET.
    func registryError(_ reply: RESPValue) async throws -> JobFarmError {
        let registry = QueueKeys.registry(namespace: configuration.namespace)
        if let found = try await client.execute(RedisCommand("TYPE", registry)).string, found != "set", found != "none" {
            return .wrongType(key: registry, operation: "queues", message: "\(registry) is a \(found), expected a set")
        }
        return JobFarmError(RedisError(reply: reply.errorMessage ?? "", context: "SMEMBERS \(registry)"), operation: "queues")
    }

    /// Redis settings that cost memory or CPU per job, each with what to change (empty when all is well,
    /// or when CONFIG is not permitted).
    public func settingsAdvice() async -> [String] {
        guard let reply = try? await client.send([RedisCommand("CONFIG", "GET", "hash-max-listpack-value")])[0],
            let value = reply.array?.last?.int
        else { return [] }
        if value < 512 {
            return ["Redis hash-max-listpack-value is \(value): job hashes holding envelopes longer than that are stored as hashtables, "
                + "about 35% more memory per queued job and more Redis CPU per transition. Set it to 1024 (redis.conf, or CONFIG SET "
                + "hash-max-listpack-value 1024); scripts/up and scripts/test do."]
        }
        return []
    }

    /// Checks that Redis answers; returns the round-trip time.
    public func ping() async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        _ = try await retrying(for: .zero, what: "ping") { try await client.execute("PING") }
        return clock.now - start
    }

    /// Connects, authenticates, selects the database and loads the protocol's scripts, once, without retrying:
    /// what a process checks at start, so that a wrong password, database or URL is reported at once
    /// (`isConfigurationError`) and an unreachable Redis (`isConnectionError`) can be waited for.
    public func checkConnection() async throws {
        let client = self.client
        try await retrying(for: .zero, what: "checking the connection") {
            _ = try await client.execute("PING")
            try await client.load(Scripts.all)
        }
    }
}

/// A lock-free counter for round-robin choice.
final class AtomicCounter: Sendable {
    private let value = Mutex(0)
    func increment() -> Int {
        value.withLock { v in
            v &+= 1
            return v & Int.max
        }
    }
}

import Synchronization
