import Dispatch
import Foundation
import JobProtocol
import JobQueue
import Synchronization

/// Settings of the outbox and of the circuit breaker in front of Redis (part of `DispatcherConfiguration`).
public struct OutboxConfiguration: Sendable {
    /// This replica's name: 1–40 of a–z 0–9 `-`. It ends every job id the replica chooses (`<ULID>.<replica>`), so an
    /// id says which replica's outbox holds the job while it is spooled. Default: the host name and the port
    /// (`web1-8080`), or the host name and the process id when the port is 0 (a port picked at random is no identity).
    public var replica: String?
    /// The SQLite file. Default `.jobfarm/outbox-<replica>.sqlite` under the working directory.
    public var path: String?
    /// Most jobs the outbox holds; a submission that would go past it is answered 503 with `Retry-After`.
    public var maxJobs: Int
    /// Most bytes of job requests (payloads included) the outbox holds; 503 past it too.
    public var maxBytes: Int
    /// The breaker's thresholds.
    public var breaker: CircuitBreakerSettings
    /// Most jobs the forwarder hands to Redis in one call (one bulk enqueue).
    public var forwardBatch: Int

    public init(
        replica: String? = nil, path: String? = nil, maxJobs: Int = 100_000, maxBytes: Int = 256 << 20,
        breaker: CircuitBreakerSettings = CircuitBreakerSettings(), forwardBatch: Int = 500
    ) {
        self.replica = replica
        self.path = path
        self.maxJobs = maxJobs
        self.maxBytes = maxBytes
        self.breaker = breaker
        self.forwardBatch = forwardBatch
    }

    /// The environment variables `apply(environment:)` reads.
    public static let environmentVariables: [(name: String, meaning: String)] = [
        ("JOBFARM_SERVE_REPLICA", "this replica's name, the suffix of the job ids it chooses (host name and port)"),
        ("JOBFARM_SERVE_OUTBOX", "the outbox's SQLite file (.jobfarm/outbox-<replica>.sqlite)"),
        ("JOBFARM_SERVE_OUTBOX_MAX_JOBS", "most jobs in the outbox (100000)"),
        ("JOBFARM_SERVE_OUTBOX_MAX_BYTES", "most bytes in the outbox (268435456)"),
        ("JOBFARM_SERVE_BREAKER_FAILURES", "Redis failures in a row that open the circuit (3)"),
        ("JOBFARM_SERVE_BREAKER_OPEN", "how long the circuit stays open before a probe, e.g. 2s"),
        ("JOBFARM_SERVE_REDIS_TIMEOUT", "longest wait for Redis before a submission is spooled, e.g. 1s"),
    ]

    /// Applies whichever of `environmentVariables` are set; names the one that is wrong.
    public mutating func apply(environment: [String: String]) throws {
        func count(_ name: String) throws -> Int? {
            guard let value = environment[name] else { return nil }
            guard let number = Int(value) else { throw JobFarmError.invalidArgument("\(name) '\(value)' is not a whole number") }
            return number
        }
        func duration(_ name: String) throws -> Duration? {
            guard let value = environment[name] else { return nil }
            guard let parsed = Duration.parse(value) else { throw JobFarmError.invalidArgument("\(name) '\(value)' is not a duration such as 2s or 500ms") }
            return parsed
        }
        if let value = environment["JOBFARM_SERVE_REPLICA"], !value.isEmpty { replica = value }
        if let value = environment["JOBFARM_SERVE_OUTBOX"], !value.isEmpty { path = value }
        if let value = try count("JOBFARM_SERVE_OUTBOX_MAX_JOBS") { maxJobs = value }
        if let value = try count("JOBFARM_SERVE_OUTBOX_MAX_BYTES") { maxBytes = value }
        if let value = try count("JOBFARM_SERVE_BREAKER_FAILURES") { breaker.failureThreshold = value }
        if let value = try duration("JOBFARM_SERVE_BREAKER_OPEN") { breaker.openDuration = value }
        if let value = try duration("JOBFARM_SERVE_REDIS_TIMEOUT") { breaker.callTimeout = value }
    }

