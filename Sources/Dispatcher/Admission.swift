import Foundation
import Hummingbird
import JobProtocol
import JobQueue
import RedisClient

/// What guards the routes: API keys, tenants, rate limits, idempotency records and metrics. Each store is a
/// protocol, so that a local fallback (keys cached, a per-replica limiter, idempotency checked against an outbox)
/// can stand in while Redis is down.
public struct AccessControl: Sendable {
    public var mode: AuthenticationMode
    public var keys: any APIKeyLookup
    public var tenants: TenantDirectory
    public var rateLimiter: any RateLimiter
    public var idempotency: any IdempotencyStore
    public var metrics: DispatcherMetrics
    /// For the rate-limit keys.
    public var namespace: String

    public init(mode: AuthenticationMode, keys: any APIKeyLookup, tenants: TenantDirectory, rateLimiter: any RateLimiter,
                idempotency: any IdempotencyStore, metrics: DispatcherMetrics, namespace: String) {
        self.mode = mode
        self.keys = keys
        self.tenants = tenants
        self.rateLimiter = rateLimiter
        self.idempotency = idempotency
        self.metrics = metrics
        self.namespace = namespace
    }

    /// The Redis-backed stores (`farm`'s Redis URL): keys cached for `configuration.keyCacheTTL`, idempotency records
    /// kept for the farm's idempotency window.
    /// - Parameter redis: where rate-limit and idempotency calls go; the dispatcher passes its `RedisCoalescer`, so
    ///   that concurrent requests share round trips. `nil`: a connection of their own each (a `RedisClient`
    ///   serialises its calls).
    /// - Parameters:
    ///   - liveReplicas: the divisor of the per-replica limits while Redis is away (`nil`: 1).
    ///   - persistedKeys: where the keys found are kept on disk for a restart while Redis is away.
    public init(farm: JobFarm, configuration: DispatcherConfiguration, metrics: DispatcherMetrics = DispatcherMetrics(),
                redis: (any RedisPipelining)? = nil, liveReplicas: LiveReplicas? = nil, persistedKeys: PersistedAPIKeys? = nil) {
        func client(_ name: String) -> RedisClient { RedisClient(configuration: farm.configuration.redis, name: "dispatcher-\(name)") }
        let namespace = farm.configuration.namespace
        let replicas: @Sendable () -> Int
        if let liveReplicas { replicas = { liveReplicas.count } } else { replicas = { 1 } }
        self.init(
            mode: configuration.authentication,
            keys: CachedAPIKeys(RedisAPIKeys(client: client("keys"), namespace: namespace), ttl: configuration.keyCacheTTL,
                                persisted: persistedKeys),
            tenants: configuration.tenants,
            rateLimiter: FallbackRateLimiter(shared: RedisRateLimiter(client: redis ?? client("ratelimit")),
                                             local: LocalRateLimiter(replicas: replicas)),
            idempotency: RedisIdempotencyStore(client: redis ?? client("idempotency"), namespace: namespace, ttl: farm.configuration.idempotencyWindow),
            metrics: metrics, namespace: namespace)
    }

    /// The charges of `jobs` for `caller`: the tenant's limit (every job) and each tier's (its jobs).
    func charges(_ jobs: [EnqueueRequest], caller: Caller, defaultTier: String) -> [RateLimitCharge] {
        var charges: [RateLimitCharge] = []
        if let rule = caller.policy.rateLimit {
            charges.append(RateLimitCharge(name: "tenant", key: RedisRateLimiter.key(namespace: namespace, tenant: caller.tenant, tier: nil),
                                           rule: rule, cost: jobs.count))
        }
        var perTier: [String: Int] = [:]
        for job in jobs { perTier[job.tier ?? defaultTier, default: 0] += 1 }
        for (tier, count) in perTier.sorted(by: { $0.key < $1.key }) {
            guard let rule = caller.policy.tierRateLimits[tier] else { continue }
            charges.append(RateLimitCharge(name: tier, key: RedisRateLimiter.key(namespace: namespace, tenant: caller.tenant, tier: tier),
                                           rule: rule, cost: count))
        }
        return charges
    }
}

/// The outcome of `Dispatcher.admit`: the ids, whether they come from an earlier request, and headers to add.
struct Admission: Sendable {
    var ids: [String]
    var replayed: Bool
    var headers: HTTPFields
    /// The jobs wait in this replica's outbox (Redis was away), not in Redis.
    var spooled: Bool = false
    /// Per job, whether it was a duplicate (its `unique` key seen within its window, or its id in use): its id is
    /// then the original job's. Empty: none was.
    var duplicates: [Bool] = []
}

/// Where `Dispatcher.place` put jobs: their ids, and whether they wait in the outbox.
struct Placement: Sendable {
    var ids: [String]
    var spooled: Bool
    /// Per job, whether Redis answered it as a duplicate (empty: none was, or the jobs were spooled).
    var duplicates: [Bool] = []
}

