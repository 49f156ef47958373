import JobProtocol
import RedisClient

extension WorkerInfo {
    /// `live`, `stopped` (it exited cleanly) or `gone` (it stopped heartbeating: crashed, killed or cut off; its
    /// leases are recovered by the reaper as for any lost lease).
    public var state: String {
        if goneAt == nil { return "live" }
        return fields["stopped"] != nil ? "stopped" : "gone"
    }

    /// The pool it belongs to (`jobfarm worker --pool`), when it runs one.
    public var pool: String? { fields["pool"] }
    /// The `jobfarm` version it runs.
    public var version: String? { fields["version"] }
    /// Attempts it recorded (any outcome) since it started.
    public var processed: Int { fields["processed"].flatMap { Int($0) } ?? 0 }
    /// Attempts that did not succeed (retried, dead-lettered, cancelled) since it started.
    public var failed: Int { fields["failed"].flatMap { Int($0) } ?? 0 }
    /// Jobs running in it at its last heartbeat.
    public var inFlight: Int { fields["busy"].flatMap { Int($0) } ?? 0 }
    /// When it started (ms since 1970).
    public var startedAt: Int64? { fields["started"].flatMap { Int64($0) } }
}

extension JobFarm {
    /// The worker registry as operators see it: the live workers (a heartbeat within `liveWithin`), then those gone
    /// within the gone-worker retention (`JobFarmConfiguration.goneWorkerRetention`), most recent first. A live
    /// worker's record is refreshed at every heartbeat; a gone one keeps its last figures.
    public func workerRegistry(liveWithin window: Duration = .seconds(60)) async throws -> [WorkerInfo] {
        let live = try await workers(seenWithin: window, what: "workers")
        let liveIDs = Set(live.map(\.id))
        let ns = configuration.namespace
        let gone = QueueKeys.goneWorkers(namespace: ns)
        let cutoff = WallClock.nowMilliseconds() - configuration.goneWorkerRetention.milliseconds
        let client = self.client
        let reply = try await retrying(for: .seconds(10), what: "workers") {
            try await client.send([
                RedisCommand("ZREMRANGEBYSCORE", gone, "-inf", "(\(cutoff)"),
                RedisCommand("ZREVRANGE", gone, "0", "-1", "WITHSCORES"),
            ])[1]
        }
        let items = reply.array ?? []
        var entries: [(id: String, at: Int64)] = []
        for pair in stride(from: 0, to: items.count - 1, by: 2) {
            guard let id = items[pair].string, !liveIDs.contains(id), let at = items[pair + 1].string.flatMap({ Double($0) }) else { continue }
            entries.append((id, Int64(at)))
        }
        if entries.isEmpty { return live }
        let hashes = try await retrying(for: .seconds(10), what: "workers") {
            try await client.send(entries.map { RedisCommand("HGETALL", QueueKeys.worker(namespace: ns, id: $0.id)) })
        }
        var result = live
        var expired: [String] = []
        for (entry, hash) in zip(entries, hashes) {
            let values = hash.array ?? []
            if values.isEmpty {
                expired.append(entry.id)
                continue
            }
            var fields: [String: String] = [:]
            for index in stride(from: 0, to: values.count - 1, by: 2) {
                if let key = values[index].string, let value = values[index + 1].string { fields[key] = value }
            }
            let seen = fields["seen"].flatMap { Int64($0) } ?? entry.at
            result.append(WorkerInfo(id: entry.id, lastSeen: seen, fields: fields, goneAt: entry.at))
        }
        if !expired.isEmpty {
            // Their records expired: nothing left to show.
            var zrem = RedisCommand("ZREM", gone)
            for id in expired { zrem.append(id) }
            _ = try? await client.send([zrem])
        }
        return result
    }

    /// Adds workers pruned from the live set (flat `id, last heartbeat` pairs) to the gone workers.
    func noteGone(_ pruned: [RESPValue], on client: RedisClient, what: String) async throws {
        guard pruned.count >= 2, configuration.goneWorkerRetention > .zero else { return }
        var zadd = RedisCommand("ZADD", QueueKeys.goneWorkers(namespace: configuration.namespace))
        for pair in stride(from: 0, to: pruned.count - 1, by: 2) {
            guard let id = pruned[pair].string, let seen = pruned[pair + 1].string else { continue }
            zadd.append(seen)
            zadd.append(id)
        }
        _ = try await retrying(for: .seconds(10), what: what) { try await client.send([zadd]) }
    }
}
