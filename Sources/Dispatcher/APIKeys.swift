import Crypto
import Foundation
import JobProtocol
import JobQueue
import RedisClient
import Synchronization

/// An API key as stored: who it belongs to and what it may do. The key itself is never stored, only its SHA-256.
public struct APIKey: Sendable, Equatable {
    /// Public id (`jobfarm apikey list`, `revoke`); also the key's second part (`jfk_<id>_<secret>`).
    public var id: String
    public var tenant: String
    /// Tiers this key may submit to (further bounded by the tenant's tiers in the tenants file).
    public var tiers: [String]
    /// May call the operator routes (`/metrics`, and later the dead-letter routes).
    public var isOperator: Bool
    /// Creation time, ms since 1970.
    public var createdAt: Int64

    public init(id: String, tenant: String, tiers: [String], isOperator: Bool, createdAt: Int64) {
        self.id = id
        self.tenant = tenant
        self.tiers = tiers
        self.isOperator = isOperator
        self.createdAt = createdAt
    }
}

/// Finds the key whose SHA-256 (hex) is `hash`. The seam for a local copy kept while Redis is down.
public protocol APIKeyLookup: Sendable {
    /// The key with this hash, or `nil` when there is none (never created, or revoked).
    func key(hash: String) async throws -> APIKey?
}

/// The key format and its hash: `jfk_<id>_<secret>`, with a 12-character id and a 256-bit secret (hex).
public enum APIKeySecret {
    /// A new key and its id.
    public static func make() -> (id: String, key: String) {
        var generator = SystemRandomNumberGenerator()
        func hex(_ count: Int) -> String {
            (0..<count).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        }
        let id = hex(6)
        return (id, "jfk_\(id)_\(hex(32))")
    }

    /// SHA-256 of the key, hex: what Redis holds, and what a request's key is looked up by.
    public static func hash(_ key: String) -> String {
        SHA256.hash(data: Array(key.utf8)).lowercaseHex
    }
}

/// API keys in Redis. Layout (one hash slot, `{auth}`, so the two writes of a create or revoke are one MULTI even on
/// a cluster): `<ns>:{auth}:key:<sha256>` HASH (id, tenant, tiers, operator, created) and `<ns>:{auth}:keys` HASH
/// id → sha256 (the index `list` and `revoke` use). docs/PROTOCOL.md, "Dispatcher keys", has the whole table.
public struct RedisAPIKeys: APIKeyLookup {
    let client: RedisClient
    let namespace: String

    public init(client: RedisClient, namespace: String) {
        self.client = client
        self.namespace = namespace
    }

    /// `<ns>:{auth}:key:<sha256>`.
    public static func recordKey(namespace: String, hash: String) -> String { "\(namespace):{auth}:key:\(hash)" }
    /// `<ns>:{auth}:keys`.
    public static func indexKey(namespace: String) -> String { "\(namespace):{auth}:keys" }

