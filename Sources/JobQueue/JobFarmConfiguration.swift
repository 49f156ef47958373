import JobProtocol
import RedisClient

/// How fetch picks among the tiers of a queue.
public enum TierPolicy: Sendable, Equatable {
    /// Highest tier first. A lower tier whose oldest job has waited `agingAfter` or more is *aged*: aged tiers get
    /// a bounded share, at most one job per `agedShare` jobs fetched (counted in Redis, across all workers), so no
    /// tier starves under a flood of higher-tier work and none takes over either. `nil` means strict priority, no aging.
    case strict(agingAfter: Duration?, agedShare: Int = TierPolicy.defaultAgedShare)
    /// Each fetch orders the tiers at random, a tier coming first with a probability proportional to its weight
    /// (Sidekiq's weighted queues). Tiers missing from the map weigh 1.
    case weighted([String: Int])

    /// One aged job per this many fetched, unless the policy says otherwise (`strict:aging=10s,share=10`).
    public static let defaultAgedShare = 10

    /// Parses `strict`, `strict:aging=10s`, `strict:aging=10s,share=5`, `weighted:premium=6,standard=3,free=1`.
    public init(parsing text: String) throws {
        if text == "strict" { self = .strict(agingAfter: nil); return }
        if text.hasPrefix("strict:aging=") {
            let parts = text.dropFirst("strict:aging=".count).split(separator: ",", omittingEmptySubsequences: false)
            guard let duration = Duration.parse(String(parts[0])) else {
                throw JobFarmError.invalidArgument("tier policy '\(text)': aging must be a duration such as 500ms, 10s or 2m")
            }
            var share = Self.defaultAgedShare
            if parts.count == 2, parts[1].hasPrefix("share="), let n = Int(parts[1].dropFirst("share=".count)), (1...1_000_000).contains(n) {
                share = n
            } else if parts.count != 1 {
                throw JobFarmError.invalidArgument("tier policy '\(text)': after the aging time only share=N may follow (one aged job per N fetched, 1…1000000), as in strict:aging=10s,share=10")
            }
            self = .strict(agingAfter: duration, agedShare: share)
            return
        }
        if text.hasPrefix("weighted:") {
            var weights: [String: Int] = [:]
            for item in text.dropFirst("weighted:".count).split(separator: ",") {
                let kv = item.split(separator: "=")
                guard kv.count == 2, let weight = Int(kv[1]), weight > 0 else {
                    throw JobFarmError.invalidArgument("tier policy '\(text)': expected tier=weight pairs with positive weights, as in weighted:premium=6,standard=3,free=1")
                }
                weights[String(kv[0])] = weight
            }
            self = .weighted(weights)
            return
        }
        throw JobFarmError.invalidArgument("tier policy '\(text)' is unknown: use strict, strict:aging=10s, strict:aging=10s,share=10 or weighted:premium=6,standard=3,free=1")
    }
}

/// Settings shared by producers, workers and operators; one value, passed in, with defaults that work.
public struct JobFarmConfiguration: Sendable {
    /// Where Redis is.
    public var redis: RedisConfiguration
    /// Prefix of every key (`jf`): several farms can share one Redis.
    public var namespace: String
    /// Tiers of every queue, highest priority first.
    public var tiers: [String]
    /// The tier a job goes to when none is named.
    public var defaultTier: String
    public var tierPolicy: TierPolicy
    /// How long a fetched job stays leased without a heartbeat.
    public var leaseDuration: Duration
    /// How often a worker renews its leases (a third of the lease or less).
    public var heartbeatInterval: Duration
    /// How often each worker runs the reaper and scheduler steps.
    public var maintenanceInterval: Duration
    /// Lease losses after which a job is dead-lettered as `poison`.
    public var maxLeaseLosses: Int
    /// How long finished jobs (state, result) are kept.
    public var retention: Duration
    /// How long an idempotency key maps to its job.
    public var idempotencyWindow: Duration
    /// How long the registry keeps a worker that is gone (stopped, or stopped heartbeating) for operators to see
    /// (`jobfarm workers`); 0 forgets it at once.
    public var goneWorkerRetention: Duration = .seconds(3600)

