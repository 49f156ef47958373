import JobProtocol
import RedisClient

/// How fetch picks among the tiers of a queue.
public enum TierPolicy: Sendable, Equatable {
    /// Highest tier first; a lower tier whose oldest job has waited `agingAfter` or more is served first,
    /// so no tier starves under a flood of higher-tier work. `nil` means strict priority, no aging.
    case strict(agingAfter: Duration?)
    /// Each fetch orders the tiers at random, a tier coming first with a probability proportional to its weight
    /// (Sidekiq's weighted queues). Tiers missing from the map weigh 1.
    case weighted([String: Int])

    /// Parses `strict`, `strict:aging=10s`, `weighted:premium=6,standard=3,free=1`.
    public init(parsing text: String) throws {
        if text == "strict" { self = .strict(agingAfter: nil); return }
        if text.hasPrefix("strict:aging=") {
            guard let duration = Duration.parse(String(text.dropFirst("strict:aging=".count))) else {
                throw JobFarmError.invalidArgument("tier policy '\(text)': aging must be a duration such as 500ms, 10s or 2m")
            }
            self = .strict(agingAfter: duration)
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
        throw JobFarmError.invalidArgument("tier policy '\(text)' is unknown: use strict, strict:aging=10s or weighted:premium=6,standard=3,free=1")
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

    public var description: String {
        switch self {
        case .invalidArgument(let text): return text
        case .notFound(let text): return text
        case .timedOut(let text): return text
        case .redis(let text): return text
        case .refused(let text): return text
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