    /// Checks the settings, naming the first that is wrong.
    public func validate() throws {
        if let replica, !Self.isValidReplica(replica) {
            throw JobFarmError.invalidArgument("replica name '\(replica.prefix(64))' must be 1–40 of a–z 0–9 -, as in web1-8080")
        }
        guard maxJobs >= 1 else { throw JobFarmError.invalidArgument("the outbox's most jobs \(maxJobs) must be at least 1") }
        guard maxBytes >= 1024 else { throw JobFarmError.invalidArgument("the outbox's most bytes \(maxBytes) must be at least 1024") }
        guard breaker.failureThreshold >= 1 else { throw JobFarmError.invalidArgument("the breaker's failures in a row must be at least 1") }
        guard breaker.openDuration > .zero else { throw JobFarmError.invalidArgument("the breaker's open time must be positive, e.g. 2s") }
        guard breaker.callTimeout >= .milliseconds(10) else { throw JobFarmError.invalidArgument("the Redis timeout must be at least 10ms, e.g. 1s") }
        guard forwardBatch >= 1 else { throw JobFarmError.invalidArgument("the forward batch must be at least 1") }
    }

    static func isValidReplica(_ name: String) -> Bool {
        (1...40).contains(name.utf8.count) && name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
    }

    /// The replica name in use: the configured one, or one made from the host name and `port` (the process id when 0).
    public func resolvedReplica(port: Int) -> String {
        if let replica { return replica }
        var host = String(ProcessInfo.processInfo.hostName.lowercased().split(separator: ".").first ?? "host")
            .map { ($0.isLetter && $0.isASCII) || ($0.isNumber && $0.isASCII) ? $0 : "-" }
            .reduce(into: "") { $0.append($1) }
        if host.isEmpty { host = "host" }
        let suffix = port == 0 ? "pid\(ProcessInfo.processInfo.processIdentifier)" : String(port)
        return String(host.prefix(39 - suffix.count)) + "-" + suffix
    }

    /// The outbox file in use for `replica`.
    public func resolvedPath(replica: String) -> String {
        path ?? FileManager.default.currentDirectoryPath + "/.jobfarm/outbox-\(replica).sqlite"
    }
}

#if canImport(Glibc)
import Glibc
private func closeDescriptor(_ descriptor: Int32) { _ = Glibc.close(descriptor) }
#else
import Darwin
private func closeDescriptor(_ descriptor: Int32) { _ = Darwin.close(descriptor) }
#endif

/// One job in the outbox: accepted while Redis was away, waiting to be forwarded under its pre-chosen id.
struct OutboxEntry: Sendable {
    var seq: Int64
    var id: String
    var request: EnqueueRequest
    /// When it was accepted (ms since 1970).
    var acceptedAt: Int64
    /// Its Redis enqueue was tried and may have landed (a timeout, a connection lost mid-call).
    var attempted: Bool
    /// A `DELETE` asked for it to be cancelled.
    var cancelled: Bool
    /// Bytes counted against the outbox's bound.
    var bytes: Int
}

/// What `Outbox.cancel` found.
enum OutboxCancel: Sendable {
    /// Marked cancelled; the forwarder records it cancelled in Redis (it never runs).
    case cancelled
    /// The forwarder is handing it to Redis right now: cancel it there once it is done.
    case forwarding
    /// Not in this outbox.
    case absent
}

/// The dispatcher's durable spool for submissions Redis could not take: one SQLite file per replica, WAL journal,
/// `synchronous=FULL` (every commit is on disk before the client is answered). Rows are forwarded in the order they
/// were accepted (`seq`) and deleted only after Redis confirmed the enqueue; a repeat after a crash is harmless because
/// each row carries its job id, and enqueueing an id that exists is a no-op.
///
/// Concurrent spools are written together (one transaction and one fsync per group). One process per file: an
/// exclusive `flock` on `<path>.lock` is taken at open, so two replicas never share (and double-forward) an outbox.
public final class Outbox: @unchecked Sendable {
    // @unchecked: `database`, `lockDescriptor` and the prepared statements are touched only on `queue` (and in init and
    // deinit); everything else is in a Mutex.
    /// The SQLite file.
    public let path: String
    public let maxJobs: Int
    public let maxBytes: Int
    private let queue = DispatchQueue(label: "jobfarm.outbox")
    private var database: SQLiteDatabase?
    private var lockDescriptor: Int32

