import Foundation
import JobProtocol
import JobQueue

/// A limit on submitted jobs: `perSecond` on average, up to `burst` at once (GCRA, see `RedisRateLimiter`).
public struct RateLimitRule: Sendable, Equatable {
    /// Jobs per second, on average.
    public var perSecond: Double
    /// Jobs that may be sent at once after a quiet period (at least 1).
    public var burst: Int

    public init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }

    /// The time one job's share of the limit lasts, in milliseconds (the GCRA emission interval).
    public var intervalMilliseconds: Double { 1000 / perSecond }

    /// The window of the `RateLimit-Policy` header: how long a full burst takes to come back, in whole seconds.
    public var windowSeconds: Int { max(1, Int((Double(burst) / perSecond).rounded(.up))) }
}

/// What one tenant may do: the tiers it may submit to (`nil`: every tier of the farm) and its rate limits.
public struct TenantPolicy: Sendable, Equatable {
    /// Tiers the tenant may use; `nil` allows every tier.
    public var tiers: [String]?
    /// Jobs per second over all its submissions, shared by every dispatcher replica; `nil`: unlimited.
    public var rateLimit: RateLimitRule?
    /// Jobs per second within one tier (on top of `rateLimit`).
    public var tierRateLimits: [String: RateLimitRule]

    public init(tiers: [String]? = nil, rateLimit: RateLimitRule? = nil, tierRateLimits: [String: RateLimitRule] = [:]) {
        self.tiers = tiers
        self.rateLimit = rateLimit
        self.tierRateLimits = tierRateLimits
    }

    /// True when the tenant may submit to `tier`.
    public func allows(tier: String) -> Bool { tiers?.contains(tier) ?? true }
}

/// The tenants of the configuration: each tenant's tiers and rate limits, read from the tenants file (JSON).
///
/// ```json
/// {"tenants": {
///   "acme": {"tiers": ["premium", "standard"], "rateLimit": {"perSecond": 100, "burst": 200},
///            "tierRateLimits": {"premium": {"perSecond": 20, "burst": 40}}},
///   "*":    {"tiers": ["standard", "free"], "rateLimit": {"perSecond": 5, "burst": 10}}
/// }}
/// ```
/// `"*"` applies to every tenant not listed; without it, a key of an unlisted tenant is refused (403).
public struct TenantDirectory: Sendable, Equatable {
    /// tenant → policy.
    public var tenants: [String: TenantPolicy]
    /// The policy of tenants not listed (`"*"` in the file); `nil` refuses them.
    public var fallback: TenantPolicy?

    public init(tenants: [String: TenantPolicy] = [:], fallback: TenantPolicy? = TenantPolicy()) {
        self.tenants = tenants
        self.fallback = fallback
    }

    /// No tenants file: every tenant may use every tier, without rate limits.
    public static let unrestricted = TenantDirectory()

    /// The policy of `tenant`, or `nil` when the file neither lists it nor has `"*"`.
    public func policy(for tenant: String) -> TenantPolicy? { tenants[tenant] ?? fallback }

    /// A tenant name as keys, Redis keys and metric labels carry it: 1–64 of A–Z a–z 0–9 _ - .
    public static func isValidName(_ name: String) -> Bool { QueueKeys.isValidName(name) }

    /// Reads a tenants file.
    public init(contentsOfFile path: String, tiers: [String]) throws {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw JobFarmError.invalidArgument("cannot read the tenants file \(path): \(error.localizedDescription); give a readable JSON file")
        }
        do {
            try self.init(parsing: text, tiers: tiers)
        } catch JobFarmError.invalidArgument(let message) {
            throw JobFarmError.invalidArgument("tenants file \(path): \(message)")
        }
    }

    /// Parses the JSON of a tenants file; every tier named must be one of `tiers` (the farm's).
    public init(parsing text: String, tiers: [String]) throws {
        let root: JSONValue
        do {
            root = try JSONValue(parsing: text)
        } catch {
            throw JobFarmError.invalidArgument("not valid JSON (\(error)); see README.md, \"Tenants and API keys\"")
        }
        guard case .object(let entries)? = root["tenants"] else {
            throw JobFarmError.invalidArgument("needs an object \"tenants\": {\"name\": {\"tiers\": [...], \"rateLimit\": {...}}}")
        }
        var tenants: [String: TenantPolicy] = [:]
        var fallback: TenantPolicy?
        for (name, entry) in entries {
            guard name == "*" || Self.isValidName(name) else {
                throw JobFarmError.invalidArgument("tenant name '\(name)' must be 1–64 of A–Z a–z 0–9 _ - . (or \"*\" for the rest)")
            }
            let policy = try Self.policy(entry, name: name, tiers: tiers)
            if name == "*" { fallback = policy } else { tenants[name] = policy }
        }
        self.init(tenants: tenants, fallback: fallback)
    }

    static func policy(_ entry: JSONValue, name: String, tiers farmTiers: [String]) throws -> TenantPolicy {
        guard case .object(let members) = entry else { throw JobFarmError.invalidArgument("tenant '\(name)' must be an object") }
        for key in members.keys where !["tiers", "rateLimit", "tierRateLimits"].contains(key) {
            throw JobFarmError.invalidArgument("tenant '\(name)': unknown member '\(key)' (tiers, rateLimit, tierRateLimits)")
        }
        var policy = TenantPolicy()
        if let value = members["tiers"] {
            guard case .array(let items) = value else { throw JobFarmError.invalidArgument("tenant '\(name)': tiers must be an array of tier names") }
            let names = items.compactMap(\.stringValue)
            guard names.count == items.count, names.allSatisfy(farmTiers.contains) else {
                throw JobFarmError.invalidArgument("tenant '\(name)': tiers must be among \(farmTiers.joined(separator: ", "))")
            }
            policy.tiers = names
        }
        if let value = members["rateLimit"] { policy.rateLimit = try rule(value, "tenant '\(name)' rateLimit") }
        if let value = members["tierRateLimits"] {
            guard case .object(let limits) = value else {
                throw JobFarmError.invalidArgument("tenant '\(name)': tierRateLimits must be an object tier → {perSecond, burst}")
            }
            for (tier, limit) in limits {
                guard farmTiers.contains(tier) else {
                    throw JobFarmError.invalidArgument("tenant '\(name)': tierRateLimits names '\(tier)', not one of \(farmTiers.joined(separator: ", "))")
                }
                policy.tierRateLimits[tier] = try rule(limit, "tenant '\(name)' tierRateLimits.\(tier)")
            }
        }
        return policy
    }

    static func rule(_ value: JSONValue, _ what: String) throws -> RateLimitRule {
        guard let perSecond = value["perSecond"]?.doubleValue, perSecond > 0, perSecond <= 1_000_000,
              let burst = value["burst"]?.doubleValue, burst >= 1, burst <= 1_000_000, burst == burst.rounded() else {
            throw JobFarmError.invalidArgument("\(what) must be {\"perSecond\": > 0, \"burst\": a whole number ≥ 1}")
        }
        return RateLimitRule(perSecond: perSecond, burst: Int(burst))
    }
}
