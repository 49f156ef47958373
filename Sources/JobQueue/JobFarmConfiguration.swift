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
    }
}

/// Errors of the library API, each saying what to do next.
public enum JobFarmError: Error, CustomStringConvertible, Sendable, Equatable {
    case invalidArgument(String)
    case notFound(String)
    case timedOut(String)
    case redis(String)
    case refused(String)
    /// A key of the queue holds another Redis type than the protocol's (a foreign client's mistake): the script
    /// refused to run and changed nothing. Look at the key, then `DEL` or `RENAME` it.
    case wrongType(key: String, found: String, expected: String)

    public var description: String {
        switch self {
        case .invalidArgument(let text): return text
        case .notFound(let text): return text
        case .timedOut(let text): return text
        case .redis(let text): return text
        case .refused(let text): return text
        case .wrongType(let key, let found, let expected):
            return "Redis key \(key) is a \(found), expected a \(expected): nothing was changed. Look at it (redis-cli TYPE / DUMP), "
                + "then DEL or RENAME it; the queue's scripts that write it refuse to run until then"
        }
    }

    /// The error for a failed script or command: `wrongType` when the message is the scripts' `JOBFARM_WRONGTYPE`
    /// (the key, its type and the expected type parsed out of it), else `redis` with `what` in front.
    public static func fromRedis(_ what: String, _ message: String) -> JobFarmError {
        if let range = message.range(of: "JOBFARM_WRONGTYPE ") {
            let words = message[range.upperBound...].split(separator: " ", maxSplits: 6)
            // "<key> is a <found>, expected a <expected>: …"
            if words.count >= 7, words[1] == "is", words[4] == "expected" {
                return .wrongType(key: String(words[0]), found: String(words[3].dropLast()), expected: String(words[6].prefix { $0 != ":" }))
            }
        }
        return .redis("\(what): \(message)")
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

    /// Parses `250ms`, `10s`, `5m`, `2h`, `1d`, or a bare number of seconds (`1.5`).
    public static func parse(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value >= 0 { return .milliseconds(Int64(value * scale * 1000)) }
        }
        if let value = Double(text), value >= 0 { return .milliseconds(Int64(value * 1000)) }
        return nil
    }
}