    private struct Counters {
        var jobs = 0
        var bytes = 0
        var failing: String?
    }
    private let counters = Mutex(Counters())
    private struct Spool {
        var entries: [(id: String, request: EnqueueRequest, text: String, runAt: Int64?)]
        var attempted: Bool
        var enforceBound: Bool
        var continuation: CheckedContinuation<Bool, any Error>
    }
    private let pending = Mutex<[Spool]>([])
    private struct Claims {
        var ids: Set<String> = []
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let claims = Mutex(Claims())
    /// Called after rows were added (the forwarder's wake-up).
    let onSpooled = Mutex<(@Sendable () -> Void)?>(nil)
    /// `Idempotency-Key` records claimed while Redis was away, not yet copied to Redis (OutboxIdempotency.swift).
    let idempotencyRecords = Mutex(0)

    /// Opens (creating) the outbox at `path`, its directory too, and takes its lock.
    /// - Throws: when the file cannot be opened or another process holds it, saying what to change.
    public init(path: String, maxJobs: Int, maxBytes: Int) throws {
        self.path = path
        self.maxJobs = maxJobs
        self.maxBytes = maxBytes
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let descriptor = open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw JobFarmError.invalidArgument("cannot create the outbox lock \(path).lock (errno \(errno)): choose another --outbox")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            closeDescriptor(descriptor)
            throw JobFarmError.invalidArgument(
                "the outbox \(path) is in use by another process: give each replica its own --replica or --outbox")
        }
        lockDescriptor = descriptor
        do {
            let database = try SQLiteDatabase(path: path)
            try database.execute("""
                PRAGMA journal_mode=WAL;
                PRAGMA synchronous=FULL;
                CREATE TABLE IF NOT EXISTS outbox (
                  seq INTEGER PRIMARY KEY AUTOINCREMENT,
                  id TEXT NOT NULL UNIQUE,
                  request TEXT NOT NULL,
                  accepted_at INTEGER NOT NULL,
                  attempted INTEGER NOT NULL DEFAULT 0,
                  cancelled INTEGER NOT NULL DEFAULT 0
                );
                CREATE TABLE IF NOT EXISTS idempotency (
                  tenant TEXT NOT NULL,
                  key_hash TEXT NOT NULL,
                  record TEXT NOT NULL,
                  expires_at INTEGER NOT NULL,
                  PRIMARY KEY (tenant, key_hash)
                );
                """)
            let records = try database.prepare("SELECT COUNT(*) FROM idempotency")
            try records.step()
            idempotencyRecords.withLock { $0 = Int(records.int(0)) }
            let statement = try database.prepare("SELECT COUNT(*), COALESCE(SUM(LENGTH(request)), 0) FROM outbox")
            try statement.step()
            counters.withLock {
                $0.jobs = Int(statement.int(0))
                $0.bytes = Int(statement.int(1))
            }
            self.database = database
        } catch {
            closeDescriptor(descriptor)
            throw JobFarmError.invalidArgument("cannot open the outbox \(path): \(error); check the path and its disk, or choose another --outbox")
        }
    }

    deinit {
        database?.close()
        if lockDescriptor >= 0 { closeDescriptor(lockDescriptor) }
    }

    /// Jobs held now (forwarded ones leave only once Redis has confirmed them).
    public var depth: Int { counters.withLock { $0.jobs } }
    /// Bytes of job requests held now.
    public var bytes: Int { counters.withLock { $0.bytes } }
    /// Healthy: the last write worked and the bound is not reached (what `/readyz` asks while Redis is away).
    public var isHealthy: Bool { counters.withLock { $0.failing == nil && $0.jobs < maxJobs && $0.bytes < maxBytes } }

    // MARK: - Spooling

