import Crypto
import Foundation
import JobProtocol
import JobQueue
import Logging
import RedisClient
import Synchronization

/// `Idempotency-Key` records while Redis is away: claimed in the outbox's SQLite file (table `idempotency`, written
/// with the same fsync as the spooled jobs), checked there before Redis while the file holds any, and copied to
/// Redis (`SET NX`, the time left of their window) by the forwarder once every spooled job is forwarded. So a
/// client that retries a spooled submission gets the first answer from this replica during the outage, and from
/// any replica afterwards.
public struct FallbackIdempotencyStore: IdempotencyStore {
    let shared: any IdempotencyStore
    let outbox: Outbox
    let ttl: Duration

    init(shared: any IdempotencyStore, outbox: Outbox, ttl: Duration) {
        self.shared = shared
        self.outbox = outbox
        self.ttl = ttl
    }

    public func claim(tenant: String, key: String, record: IdempotencyRecord) async throws -> IdempotencyRecord? {
        let hash = Self.hash(key)
        if outbox.idempotencyRecords.withLock({ $0 }) > 0, let local = try await outbox.idempotencyRecord(tenant: tenant, keyHash: hash) {
            return local
        }
        do {
            return try await shared.claim(tenant: tenant, key: key, record: record)
        } catch where CachedAPIKeys.meansRedisIsAway(error) {
            return try await outbox.claimIdempotency(tenant: tenant, keyHash: hash, record: record, ttl: ttl)
        }
    }

    public func markDone(tenant: String, key: String, record: IdempotencyRecord) async throws {
        let hash = Self.hash(key)
        if outbox.idempotencyRecords.withLock({ $0 }) > 0, try await outbox.markIdempotencyDone(tenant: tenant, keyHash: hash, record: record) {
            return
        }
        do {
            try await shared.markDone(tenant: tenant, key: key, record: record)
        } catch where CachedAPIKeys.meansRedisIsAway(error) {
            // The record stays "not done" in Redis: a retry enqueues the same ids again, which makes no second job.
        }
    }

    static func hash(_ key: String) -> String { SHA256.hash(data: Array(key.utf8)).lowercaseHex }
}

/// One record of the outbox's `idempotency` table, for copying to Redis.
struct OutboxIdempotencyRow: Sendable {
    var tenant: String
    var keyHash: String
    var record: String
    /// ms since 1970.
    var expiresAt: Int64
}

extension Outbox {
    /// The record under (tenant, key hash) if the file holds one still in its window.
    func idempotencyRecord(tenant: String, keyHash: String) async throws -> IdempotencyRecord? {
        let now = WallClock.nowMilliseconds()
        return try await onQueue { database in
            let select = try database.prepare("SELECT record FROM idempotency WHERE tenant = ? AND key_hash = ? AND expires_at > ?")
            try select.bind(1, tenant)
            try select.bind(2, keyHash)
            try select.bind(3, now)
            return try select.step() ? IdempotencyRecord(json: select.text(0)) : nil
        }
    }

    /// Stores `record` unless the file holds one under the key; returns the one there (`nil`: stored, on disk).
    func claimIdempotency(tenant: String, keyHash: String, record: IdempotencyRecord, ttl: Duration) async throws -> IdempotencyRecord? {
        let now = WallClock.nowMilliseconds()
        return try await onQueue { database in
            try database.transaction {
                let select = try database.prepare("SELECT record FROM idempotency WHERE tenant = ? AND key_hash = ? AND expires_at > ?")
                try select.bind(1, tenant)
                try select.bind(2, keyHash)
                try select.bind(3, now)
                if try select.step(), let existing = IdempotencyRecord(json: select.text(0)) { return existing }
                let insert = try database.prepare("INSERT OR REPLACE INTO idempotency (tenant, key_hash, record, expires_at) VALUES (?, ?, ?, ?)")
                try insert.bind(1, tenant)
                try insert.bind(2, keyHash)
                try insert.bind(3, record.json)
                try insert.bind(4, now + ttl.milliseconds)
                try insert.step()
                let count = try database.prepare("SELECT COUNT(*) FROM idempotency")
                try count.step()
                self.idempotencyRecords.withLock { $0 = Int(count.int(0)) }
                return nil
            }
        }
    }

    /// Marks the record done when the file holds it; false when it does not.
    func markIdempotencyDone(tenant: String, keyHash: String, record: IdempotencyRecord) async throws -> Bool {
        var done = record
        done.done = true
        let text = done.json
        return try await onQueue { database in
            let update = try database.prepare("UPDATE idempotency SET record = ? WHERE tenant = ? AND key_hash = ?")
            try update.bind(1, text)
            try update.bind(2, tenant)
            try update.bind(3, keyHash)
            try update.step()
            return database.changes > 0
        }
    }

    /// Up to `limit` records to copy to Redis (expired ones are deleted instead).
    func idempotencyRows(limit: Int) async throws -> [OutboxIdempotencyRow] {
        let now = WallClock.nowMilliseconds()
        return try await onQueue { database in
            let expired = try database.prepare("DELETE FROM idempotency WHERE expires_at <= ?")
            try expired.bind(1, now)
            try expired.step()
            let select = try database.prepare("SELECT tenant, key_hash, record, expires_at FROM idempotency LIMIT ?")
            try select.bind(1, Int64(limit))
            var rows: [OutboxIdempotencyRow] = []
            while try select.step() {
                rows.append(OutboxIdempotencyRow(tenant: select.text(0), keyHash: select.text(1), record: select.text(2), expiresAt: select.int(3)))
            }
            if rows.isEmpty { self.idempotencyRecords.withLock { $0 = 0 } }
            return rows
        }
    }

    /// Deletes records Redis now holds.
    func removeIdempotency(_ rows: [OutboxIdempotencyRow]) async throws {
        try await onQueue { database in
            try database.transaction {
                let delete = try database.prepare("DELETE FROM idempotency WHERE tenant = ? AND key_hash = ?")
                for row in rows {
                    delete.reset()
                    try delete.bind(1, row.tenant)
                    try delete.bind(2, row.keyHash)
                    try delete.step()
                }
            }
            let count = try database.prepare("SELECT COUNT(*) FROM idempotency")
            try count.step()
            self.idempotencyRecords.withLock { $0 = Int(count.int(0)) }
        }
    }
}

extension OutboxForwarder {
    /// Copies the idempotency records claimed during the outage to Redis once every spooled job is there; a key
    /// Redis holds already (another replica's claim) keeps Redis' record.
    func copyIdempotencyRecords(client: RedisClient) async {
        guard outbox.depth == 0, outbox.idempotencyRecords.withLock({ $0 }) > 0, breaker.mayAllowCall else { return }
        do {
            let rows = try await outbox.idempotencyRows(limit: 500)
            guard !rows.isEmpty else { return }
            let now = WallClock.nowMilliseconds()
            let namespace = farm.configuration.namespace
            _ = try await withDeadline(breaker.settings.callTimeout * 4) {
                try await client.send(rows.map { row in
                    RedisCommand("SET", "\(namespace):{idem:\(row.tenant)}:\(row.keyHash)", row.record, "NX", "PX", String(max(1, row.expiresAt - now)))
                })
            }
            try await outbox.removeIdempotency(rows)
        } catch {
            logger.debug("idempotency records stay in the outbox for now", metadata: ["error": "\(error)"])
        }
    }
}