    public init(
        redis: RedisConfiguration = RedisConfiguration(),
        namespace: String = "jf",
        tiers: [String] = ["premium", "standard", "free"],
        defaultTier: String = "standard",
        tierPolicy: TierPolicy = .strict(agingAfter: .seconds(10)),
        leaseDuration: Duration = .seconds(10),
        heartbeatInterval: Duration = .seconds(2),
        maintenanceInterval: Duration = .milliseconds(500),
        maxLeaseLosses: Int = 3,
        retention: Duration = .seconds(86_400),
        idempotencyWindow: Duration = .seconds(86_400)
    ) {
        self.redis = redis
        self.namespace = namespace
        self.tiers = tiers
        self.defaultTier = defaultTier
        self.tierPolicy = tierPolicy
        self.leaseDuration = leaseDuration
        self.heartbeatInterval = heartbeatInterval
        self.maintenanceInterval = maintenanceInterval
        self.maxLeaseLosses = maxLeaseLosses
        self.retention = retention
        self.idempotencyWindow = idempotencyWindow
    }

    /// How long nobody may have reached a queue before its reaper treats the silence as an outage (Redis down or out
    /// of everyone's reach) rather than crashed workers: half the time a lease survives between two heartbeats,
    /// but at least three maintenance intervals (the normal pause between reaper steps, with jitter) and 1 s.
    public var leaseClockGap: Duration {
        max((leaseDuration - heartbeatInterval) / 2, maintenanceInterval * 3, .seconds(1))
    }

    /// After an outage, how long the reaper leaves every lease alone so that workers reconnect and renew (or report)
    /// first: one lease, plus the longest reconnect pause of a client, plus a heartbeat interval.
    public var leaseGrace: Duration {
        leaseDuration + redis.reconnectBackoff.maximum + heartbeatInterval
    }