    /// Writes `jobs` (each with its id set) durably, in order, all or none.
    /// - Parameters:
    ///   - attempted: their Redis enqueue was tried and may have landed.
    ///   - enforceBound: refuse (return false) when they would take the outbox past its bound. A caller whose Redis
    ///     attempt may have landed passes false: refusing then could answer an error for a job that runs.
    /// - Returns: false when refused for the bound.
    func spool(_ jobs: [EnqueueRequest], attempted: Bool, enforceBound: Bool) async throws -> Bool {
        let now = WallClock.nowMilliseconds()
        let entries = jobs.map { job -> (id: String, request: EnqueueRequest, text: String, runAt: Int64?) in
            let runAt = job.runAt ?? job.delay.flatMap { $0 > .zero ? now + $0.milliseconds : nil }
            return (job.id ?? "", job, Self.encode(job, runAt: runAt), runAt)
        }
        return try await withCheckedThrowingContinuation { continuation in
            let first = pending.withLock { list -> Bool in
                list.append(Spool(entries: entries, attempted: attempted, enforceBound: enforceBound, continuation: continuation))
                return list.count == 1
            }
            if first { queue.async { self.writePending() } }
        }
    }

    /// On `queue`: writes every spool waiting, in one transaction.
    private func writePending() {
        let spools = pending.withLock { list -> [Spool] in defer { list = [] }; return list }
        guard !spools.isEmpty else { return }
        var (jobs, bytes) = counters.withLock { ($0.jobs, $0.bytes) }
        var results: [Bool] = []
        do {
            guard let database else { throw SQLiteError(code: 0, message: "the outbox is closed") }
            try database.transaction {
                let insert = try database.prepare(
                    "INSERT OR IGNORE INTO outbox (id, request, accepted_at, attempted) VALUES (?, ?, ?, ?)")
                let now = WallClock.nowMilliseconds()
                for spool in spools {
                    let size = spool.entries.reduce(0) { $0 + $1.text.utf8.count }
                    if spool.enforceBound && (jobs + spool.entries.count > maxJobs || bytes + size > maxBytes) {
                        results.append(false)
                        continue
                    }
                    for entry in spool.entries {
                        insert.reset()
                        try insert.bind(1, entry.id)
                        try insert.bind(2, entry.text)
                        try insert.bind(3, now)
                        try insert.bind(4, Int64(spool.attempted ? 1 : 0))
                        try insert.step()
                        if database.changes > 0 {
                            jobs += 1
                            bytes += entry.text.utf8.count
                        }
                    }
                    results.append(true)
                }
            }
            counters.withLock {
                $0.jobs = jobs
                $0.bytes = bytes
                $0.failing = nil
            }
        } catch {
            counters.withLock { $0.failing = "\(error)" }
            for spool in spools { spool.continuation.resume(throwing: error) }
            return
        }
        for (spool, result) in zip(spools, results) { spool.continuation.resume(returning: result) }
        if results.contains(true) { onSpooled.withLock { $0 }?() }
    }

    // MARK: - Reading and cancelling

    /// The entry of job `id`, if this outbox holds it.
    func entry(id: String) async throws -> OutboxEntry? {
        if depth == 0 { return nil }
        return try await onQueue { database in
            let statement = try database.prepare("SELECT seq, id, request, accepted_at, attempted, cancelled FROM outbox WHERE id = ?")
            try statement.bind(1, id)
            return try statement.step() ? try Self.entry(statement) : nil
        }
    }

    /// Marks job `id` cancelled, unless the forwarder is handing it to Redis right now.
    func cancel(id: String) async throws -> OutboxCancel {
        if depth == 0 { return .absent }
        return try await onQueue { database in
            if self.claims.withLock({ $0.ids.contains(id) }) { return .forwarding }
            let update = try database.prepare("UPDATE outbox SET cancelled = 1 WHERE id = ?")
            try update.bind(1, id)
            try update.step()
            return database.changes > 0 ? .cancelled : .absent
        }
    }

