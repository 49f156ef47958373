/// The Redis key layout (docs/PROTOCOL.md, "Keys"). Every key of one queue shares the hash tag `{queue}`,
/// so a Redis Cluster keeps a queue on one shard and its scripts stay single-slot.
public struct QueueKeys: Sendable, Hashable {
    public let namespace: String
    public let queue: String
    /// `ns:{queue}:`, the prefix of every key of the queue (passed to scripts as KEYS[1]).
    public let prefix: String

    public init(namespace: String = "jf", queue: String) {
        self.namespace = namespace
        self.queue = queue
        self.prefix = "\(namespace):{\(queue)}:"
    }

    /// LIST of job ids (LPUSH to enqueue, RPOP to fetch: the tail is the oldest).
    public func tier(_ tier: String) -> String { prefix + "t:" + tier }
    /// HASH of one job: envelope, state, counters, result. A job enqueued to run now has none until it is leased.
    public func job(_ id: String) -> String { prefix + "job:" + id }
    /// HASH id → `<qt> <tier> <envelope>`: the jobs enqueued to run now and not leased yet, which have no key of
    /// their own (`fetch` creates their job hash when it leases them).
    public var pending: String { prefix + "pending" }
    /// ZSET id → lease deadline (ms).
    public var inflight: String { prefix + "inflight" }
    /// ZSET id → run-at (ms): delayed, scheduled and retrying jobs.
    public var scheduled: String { prefix + "scheduled" }
    /// ZSET id → dead-at (ms): the dead letters.
    public var dead: String { prefix + "dead" }
    /// HASH id → dead-letter record (JSON).
    public var deadEntries: String { prefix + "dead:entries" }
    /// HASH id → the dead job's envelope (or the raw garbage), byte for byte.
    public var deadEnvelopes: String { prefix + "dead:env" }
    /// LIST of wake-up tokens that idle workers block on, for foreign clients that do not know tiers (workers
    /// block on it besides their tiers' lists).
    public var signal: String { prefix + "signal" }
    /// LIST holding at most one wake-up token for `tier`: the scripts push it when a job becomes ready in that tier,
    /// and idle workers block on the lists of the tiers they serve.
    public func signal(tier: String) -> String { prefix + "signal:" + tier }
    /// HASH `at` (server ms of the last reaper step) and `grace_until` (no reaping before it): the lease clock that
    /// stops while nobody reaches the queue.
    public var contact: String { prefix + "contact" }
    /// HASH of tier aging shared by all workers: `since` (jobs fetched since an aged tier was served), `last` (that tier).
    public var aging: String { prefix + "aging" }
    /// HASH of counters by tier and kind: field `<outcome> <tier> <kind>` (outcome `succeeded`, `retried` or
    /// `dead_lettered`) → count, kept by the scripts that end attempts.
    public var outcomes: String { prefix + "outcomes" }
    /// HASH of counters: enqueued, succeeded, retried, dead, cancelled, reaped, requeued, malformed.
    public var stats: String { prefix + "stats" }
    /// HASH of what is paused: field `*` (the whole queue) or a tier name → ms (server) since when. `fetch` reads it
    /// once per call and leases nothing from what it names; enqueue is not affected.
    public var paused: String { prefix + "paused" }
    /// STRING idempotency key → job id, with a TTL.
    public func idempotency(_ key: String) -> String { prefix + "idem:" + key }
    /// Pub/sub channel of job events: `<id> <state>` and `<id> progress <0…1>`.
    public var events: String { prefix + "events" }

    /// SET of queue names, for discovery (`worker` without `--queues`, `stats`).
    public static func registry(namespace: String) -> String { "\(namespace):queues" }
    /// ZSET worker id → last heartbeat (ms).
    public static func workers(namespace: String) -> String { "\(namespace):workers" }
    /// ZSET worker id → when it went (ms): workers that stopped cleanly or stopped heartbeating, kept for a while so
    /// that operators see them (`jobfarm workers`).
    public static func goneWorkers(namespace: String) -> String { "\(namespace):workers:gone" }
    /// HASH describing one worker process (host, pid, queues, concurrency, busy), expiring.
    public static func worker(namespace: String, id: String) -> String { "\(namespace):worker:\(id)" }

    /// True for names usable as a queue or tier: 1…64 of `A–Z a–z 0–9 _ - .`
    public static func isValidName(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count) else { return false }
        return name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
        }
    }
}

/// The states of a job (docs/PROTOCOL.md, "States").
public enum JobState: String, Sendable, Codable, CaseIterable {
    case queued, scheduled, running, retrying, succeeded, dead, cancelled

    /// Succeeded, dead and cancelled are final.
    public var isTerminal: Bool { self == .succeeded || self == .dead || self == .cancelled }
}

/// Why a job is in the dead letters.
public enum DeadLetterReason: String, Sendable, Codable, CaseIterable {
    /// Every attempt failed.
    case exhausted
    /// The handler said the error cannot be fixed by retrying.
    case nonRetryable = "non_retryable"
    /// The queue entry was not a valid job (garbage, bad envelope, unknown kind, corrupt payload).
    case malformed
    /// The last attempt ran past its timeout.
    case timeout
    /// The job lost its lease too many times: it keeps killing or hanging its worker.
    case poison
    /// An operator cancelled it and asked to keep it as a dead letter.
    case cancelled
}
