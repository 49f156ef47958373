import Crypto
import Foundation
import Hummingbird
import JobProtocol
import JobQueue
import RedisClient

/// What was first sent under one `Idempotency-Key` of one tenant.
public struct IdempotencyRecord: Sendable, Equatable {
    /// SHA-256 of the route and the body (its JSON with sorted keys), hex: a different body under the same key → 422.
    public var fingerprint: String
    /// The job ids chosen for that request, in request order.
    public var ids: [String]
    /// The jobs are known to be enqueued (set after the enqueue); `false` while the first request is under way,
    /// or if it failed after claiming the key.
    public var done: Bool

    public init(fingerprint: String, ids: [String], done: Bool) {
        self.fingerprint = fingerprint
        self.ids = ids
        self.done = done
    }

    /// The fingerprint of a request: SHA-256 (hex) of the route, a newline and the body's JSON with sorted keys, so
    /// that member order and spacing do not matter.
    public static func fingerprint(route: String, body: JSONValue) -> String {
        SHA256.hash(data: Array((route + "\n" + body.jsonText).utf8)).lowercaseHex
    }

    var json: String {
        JSONValue.object(["f": .string(fingerprint), "ids": .array(ids.map(JSONValue.string)), "done": .bool(done)]).jsonText
    }

    init?(json text: String) {
        guard let value = try? JSONValue(parsing: text), let fingerprint = value["f"]?.stringValue,
              case .array(let items)? = value["ids"] else { return nil }
        self.init(fingerprint: fingerprint, ids: items.compactMap(\.stringValue), done: value["done"] == .bool(true))
    }
}

/// Keeps the first request under each `Idempotency-Key`. The seam for a local store while Redis is down.
public protocol IdempotencyStore: Sendable {
    /// Stores `record` unless the key holds one already; returns the one already there (`nil`: `record` was stored).
    func claim(tenant: String, key: String, record: IdempotencyRecord) async throws -> IdempotencyRecord?
    /// Marks the record's jobs as enqueued (keeps its expiry).
    func markDone(tenant: String, key: String, record: IdempotencyRecord) async throws
}

/// Idempotency records in Redis: `<ns>:{idem:<tenant>}:<sha256 of the key>` STRING (JSON), expiring after `ttl`.
///
/// Race-free without a lock: the ids are chosen **before** the claim (`SET NX GET`, one atomic step), and every
/// request that finds the record enqueues exactly those ids; the enqueue script creates nothing for an id that
/// exists, so two concurrent requests with one key make one job, and a request that died between the claim and
/// the enqueue is completed by the next retry.
public struct RedisIdempotencyStore: IdempotencyStore {
    let client: any RedisPipelining
    let namespace: String
    let ttl: Duration

    public init(client: any RedisPipelining, namespace: String, ttl: Duration) {
        self.client = client
        self.namespace = namespace
        self.ttl = ttl
    }

    public static func key(namespace: String, tenant: String, key: String) -> String {
        "\(namespace):{idem:\(tenant)}:" + SHA256.hash(data: Array(key.utf8)).lowercaseHex
    }

    public func claim(tenant: String, key: String, record: IdempotencyRecord) async throws -> IdempotencyRecord? {
        let redisKey = Self.key(namespace: namespace, tenant: tenant, key: key)
        let reply: RESPValue
        do {
            reply = try await client.executeCommand(RedisCommand("SET", redisKey, record.json, "NX", "GET", "PX", String(ttl.milliseconds)))
        } catch let error as RedisError {
            throw JobFarmError(error, operation: "claim an idempotency key")
        }
        guard let text = reply.string else { return nil }
        guard let existing = IdempotencyRecord(json: text) else {
            throw JobFarmError.redisFailed(operation: "claim an idempotency key", cause: .unexpectedReply("the record does not parse"))
        }
        return existing
    }

    public func markDone(tenant: String, key: String, record: IdempotencyRecord) async throws {
        var done = record
        done.done = true
        do {
            _ = try await client.executeCommand(RedisCommand("SET", Self.key(namespace: namespace, tenant: tenant, key: key), done.json, "XX", "KEEPTTL"))
        } catch let error as RedisError {
            throw JobFarmError(error, operation: "record an idempotency key")
        }
    }
}

enum IdempotencyKey {
    /// The header's value when valid: 1–255 visible ASCII characters.
    static func parse(_ value: String?) throws -> String? {
        guard let value else { return nil }
        guard (1...255).contains(value.utf8.count), value.utf8.allSatisfy({ (0x21...0x7e).contains($0) }) else {
            throw Problem(.badRequest, detail: "the Idempotency-Key header must be 1–255 visible ASCII characters (a UUID, say)")
        }
        return value
    }
}