    /// Returns once the forwarder has finished with `id` (or at once when it is not handing it over).
    func waitUntilForwarded(id: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = claims.withLock { claims -> Bool in
                if !claims.ids.contains(id) { return true }
                claims.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    // MARK: - Forwarding

    /// The oldest `limit` entries, claimed for forwarding (a cancel of one of them waits for `finish`).
    func claimOldest(_ limit: Int) async throws -> [OutboxEntry] {
        try await onQueue { database in
            let statement = try database.prepare(
                "SELECT seq, id, request, accepted_at, attempted, cancelled FROM outbox ORDER BY seq LIMIT ?")
            try statement.bind(1, Int64(limit))
            var entries: [OutboxEntry] = []
            while try statement.step() { entries.append(try Self.entry(statement)) }
            self.claims.withLock { $0.ids = Set(entries.map(\.id)) }
            return entries
        }
    }

    /// Ends a forwarding round: deletes `forwarded` (Redis confirmed them) durably, releases every claim.
    func finish(forwarded: [OutboxEntry]) async throws {
        defer {
            let waiters = claims.withLock { claims -> [CheckedContinuation<Void, Never>] in
                claims.ids = []
                defer { claims.waiters = [] }
                return claims.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
        guard !forwarded.isEmpty else { return }
        try await onQueue { database in
            try database.transaction {
                let delete = try database.prepare("DELETE FROM outbox WHERE seq = ?")
                for entry in forwarded {
                    delete.reset()
                    try delete.bind(1, entry.seq)
                    try delete.step()
                }
            }
            let (jobs, bytes) = (forwarded.count, forwarded.reduce(0) { $0 + $1.bytes })
            self.counters.withLock {
                $0.jobs = max(0, $0.jobs - jobs)
                $0.bytes = max(0, $0.bytes - bytes)
            }
        }
    }

    /// Closes the file; removes it (and its WAL and lock files) when it holds no job, so an idle replica leaves
    /// nothing behind. Later calls fail.
    func close() {
        queue.sync {
            database?.close()
            database = nil
            if depth == 0, idempotencyRecords.withLock({ $0 }) == 0 {
                for suffix in ["", "-wal", "-shm", ".lock"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            }
            if lockDescriptor >= 0 { closeDescriptor(lockDescriptor) }
            lockDescriptor = -1
        }
    }

    // MARK: - Encoding

    func onQueue<T: Sendable>(_ body: @escaping @Sendable (SQLiteDatabase) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result {
                    guard let database = self.database else { throw SQLiteError(code: 0, message: "the outbox is closed") }
                    return try body(database)
                })
            }
        }
    }

    private static func entry(_ statement: SQLiteStatement) throws -> OutboxEntry {
        let text = statement.text(2)
        return OutboxEntry(
            seq: statement.int(0), id: statement.text(1), request: try decode(text, id: statement.text(1)),
            acceptedAt: statement.int(3), attempted: statement.int(4) != 0, cancelled: statement.int(5) != 0,
            bytes: text.utf8.count)
    }

    /// A job request as the JSON stored in a row (a delay is stored as the time it ends, so forwarding late does
    /// not lengthen it).
    static func encode(_ job: EnqueueRequest, runAt: Int64?) -> String {
        var object: [String: JSONValue] = [
            "kind": .string(job.kind), "queue": .string(job.queue), "payload": job.payload,
            "maxAttempts": .number(Double(job.maxAttempts)), "timeoutMs": .number(Double(job.timeout.milliseconds)),
        ]
        if let tier = job.tier { object["tier"] = .string(tier) }
        if let runAt { object["runAt"] = .number(Double(runAt)) }
        if let key = job.idempotencyKey { object["idempotencyKey"] = .string(key) }
        if let window = job.idempotencyWindow { object["idempotencyWindowMs"] = .number(Double(window.milliseconds)) }
        if !job.trace.isEmpty { object["trace"] = .object(job.trace.mapValues { .string($0) }) }
        return JSONValue.object(object).jsonText
    }

    static func decode(_ text: String, id: String) throws -> EnqueueRequest {
        let value = try JSONValue(parsing: text)
        var trace: [String: String] = [:]
        if case .object(let members)? = value["trace"] {
            for (key, item) in members { if let text = item.stringValue { trace[key] = text } }
        }
        return EnqueueRequest(
            kind: value["kind"]?.stringValue ?? "", queue: value["queue"]?.stringValue ?? "default",
            tier: value["tier"]?.stringValue, payload: value["payload"] ?? .null,
            runAt: value["runAt"]?.doubleValue.map { Int64($0) }, maxAttempts: Int(value["maxAttempts"]?.doubleValue ?? 5),
            timeout: .milliseconds(Int64(value["timeoutMs"]?.doubleValue ?? 300_000)),
            idempotencyKey: value["idempotencyKey"]?.stringValue,
            idempotencyWindow: value["idempotencyWindowMs"]?.doubleValue.map { .milliseconds(Int64($0)) }, trace: trace, id: id)
    }
}
