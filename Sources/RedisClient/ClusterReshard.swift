/// What `RedisClient.moveSlot(_:to:)` did.
public struct SlotMove: Sendable, Equatable {
    /// The hash slot moved.
    public var slot: Int
    /// The master that owned it before (`host:port`).
    public var from: String
    /// The master that owns it now.
    public var to: String
    /// The keys moved (0 when the slot was empty, or already on `to`).
    public var keys: Int
    /// How long the old owner was busy moving the keys: requests of every slot of that master waited this long.
    public var stall: Duration
}

extension RedisClient {
    /// The master (`host:port`) that owns `slot` in a cluster client's map; the one server's description otherwise.
    public func owner(ofSlot slot: Int) async throws -> String? {
        guard let router = clusterRouter else { return "\(configuration)" }
        return try await router.owner(ofSlot: slot)
    }

    /// Moves one hash slot, keys and ownership, to another master of the cluster while clients keep using it.
    ///
    /// The move is one atomic step on the old owner: a script that marks the slot `MIGRATING`, moves every key of
    /// it (`MIGRATE … KEYS`, in batches, until `CLUSTER GETKEYSINSLOT` is empty) and gives the slot to the new
    /// owner (`SETSLOT … NODE`). No request of that master runs in between, so no script ever sees the slot half
    /// moved (a queue's scripts reach job hashes by ids they pop, which Redis' own per-key checks would not
    /// cover). Then the new owner takes the slot and every other master is told. Until the new owner takes it (one
    /// round trip) a request for the slot gets `MOVED` from both nodes; the cluster client pauses and follows. A
    /// request that arrives while the keys move waits for the script: the queue stalls as long as its keys take.
    ///
    /// - Parameters:
    ///   - slot: the hash slot (`ClusterSlot.of(queue)` for a queue).
    ///   - target: the new owner, `host:port` as `masters()` names it.
    /// - Throws: `RedisError.server` when this is not a cluster client, `target` is not a master, or a step fails
    ///   (the error names the step; running the same move again finishes it).
    @discardableResult
    public func moveSlot(_ slot: Int, to target: String, batch: Int = 1000) async throws -> SlotMove {
        guard let router = clusterRouter else {
            throw RedisError.server("moving a hash slot needs a Redis Cluster: connect with redis+cluster://")
        }
        guard (0..<ClusterSlot.count).contains(slot) else { throw RedisError.server("slot \(slot) is not in 0…\(ClusterSlot.count - 1)") }
        let masters = try await router.masters()
        guard masters.contains(target) else {
            throw RedisError.server("\(target) is not a master of this cluster (masters: \(masters.joined(separator: ", "))); name one as host:port")
        }
        guard let source = try await router.owner(ofSlot: slot) else {
            throw RedisError.server("no master owns slot \(slot): the cluster is missing a shard; check CLUSTER NODES")
        }
        if source == target { return SlotMove(slot: slot, from: source, to: target, keys: 0, stall: .zero) }
        let from = router.client(for: source), to = router.client(for: target)
        func id(of client: RedisClient, _ address: String) async throws -> String {
            guard let id = try await client.execute("CLUSTER", "MYID").string else {
                throw RedisError.unexpectedReply("CLUSTER MYID on \(address) did not answer a node id")
            }
            return id
        }
        let sourceID = try await id(of: from, source), targetID = try await id(of: to, target)
        try await step("CLUSTER SETSLOT \(slot) IMPORTING on \(target)") {
            try await to.execute("CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceID)
        }
        guard let colon = target.lastIndex(of: ":") else { throw RedisError.server("\(target) is not host:port") }
        var host = String(target[..<colon])
        if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
        var arguments = [String(slot), targetID, host, String(target[target.index(after: colon)...]),
                         String(Int(configuration.commandTimeout.components.seconds * 1000)), String(batch)]
        switch (configuration.username, configuration.password) {
        case (let user?, let password?): arguments += ["AUTH2", user, password]
        case (nil, let password?): arguments += ["AUTH", password]
        default: break
        }
        let started = ContinuousClock.now
        let moved = try await step("moving the keys of slot \(slot) from \(source) to \(target)") {
            try await from.run(Self.moveSlotScript, keys: [], arguments: arguments)
        }
        let stall = ContinuousClock.now - started
        // The new owner first (it takes the slot with a new epoch), then every other master.
        try await step("CLUSTER SETSLOT \(slot) NODE on \(target)") {
            try await to.execute("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
        }
        for master in masters where master != target && master != source {
            _ = try? await router.client(for: master).execute("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
        }
        router.markStale()
        return SlotMove(slot: slot, from: source, to: target, keys: moved.int ?? 0, stall: stall)
    }

    private func step<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw RedisError.server("\(what) failed: \(error). Run the same move again to finish it (the keys already moved stay moved)")
        }
    }

    /// On the old owner, as one step: `MIGRATING`, every key moved in batches, the slot given to the new owner.
    /// ARGV: slot, new owner's id, its host, its port, MIGRATE timeout (ms), batch, then `AUTH`/`AUTH2` arguments.
    static let moveSlotScript = RedisScript(name: "moveSlot", source: """
        local slot = tonumber(ARGV[1])
        redis.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', ARGV[2])
        local moved = 0
        while true do
          local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', slot, tonumber(ARGV[6]))
          if #keys == 0 then break end
          local args = {'MIGRATE', ARGV[3], ARGV[4], '', '0', ARGV[5]}
          for i = 7, #ARGV do args[#args + 1] = ARGV[i] end
          args[#args + 1] = 'KEYS'
          for _, key in ipairs(keys) do args[#args + 1] = key end
          redis.call(unpack(args))
          moved = moved + #keys
        end
        redis.call('CLUSTER', 'SETSLOT', slot, 'NODE', ARGV[2])
        return moved
        """)
}
