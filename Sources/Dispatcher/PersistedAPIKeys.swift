import Foundation
import Synchronization

/// The API keys this replica has found in Redis, kept in a SQLite file beside its outbox, so that a replica that
/// restarts while Redis is away still knows the keys it served before (and can spool their submissions). Only each
/// key's SHA-256 and what it may do are written, never a key. A key Redis answers as unknown (revoked) is deleted
/// from the file at once; a key revoked while this replica is down keeps working during an outage that follows,
/// until Redis is back (docs/DESIGN-NOTES.md).
public final class PersistedAPIKeys: @unchecked Sendable {
    // @unchecked: `database` is touched only on `queue` (and in init and deinit); the rest is in Mutexes.
    public let path: String
    private let queue = DispatchQueue(label: "jobfarm.keys")
    private var database: SQLiteDatabase?
    /// Hashes in the file, and when each was last written (ContinuousClock), so a key in use is rewritten at most
    /// once per `refresh`, and a request with an unknown key costs no write.
    private let written = Mutex<[String: ContinuousClock.Instant?]>([:])
    /// How often a key in use is written again (its attributes may have changed in Redis).
    let refresh: Duration

    /// Opens (creating) the file and its directory.
    public init(path: String, refresh: Duration = .seconds(60)) throws {
        self.path = path
        self.refresh = refresh
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let database = try SQLiteDatabase(path: path)
        try database.execute("""
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=NORMAL;
            CREATE TABLE IF NOT EXISTS api_keys (
              hash TEXT PRIMARY KEY,
              id TEXT NOT NULL,
              tenant TEXT NOT NULL,
              tiers TEXT NOT NULL,
              operator INTEGER NOT NULL,
              created INTEGER NOT NULL,
              seen_at INTEGER NOT NULL
            );
            """)
        let statement = try database.prepare("SELECT hash FROM api_keys")
        var hashes: [String: ContinuousClock.Instant?] = [:]
        while try statement.step() { hashes[statement.text(0)] = .some(nil) }
        written.withLock { $0 = hashes }
        self.database = database
    }

    deinit { database?.close() }

    /// The file beside an outbox file: `outbox-r1.sqlite` → `outbox-r1.keys.sqlite`.
    public static func path(besideOutbox outbox: String) -> String {
        (outbox as NSString).deletingPathExtension + ".keys.sqlite"
    }

    /// Keys held.
    public var count: Int { written.withLock { $0.count } }

    /// Records a key Redis answered (at most once per `refresh` for one key).
    public func remember(hash: String, key: APIKey) {
        let now = ContinuousClock.now
        let due = written.withLock { written -> Bool in
            if let last = written[hash], let last, now - last < refresh { return false }
            written[hash] = now
            return true
        }
        guard due else { return }
        queue.async {
            guard let database = self.database else { return }
            do {
                let statement = try database.prepare("""
                    INSERT INTO api_keys (hash, id, tenant, tiers, operator, created, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(hash) DO UPDATE SET id = excluded.id, tenant = excluded.tenant, tiers = excluded.tiers,
                      operator = excluded.operator, created = excluded.created, seen_at = excluded.seen_at
                    """)
                try statement.bind(1, hash)
                try statement.bind(2, key.id)
                try statement.bind(3, key.tenant)
                try statement.bind(4, key.tiers.joined(separator: ","))
                try statement.bind(5, Int64(key.isOperator ? 1 : 0))
                try statement.bind(6, key.createdAt)
                try statement.bind(7, Int64(Date().timeIntervalSince1970 * 1000))
                _ = try statement.step()
            } catch {
                self.written.withLock { $0[hash] = .some(nil) }
            }
        }
    }

    /// Forgets a key Redis answered as unknown (revoked); nothing to do for a hash the file does not hold.
    public func forget(hash: String) {
        let held = written.withLock { $0.removeValue(forKey: hash) != nil }
        guard held else { return }
        queue.async {
            guard let database = self.database else { return }
            if let statement = try? database.prepare("DELETE FROM api_keys WHERE hash = ?") {
                try? statement.bind(1, hash)
                _ = try? statement.step()
            }
        }
    }

    /// The key with this hash as last seen, or `nil`.
    public func key(hash: String) -> APIKey? {
        guard written.withLock({ $0[hash] != nil }) else { return nil }
        return queue.sync { () -> APIKey? in
            guard let database = self.database,
                  let statement = try? database.prepare("SELECT id, tenant, tiers, operator, created FROM api_keys WHERE hash = ?"),
                  (try? statement.bind(1, hash)) != nil, (try? statement.step()) == true
            else { return nil }
            return APIKey(id: statement.text(0), tenant: statement.text(1),
                          tiers: statement.text(2).split(separator: ",").map(String.init),
                          isOperator: statement.int(3) == 1, createdAt: statement.int(4))
        }
    }

    /// Waits for the writes asked so far (tests, shutdown).
    public func flush() {
        queue.sync {}
    }
}
