import Foundation
import Hummingbird
import JobQueue
import RedisClient
import Synchronization

/// One limit a request is charged against: a name for the headers (`tenant`, or the tier's name), the Redis key of
/// its state, the rule and the cost (the number of jobs).
public struct RateLimitCharge: Sendable, Equatable {
    public var name: String
    public var key: String
    public var rule: RateLimitRule
    public var cost: Int

    public init(name: String, key: String, rule: RateLimitRule, cost: Int) {
        self.name = name
        self.key = key
        self.rule = rule
        self.cost = cost
    }
}

/// The answer of a rate limiter for one request: allowed or not, and each limit's state after it.
public struct RateLimitDecision: Sendable, Equatable {
    public struct State: Sendable, Equatable {
        public var charge: RateLimitCharge
        /// Jobs that could still be sent now under this limit.
        public var remaining: Int
        /// Until this limit is back to its full burst.
        public var resetSeconds: Int
    }

    public var allowed: Bool
    /// When refused: how long until the same request would pass (`nil`: never, its cost is over a burst).
    public var retryAfter: Duration?
    public var states: [State]

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers, structured fields) and, when
    /// refused, `Retry-After`.
    public var headers: HTTPFields {
        guard !states.isEmpty else { return [:] }
        var fields: HTTPFields = [:]
        fields[.rateLimitPolicy] = states.map { #""\#($0.charge.name)";q=\#($0.charge.rule.burst);w=\#($0.charge.rule.windowSeconds)"# }
            .joined(separator: ", ")
        fields[.rateLimit] = states.map { #""\#($0.charge.name)";r=\#($0.remaining);t=\#($0.resetSeconds)"# }.joined(separator: ", ")
        if !allowed {
            let wait = retryAfter ?? .seconds(states.map(\.charge.rule.windowSeconds).max() ?? 1)
            fields[.retryAfter] = String(max(1, Int(wait.seconds.rounded(.up))))
        }
        return fields
    }
}

/// Charges requests against limits shared by every replica. The seam for a per-replica fallback while Redis is
/// down (the shared limit divided by the live replicas).
public protocol RateLimiter: Sendable {
    /// Charges every limit, all or none: a request refused by one limit costs nothing on the others.
    func charge(_ charges: [RateLimitCharge]) async throws -> RateLimitDecision
}

/// GCRA (generic cell rate algorithm) in one Lua script: every limit of a request is checked and, only when all
/// pass, moved on, in one atomic step that every replica shares. Each limit's state is one string, its
/// theoretical arrival time (ms, Redis' clock), expiring when the limit is back to full.
public struct RedisRateLimiter: RateLimiter {
    let client: any RedisPipelining

    /// - Parameter client: a `RedisClient`, or the dispatcher's `RedisCoalescer` (concurrent requests share round trips).
    public init(client: any RedisPipelining) {
        self.client = client
    }

    /// Keys of a tenant's limits, in one hash slot per tenant (`{rl:<tenant>}`), so the script runs on a cluster.
    public static func key(namespace: String, tenant: String, tier: String?) -> String {
        "\(namespace):{rl:\(tenant)}:" + (tier.map { "tier:\($0)" } ?? "all")
    }

    /// KEYS: one per limit. ARGV: per limit, its interval (ms per job), burst and cost.
    /// Returns {allowed (1/0), retry after ms (-1: never), then per limit: remaining, ms until full}.
    public static let script = RedisScript(name: "ratelimit", source: """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local allowed, retry = 1, 0
        local tats = {}
        for i = 1, #KEYS do
          local interval, burst, cost = tonumber(ARGV[i * 3 - 2]), tonumber(ARGV[i * 3 - 1]), tonumber(ARGV[i * 3])
          local tat = tonumber(redis.call('GET', KEYS[i]) or '') or now
          if tat < now then tat = now end
          tats[i] = tat
          if cost > burst then
            allowed, retry = 0, -1
          elseif tat + cost * interval - burst * interval > now then
            allowed = 0
            if retry >= 0 then retry = math.max(retry, math.ceil(tat + cost * interval - burst * interval - now)) end
          end
        end
        local out = {allowed, retry}
        for i = 1, #KEYS do
          local interval, burst, cost = tonumber(ARGV[i * 3 - 2]), tonumber(ARGV[i * 3 - 1]), tonumber(ARGV[i * 3])
          local tat = tats[i]
          if allowed == 1 then
            tat = tat + cost * interval
            redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
          end
          out[#out + 1] = math.max(0, math.floor((now - (tat - burst * interval)) / interval))
          out[#out + 1] = math.max(0, math.ceil(tat - now))
        end
        return out
        """)

    public func charge(_ charges: [RateLimitCharge]) async throws -> RateLimitDecision {
        guard !charges.isEmpty else { return RateLimitDecision(allowed: true, retryAfter: nil, states: []) }
        var arguments: [String] = []
        for charge in charges {
            arguments += [String(charge.rule.intervalMilliseconds), String(charge.rule.burst), String(charge.cost)]
        }
        let reply: [RESPValue]
        do {
            reply = try await client.runScript(Self.script, keys: charges.map(\.key), arguments: arguments).array ?? []
        } catch let error as RedisError {
            throw JobFarmError(error, operation: "rate limit")
        }
        guard reply.count == 2 + 2 * charges.count, let allowed = reply[0].int, let retry = reply[1].int else {
            throw JobFarmError.redisFailed(operation: "rate limit", cause: .unexpectedReply("ratelimit answered \(reply.count) items"))
        }
        var states: [RateLimitDecision.State] = []
        for (index, charge) in charges.enumerated() {
            let remaining = min(charge.rule.burst, reply[2 + 2 * index].int ?? 0)
            let untilFull = reply[3 + 2 * index].int ?? 0
            states.append(.init(charge: charge, remaining: remaining, resetSeconds: (untilFull + 999) / 1000))
        }
        return RateLimitDecision(allowed: allowed == 1, retryAfter: retry < 0 ? nil : .milliseconds(retry), states: states)
    }
}

/// The limits kept in this process: GCRA as the Redis script runs it, on the process clock. What a replica uses
/// while Redis is away (`FallbackRateLimiter`): each replica then allows its share of the limit, the shared limit
/// divided by the dispatcher replicas last seen live (`LiveReplicas`), so that all of them together stay within it.
public final class LocalRateLimiter: RateLimiter {
    let tats = Mutex<[String: Double]>([:])
    let start = ContinuousClock.now
    /// The live replicas last seen (at least 1).
    let replicas: @Sendable () -> Int

    /// - Parameter replicas: how many replicas share each limit now; 1: this one alone.
    public init(replicas: @escaping @Sendable () -> Int = { 1 }) {
        self.replicas = replicas
    }

    /// `rule` divided among `replicas`: the rate divided, the burst too (at least 1 job).
    public static func share(of rule: RateLimitRule, replicas: Int) -> RateLimitRule {
        guard replicas > 1 else { return rule }
        return RateLimitRule(perSecond: rule.perSecond / Double(replicas), burst: max(1, rule.burst / replicas))
    }

    public func charge(_ shared: [RateLimitCharge]) async throws -> RateLimitDecision {
        let count = replicas()
        let charges = count > 1 ? shared.map { charge in
            var local = charge
            local.rule = Self.share(of: charge.rule, replicas: count)
            return local
        } : shared
        let elapsed = ContinuousClock.now - start
        let now = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        return tats.withLock { tats in
            var allowed = true
            var retry: Double? = 0
            var current: [Double] = []
            for charge in charges {
                let interval = charge.rule.intervalMilliseconds, burst = Double(charge.rule.burst), cost = Double(charge.cost)
                let tat = max(tats[charge.key] ?? now, now)
                current.append(tat)
                if charge.cost > charge.rule.burst {
                    allowed = false
                    retry = nil
                } else if tat + cost * interval - burst * interval > now {
                    allowed = false
                    if let shortest = retry { retry = max(shortest, tat + cost * interval - burst * interval - now) }
                }
            }
            var states: [RateLimitDecision.State] = []
            for (charge, tat) in zip(charges, current) {
                let interval = charge.rule.intervalMilliseconds
                let next = allowed ? tat + Double(charge.cost) * interval : tat
                if allowed { tats[charge.key] = next }
                let remaining = Int(((Double(charge.rule.burst) * interval - (next - now)) / interval).rounded(.down))
                states.append(.init(charge: charge, remaining: max(0, min(charge.rule.burst, remaining)),
                                    resetSeconds: Int(((next - now) / 1000).rounded(.up))))
            }
            if tats.count > 100_000 { tats = tats.filter { $0.value > now } }
            return RateLimitDecision(allowed: allowed, retryAfter: allowed ? nil : retry.map { .milliseconds(Int64($0.rounded(.up))) }, states: states)
        }
    }
}

/// The shared limits in Redis, and this process's own while Redis cannot be reached (so that submissions can be
/// spooled to the outbox under a limit rather than refused).
public struct FallbackRateLimiter: RateLimiter {
    let shared: any RateLimiter
    let local: LocalRateLimiter

    public init(shared: any RateLimiter, local: LocalRateLimiter = LocalRateLimiter()) {
        self.shared = shared
        self.local = local
    }

    public func charge(_ charges: [RateLimitCharge]) async throws -> RateLimitDecision {
        do {
            return try await shared.charge(charges)
        } catch let error as JobFarmError where error.isConnectionError {
            return try await local.charge(charges)
        }
    }
}

extension HTTPFields.Element.Name {  // HTTPField: Hummingbird re-exports HTTPFields, not HTTPField
    /// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    static let rateLimit = Self("RateLimit")!
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
    static let rateLimitPolicy = Self("RateLimit-Policy")!
    /// `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header).
    static let idempotencyKey = Self("Idempotency-Key")!
    /// `Idempotent-Replayed: true` on an answer replayed for a repeated `Idempotency-Key`.
    static let idempotentReplayed = Self("Idempotent-Replayed")!
}