extension Dispatcher {
    /// Everything between a valid body and the enqueue: the caller's tiers (403), its rate limits (429), the
    /// `Idempotency-Key` (a replay answers the first request's ids; another body under the key → 422), then the
    /// enqueue through `enqueue` and the metrics.
    func admit(
        _ jobs: [EnqueueRequest], body: JSONValue, request: Request, route: String,
        enqueue: @Sendable ([EnqueueRequest]) async throws -> Placement
    ) async throws -> Admission {
        guard let caller = Caller.current else {
            throw Problem(.unauthorized, detail: "no API key: send the header 'Authorization: Bearer <key>'",
                          headers: [.wwwAuthenticate: #"Bearer realm="jobfarm""#])
        }
        let defaultTier = farm.configuration.defaultTier
        var forbidden: [FieldProblem] = []
        let allowedText: String
        if let tiers = caller.tiers {
            allowedText = tiers.isEmpty ? "; its key allows no tier" : "; it may use " + tiers.sorted().joined(separator: ", ")
        } else {
            allowedText = ""
        }
        for (index, job) in jobs.enumerated() where !caller.allows(tier: job.tier ?? defaultTier) {
            let pointer = route == "/v1/jobs" ? "/tier" : "/jobs/\(index)/tier"
            forbidden.append(FieldProblem(pointer: pointer, "tenant '\(caller.tenant)' may not use tier '\(job.tier ?? defaultTier)'" + allowedText))
        }
        if !forbidden.isEmpty {
            throw Problem(.forbidden, detail: "the API key may not submit to \(forbidden.count == 1 ? "this tier" : "these tiers"); nothing was enqueued",
                          errors: forbidden)
        }
        let idempotencyKey = try IdempotencyKey.parse(request.headers[.idempotencyKey])

        var headers: HTTPFields = [:]
        let charges = access.charges(jobs, caller: caller, defaultTier: defaultTier)
        if !charges.isEmpty {
            let decision = try await access.rateLimiter.charge(charges)
            headers = decision.headers
            guard decision.allowed else {
                access.metrics.rateLimited(tenant: caller.tenant)
                let over: [String] = charges.filter { $0.cost > $0.rule.burst }.map { "\($0.name): \($0.rule.burst)" }
                let detail: String
                if decision.retryAfter == nil {
                    detail = "\(jobs.count) jobs in one request are more than a rate limit's burst (\(over.joined(separator: ", "))): send fewer jobs per request"
                } else {
                    detail = "rate limit reached for tenant '\(caller.tenant)': retry after Retry-After seconds; nothing was enqueued"
                }
                throw Problem(.tooManyRequests, detail: detail, headers: headers)
            }
        }

        guard let idempotencyKey else {
            let placed = try await enqueue(jobs)
            count(jobs, caller: caller)
            return Admission(ids: placed.ids, replayed: false, headers: headers, spooled: placed.spooled, duplicates: placed.duplicates)
        }
        // Ids chosen before the claim: whoever finds the record enqueues exactly these (a repeat is a no-op).
        var chosen = jobs
        for index in chosen.indices where chosen[index].id == nil { chosen[index].id = makeJobID() }
        let record = IdempotencyRecord(fingerprint: IdempotencyRecord.fingerprint(route: route, body: body),
                                       ids: chosen.map { $0.id! }, done: false)
        guard let existing = try await access.idempotency.claim(tenant: caller.tenant, key: idempotencyKey, record: record) else {
            let placed = try await enqueue(chosen)
            try await access.idempotency.markDone(tenant: caller.tenant, key: idempotencyKey, record: record)
            count(jobs, caller: caller)
            return Admission(ids: placed.ids, replayed: false, headers: headers, spooled: placed.spooled, duplicates: placed.duplicates)
        }
        guard existing.fingerprint == record.fingerprint, existing.ids.count == jobs.count else {
            throw Problem(.unprocessableContent,
                          detail: "the Idempotency-Key was used for another request (another body or route) within the last \(Int(farm.configuration.idempotencyWindow.seconds / 3600)) h: use a new key for a new request")
        }
        headers[.idempotentReplayed] = "true"
        access.metrics.replayed(tenant: caller.tenant)
        if !existing.done {
            // The first request is under way, or failed after its claim: enqueue its ids (nothing happens for those
            // that exist), so that the jobs exist when this answer says so.
            for index in chosen.indices { chosen[index].id = existing.ids[index] }
            _ = try await enqueue(chosen)
            try await access.idempotency.markDone(tenant: caller.tenant, key: idempotencyKey, record: existing)
        }
        // The first request's jobs may still wait in this replica's outbox (Redis away): answered as spooled then.
        let spooled = outbox.depth > 0 ? ((try? await outbox.entry(id: existing.ids.first ?? "")) ?? nil) != nil : false
        return Admission(ids: existing.ids, replayed: true, headers: headers, spooled: spooled)
    }

    func count(_ jobs: [EnqueueRequest], caller: Caller) {
        var groups: [String: (kind: String, tier: String, count: Int)] = [:]
        for job in jobs {
            let tier = job.tier ?? farm.configuration.defaultTier
            groups[job.kind + "\u{0}" + tier, default: (job.kind, tier, 0)].count += 1
        }
        for group in groups.values { access.metrics.submitted(kind: group.kind, tier: group.tier, tenant: caller.tenant, count: group.count) }
    }
}