    /// Checks the settings, naming the first that is wrong.
    public func validate() throws {
        guard !tiers.isEmpty else { throw JobFarmError.invalidArgument("at least one tier is needed") }
        for tier in tiers where !QueueKeys.isValidName(tier) {
            throw JobFarmError.invalidArgument("tier name '\(tier)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        guard Set(tiers).count == tiers.count else { throw JobFarmError.invalidArgument("tier names repeat in \(tiers)") }
        guard tiers.contains(defaultTier) else {
            throw JobFarmError.invalidArgument("default tier '\(defaultTier)' is not one of the tiers \(tiers)")
        }
        guard heartbeatInterval < leaseDuration else {
            throw JobFarmError.invalidArgument("heartbeat interval \(heartbeatInterval) must be shorter than the lease \(leaseDuration)")
        }
        guard idempotencyWindow >= .milliseconds(1) else { throw JobFarmError.invalidArgument("the idempotency window must be at least 1 ms") }
        guard retention >= .zero else { throw JobFarmError.invalidArgument("retention must not be negative") }
        guard maxLeaseLosses >= 1 else { throw JobFarmError.invalidArgument("max lease losses must be at least 1") }
        guard goneWorkerRetention >= .zero else { throw JobFarmError.invalidArgument("the gone-worker retention must not be negative") }
    }
}

/// Errors of the library API, one case per thing a caller does differently, each saying what to do next.
///
/// Redis failures are classified here from the wire layer's `RedisError` (kept as `cause` where it explains more);
/// `operation` names what the library was doing (`enqueue`, `fetch`, `stats`, …).
public enum JobFarmError: Error, CustomStringConvertible, Sendable, Equatable {
    /// An argument or setting is wrong; the text names it and the valid values.
    case invalidArgument(String)
    case notFound(String)
    case timedOut(String)
    /// The request was understood and refused (the text says why).
    case refused(String)
    /// Redis could not be reached when connecting (down, wrong host or port, refused, connect timeout): the
    /// operation did not run. Retrying later may succeed.
    case redisUnreachable(operation: String, cause: RedisError)
    /// The connection broke or timed out mid-command: whether the operation took effect is unknown. The library's
    /// operations are safe to repeat (an enqueue with the same ids, a repeated report).
    case connectionLost(operation: String, cause: RedisError)
    /// Redis wants a password and the URL has none (`NOAUTH`).
    case authenticationRequired(operation: String, cause: RedisError)
    /// Redis refused the user or password (`WRONGPASS`), or the ACL user may not run the farm's commands (`NOPERM`).
    case authenticationFailed(operation: String, cause: RedisError)
    /// The Redis URL cannot work: it does not parse, or names a database the server does not have.
    case redisConfiguration(operation: String, cause: RedisError)
    /// Redis is up but not serving yet (loading its data after a restart): retry shortly.
    case redisNotReady(operation: String, cause: RedisError)
    /// One of the protocol's Lua scripts failed inside Redis.
    case scriptFailed(script: String, message: String)
    /// A key holds a value of the wrong type (`WRONGTYPE`); `key` when known.
    case wrongType(key: String?, operation: String, message: String)
    /// Any other error reply of Redis, or a reply of an unexpected shape.
    case redisFailed(operation: String, cause: RedisError)

    /// Classifies a Redis client error met while doing `operation`.
    public init(_ error: RedisError, operation: String) {
        switch error {
        case .connectionFailed: self = .redisUnreachable(operation: operation, cause: error)
        case .connectionLost: self = .connectionLost(operation: operation, cause: error)
        case .authenticationRequired: self = .authenticationRequired(operation: operation, cause: error)
        case .authenticationFailed, .permissionDenied: self = .authenticationFailed(operation: operation, cause: error)
        case .invalidURL, .invalidDatabase: self = .redisConfiguration(operation: operation, cause: error)
        case .notReady: self = .redisNotReady(operation: operation, cause: error)
        case .scriptFailed(let script, let message): self = .scriptFailed(script: script, message: message)
        case .wrongType(let key, let message): self = .wrongType(key: key, operation: operation, message: message)
        case .server, .unexpectedReply: self = .redisFailed(operation: operation, cause: error)
        }
    }

    /// Classifies an error reply of a script run in a pipeline.
    public init(reply message: String, script: String) {
        self.init(RedisError(reply: message, script: script), operation: script)
    }

    public var description: String {
        switch self {
        case .invalidArgument(let text), .notFound(let text), .timedOut(let text), .refused(let text):
            return text
        case .redisUnreachable(let operation, let cause), .connectionLost(let operation, let cause),
            .authenticationRequired(let operation, let cause), .authenticationFailed(let operation, let cause),
            .redisConfiguration(let operation, let cause), .redisNotReady(let operation, let cause),
            .redisFailed(let operation, let cause):
            return "\(operation): \(cause)"
        case .scriptFailed(let script, let message):
            return RedisError.scriptFailed(script: script, message: message).description
        case .wrongType(let key, let operation, let message):
            return "\(operation): \(RedisError.wrongType(key: key, message: message))"
        }
    }

    /// True when the same call may succeed after a pause: Redis unreachable, the connection lost, Redis not ready.
    public var isConnectionError: Bool {
        switch self {
        case .redisUnreachable, .connectionLost, .redisNotReady: return true
        default: return false
        }
    }

    /// The condition of the whole Redis server behind this error, when it is one (read-only replica, out of memory,
    /// cannot save, not ready): every queue fails alike, so a worker pauses all its work once instead of setting the
    /// queues aside one by one.
    public var serverCondition: RedisServerCondition? {
        switch self {
        case .redisNotReady(_, let cause), .redisFailed(_, let cause): return cause.serverCondition
        default: return nil
        }
    }

    /// True when the ACL user may not run a command or touch a key (`NOPERM`): a fault of what was asked (one
    /// queue's keys may be off limits to the user), unlike a refused password.
    public var isPermissionDenied: Bool {
        if case .authenticationFailed(_, .permissionDenied) = self { return true }
        return false
    }

    /// True when retrying cannot help until the Redis URL changes (password, user, database, syntax).
    public var isConfigurationError: Bool {
        switch self {
        case .authenticationRequired, .authenticationFailed, .redisConfiguration: return true
        default: return false
        }
    }
}

extension Duration {
    /// Milliseconds, rounded down.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Seconds as a floating-point number.
    public var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// Parses `250ms`, `10s`, `5m`, `2h`, `1d`, or a bare number of seconds (`1.5`); `nil` for anything else,
    /// including `inf`, `nan` and durations past about 290 million years (they do not fit in milliseconds).
    public static func parse(_ text: String) -> Duration? {
        func milliseconds(_ value: Double?, _ scale: Double) -> Duration? {
            guard let value, value >= 0 else { return nil }
            let ms = value * scale * 1000
            guard ms.isFinite, ms < 9.2e18 else { return nil }
            return .milliseconds(Int64(ms))
        }
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let duration = milliseconds(Double(text.dropLast(suffix.count)), scale) { return duration }
        }
        return milliseconds(Double(text), 1)
    }
}