    /// Makes a key; the answer's `key` is shown once and never stored.
    public func create(tenant: String, tiers: [String], isOperator: Bool) async throws -> (key: String, record: APIKey) {
        guard TenantDirectory.isValidName(tenant) else {
            throw JobFarmError.invalidArgument("tenant '\(tenant)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        let (id, key) = APIKeySecret.make()
        let hash = APIKeySecret.hash(key)
        let record = APIKey(id: id, tenant: tenant, tiers: tiers, isOperator: isOperator, createdAt: WallClock.nowMilliseconds())
        let replies = try await client.send([
            RedisCommand("MULTI"),
            RedisCommand("HSET", Self.recordKey(namespace: namespace, hash: hash), "id", id, "tenant", tenant,
                         "tiers", tiers.joined(separator: ","), "operator", isOperator ? "1" : "0", "created", String(record.createdAt)),
            RedisCommand("HSET", Self.indexKey(namespace: namespace), id, hash),
            RedisCommand("EXEC"),
        ])
        try Self.check(replies, "create an API key")
        return (key, record)
    }

    /// Every key, oldest first (never the secret).
    public func list() async throws -> [APIKey] {
        let index = try await client.execute(RedisCommand("HGETALL", Self.indexKey(namespace: namespace))).array ?? []
        var hashes: [String] = []
        for pair in stride(from: 1, to: index.count, by: 2) { hashes.append(index[pair].string ?? "") }
        guard !hashes.isEmpty else { return [] }
        let replies = try await client.send(hashes.map { RedisCommand("HGETALL", Self.recordKey(namespace: namespace, hash: $0)) })
        return replies.compactMap(Self.record).sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }

    /// Deletes a key; `false` when no key has this id. Every replica stops accepting it within its cache's TTL.
    public func revoke(id: String) async throws -> Bool {
        let index = Self.indexKey(namespace: namespace)
        guard let hash = try await client.execute(RedisCommand("HGET", index, id)).string else { return false }
        let replies = try await client.send([
            RedisCommand("MULTI"),
            RedisCommand("DEL", Self.recordKey(namespace: namespace, hash: hash)),
            RedisCommand("HDEL", index, id),
            RedisCommand("EXEC"),
        ])
        try Self.check(replies, "revoke an API key")
        return true
    }

    public func key(hash: String) async throws -> APIKey? {
        let reply = try await client.execute(RedisCommand("HGETALL", Self.recordKey(namespace: namespace, hash: hash)))
        return Self.record(reply)
    }

    static func record(_ reply: RESPValue) -> APIKey? {
        guard let items = reply.array, !items.isEmpty else { return nil }
        var fields: [String: String] = [:]
        for pair in stride(from: 0, to: items.count - 1, by: 2) { fields[items[pair].string ?? ""] = items[pair + 1].string }
        guard let id = fields["id"], let tenant = fields["tenant"] else { return nil }
        return APIKey(id: id, tenant: tenant, tiers: (fields["tiers"] ?? "").split(separator: ",").map(String.init),
                      isOperator: fields["operator"] == "1", createdAt: Int64(fields["created"] ?? "") ?? 0)
    }

    static func check(_ replies: [RESPValue], _ what: String) throws {
        for reply in replies {
            if let message = reply.errorMessage { throw JobFarmError(RedisError(reply: message, context: what), operation: what) }
        }
        if replies.last?.isNull == true { throw JobFarmError.invalidArgument("could not \(what): the transaction was aborted; retry") }
    }
}

/// Keeps found keys for `ttl` so that most requests cost no Redis round trip; a revoked key is refused by every
/// replica at most `ttl` later. Keys not found are not kept (a new key works at once). `ttl` zero: no cache.
public final class CachedAPIKeys: APIKeyLookup {
    let source: any APIKeyLookup
    let ttl: Duration
    let entries = Mutex<[String: (key: APIKey, until: ContinuousClock.Instant)]>([:])
    /// Lookups under way, by hash: concurrent requests with one key share one Redis round trip (when a cached key
    /// expires under load, one lookup goes out, not one per request in flight).
    let inFlight = Mutex<[String: Task<APIKey?, any Error>]>([:])
    /// The keys found, on disk: what a replica restarted while Redis is away still knows.
    let persisted: PersistedAPIKeys?

    public init(_ source: any APIKeyLookup, ttl: Duration, persisted: PersistedAPIKeys? = nil) {
        self.source = source
        self.ttl = ttl
        self.persisted = persisted
    }

    public func key(hash: String) async throws -> APIKey? {
        let now = ContinuousClock.now
        let cached = entries.withLock { $0[hash] }
        if ttl > .zero, let cached, cached.until > now { return cached.key }
        let lookup: Task<APIKey?, any Error> = inFlight.withLock { inFlight in
            if let running = inFlight[hash] { return running }
            let source = self.source
            let task = Task { try await source.key(hash: hash) }
            inFlight[hash] = task
            return task
        }
        let found: APIKey?
        do {
            found = try await lookup.value
            inFlight.withLock { if $0[hash] == lookup { $0[hash] = nil } }
        } catch where Self.meansRedisIsAway(error) {
            inFlight.withLock { if $0[hash] == lookup { $0[hash] = nil } }
            // Redis is away: a key found before keeps working (its revocation is seen once Redis is back), so the
            // dispatcher can spool its submissions; so does a key an earlier run of this replica saw (the file). A key
            // never seen by this replica cannot be checked.
            if let cached { return cached.key }
            if let known = persisted?.key(hash: hash) {
                entries.withLock { $0[hash] = (known, now + ttl) }
                return known
            }
            throw error
        } catch {
            inFlight.withLock { if $0[hash] == lookup { $0[hash] = nil } }
            throw error
        }
        entries.withLock { entries in
            if entries.count > 10_000 { entries.removeAll(keepingCapacity: true) }
            if let found { entries[hash] = (found, now + ttl) } else { entries[hash] = nil }
        }
        if let found { persisted?.remember(hash: hash, key: found) } else { persisted?.forget(hash: hash) }
        return found
    }

    /// A connection failure, as the Redis client or the queue library reports it.
    static func meansRedisIsAway(_ error: any Error) -> Bool {
        (error as? JobFarmError)?.isConnectionError ?? (error as? RedisError)?.isConnectionError ?? false
    }
}
