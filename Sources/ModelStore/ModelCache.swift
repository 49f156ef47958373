import Compute
import Foundation

/// A per-process cache of loaded models, least recently used first out, bounded in tensor bytes.
///
/// Models load lazily on first use; concurrent requests for the same model share one load. Entries idle for
/// longer than `idleTimeout` are dropped on the next access. Keys are whatever the caller chooses (the
/// version's SHA-256 plus the precision it runs at), so a pinned version is never loaded twice.
public actor ModelCache {
    /// Most bytes of tensors kept.
    public let capacityBytes: Int
    /// Entries unused this long are dropped (nil keeps them until evicted by size).
    public let idleTimeout: Duration?

    private struct Entry {
        let model: MLPModel
        let bytes: Int
        var lastUsed: ContinuousClock.Instant
    }

    private var entries: [String: Entry] = [:]
    private var loading: [String: Task<MLPModel, Error>] = [:]
    /// Loads done (cache misses), for tests and logs.
    public private(set) var loads = 0
    /// Hits, for tests and logs.
    public private(set) var hits = 0

    /// Creates a cache holding up to `capacityBytes` of tensors.
    public init(capacityBytes: Int = 512 << 20, idleTimeout: Duration? = .seconds(600)) {
        self.capacityBytes = max(0, capacityBytes)
        self.idleTimeout = idleTimeout
    }

    /// The cached model for `key`, loading it with `load` on a miss.
    public func model(for key: String, load: @escaping @Sendable () async throws -> MLPModel) async throws -> MLPModel {
        let now = ContinuousClock.now
        dropIdle(now: now)
        if var entry = entries[key] {
            entry.lastUsed = now
            entries[key] = entry
            hits += 1
            return entry.model
        }
        if let task = loading[key] { return try await task.value }
        let task = Task { try await load() }
        loading[key] = task
        defer { loading[key] = nil }
        let model = try await task.value
        loads += 1
        insert(model, key: key)
        return model
    }

    /// Keys cached now, most recently used first.
    public var keys: [String] { entries.sorted { $0.value.lastUsed > $1.value.lastUsed }.map(\.key) }

    /// Total tensor bytes cached.
    public var cachedBytes: Int { entries.values.reduce(0) { $0 + $1.bytes } }

    /// Drops everything.
    public func removeAll() { entries.removeAll() }

    private func insert(_ model: MLPModel, key: String) {
        let bytes = model.tensorByteCount
        guard bytes <= capacityBytes else { return }  // bigger than the whole cache: used once, not kept
        entries[key] = Entry(model: model, bytes: bytes, lastUsed: .now)
        var total = cachedBytes
        while total > capacityBytes, let oldest = entries.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
            entries[oldest.key] = nil
            total -= oldest.value.bytes
        }
    }

    private func dropIdle(now: ContinuousClock.Instant) {
        guard let idleTimeout else { return }
        for (key, entry) in entries where now - entry.lastUsed > idleTimeout { entries[key] = nil }
    }
}
