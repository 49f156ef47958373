import Dispatch
import Foundation
import Synchronization

/// Routes the requests of one `RedisClient` over a Redis Cluster: the slot map from `CLUSTER SLOTS`, one plain
/// client (connection, script SHAs, `NOSCRIPT` reload) per master, a pipeline split per node and its replies put back
/// in request order, `MOVED` (map re-read, request sent again), `ASK` (`ASKING` + the request, on the node named)
/// and `TRYAGAIN`/`CLUSTERDOWN` (sent again after a bounded back-off) handled here, below the callers.
final class ClusterRouter: Sendable {
    private struct State {
        /// Slot → index in `masters`; -1 while unknown.
        var owners = [Int32](repeating: -1, count: ClusterSlot.count)
        /// `host:port` of every master that owns slots, in the order `CLUSTER SLOTS` listed them.
        var masters: [String] = []
        /// One plain client per node it talked to.
        var clients: [String: RedisClient] = [:]
        /// Dedicated blocking clients per node and lane (`firstOf`), with the connection's `CLIENT ID` once known.
        var lanes: [String: (client: RedisClient, id: Int?)] = [:]
        /// The map must be re-read before the next request (never read yet, a `MOVED`, a node that failed).
        var stale = true
        var closed = false
    }

    let configuration: RedisConfiguration
    private let name: String
    private let state = Mutex(State())

    /// Redirections and retries one request may take before its last error reply is returned as it is.
    static let maximumRedirections = 16
    /// Sends after `TRYAGAIN`/`CLUSTERDOWN`: pauses of 20 ms doubling to 500 ms, about 2 s in all.
    static let maximumRetries = 8

    init(configuration: RedisConfiguration, name: String) {
        self.configuration = configuration
        self.name = name
    }

    // MARK: - Nodes and the slot map

    /// The plain client of one node (`host:port`), created on first use.
    func client(for address: String) -> RedisClient {
        state.withLock { state in
            if let client = state.clients[address] { return client }
            let client = RedisClient(configuration: nodeConfiguration(address), name: "\(name)@\(address)")
            client.reportsClusterRetries = true
            state.clients[address] = client
            return client
        }
    }

    private func nodeConfiguration(_ address: String) -> RedisConfiguration { configuration.clusterNode(address) }

    private static func address(_ endpoint: RedisConfiguration.Endpoint) -> String {
        switch endpoint {
        case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): return path
        }
    }

    /// The masters that own slots (`host:port`), reading the map first when needed.
    func masters() async throws -> [String] {
        try await ensureMap()
        return state.withLock { $0.masters }
    }

    private func ensureMap() async throws {
        let (stale, closed) = state.withLock { ($0.stale, $0.closed) }
        if closed { throw RedisError.connectionLost("client was closed") }
        if stale { try await refresh() }
    }

    /// Re-reads the slot map (`CLUSTER SLOTS`) from the first node that answers: the known masters, then the seeds.
    func refresh() async throws {
        let (known, seeds) = state.withLock { ($0.masters, configuration.clusterSeeds.map(Self.address)) }
        var lastError: any Error = RedisError.connectionFailed("\(configuration): no seed node")
        for address in known + seeds.filter({ !known.contains($0) }) {
            do {
                let reply = try await client(for: address).send([RedisCommand("CLUSTER", "SLOTS")])[0]
                if let message = reply.errorMessage {
                    throw RedisError.server("CLUSTER SLOTS on \(address): \(message). Is this node part of a Redis Cluster (cluster-enabled yes)? For one server use redis://")
                }
                try install(slots: reply, from: address)
                return
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Installs a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id…], replica…]…]`.
    private func install(slots reply: RESPValue, from queried: String) throws {
        guard let ranges = reply.array, !ranges.isEmpty else {
            throw RedisError.unexpectedReply("CLUSTER SLOTS on \(queried) lists no slots: the cluster is not set up yet (redis-cli --cluster create)")
        }
        var owners = [Int32](repeating: -1, count: ClusterSlot.count)
        var masters: [String] = []
        for range in ranges {
            guard let items = range.array, items.count >= 3, let start = items[0].int, let end = items[1].int,
                let master = items[2].array, master.count >= 2, let port = master[1].int,
                (0..<ClusterSlot.count).contains(start), (start..<ClusterSlot.count).contains(end)
            else { throw RedisError.unexpectedReply("CLUSTER SLOTS on \(queried): an entry of unknown shape") }
            var host = master[0].string ?? ""
            if host.isEmpty || host == "?" {  // the node does not know its own address: the one we asked
                host = String(queried[..<(queried.lastIndex(of: ":") ?? queried.endIndex)])
            }
            let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            let index: Int
            if let known = masters.firstIndex(of: address) { index = known } else { masters.append(address); index = masters.count - 1 }
            for slot in start...end { owners[slot] = Int32(index) }
        }
        state.withLock { state in
            state.owners = owners
            state.masters = masters
            state.stale = false
        }
    }

    func markStale() { state.withLock { $0.stale = true } }

    /// The master that owns `slot` in the map (read first when needed), nil when none does.
    func owner(ofSlot slot: Int) async throws -> String? {
        try await ensureMap()
        return state.withLock { state in
            let index = state.owners[slot]
            return index >= 0 ? state.masters[Int(index)] : nil
        }
    }

    /// The master that owns the slot of `key`, or, for a request without a key, the first master.
    private func owner(of key: ArraySlice<UInt8>?) -> String? {
        state.withLock { state in
            guard !state.masters.isEmpty else { return nil }
            guard let key else { return state.masters[0] }
            let index = state.owners[ClusterSlot.of(key)]
            return index >= 0 ? state.masters[Int(index)] : nil
        }
    }

    /// Notes a `MOVED`: the slot belongs to `address` from now on.
    private func learn(slot: Int, movedTo address: String) {
        state.withLock { state in
            let index: Int
            if let known = state.masters.firstIndex(of: address) { index = known } else { state.masters.append(address); index = state.masters.count - 1 }
            state.owners[slot] = Int32(index)
        }
    }

    // MARK: - Requests

    /// The node of each request: its key's master; a request without a key goes with the nearest request after it
    /// that has one (`MULTI` with its commands), else the nearest before it (`EXEC`), else the first master.
    private func targets(_ requests: [RedisRequest]) throws -> [String] {
        var keyed: [String?] = []
        keyed.reserveCapacity(requests.count)
        for request in requests {
            if let key = request.routingKey {
                guard let node = owner(of: key) else {
                    markStale()
                    throw RedisError.server("CLUSTERDOWN no master owns the slot of \(String(decoding: key, as: UTF8.self)) (slot \(ClusterSlot.of(key))): the cluster is missing a shard; check CLUSTER NODES")
                }
                keyed.append(node)
            } else {
                keyed.append(nil)
            }
        }
        var result = [String](repeating: "", count: requests.count)
        var next: String? = nil
        for index in requests.indices.reversed() {
            if let node = keyed[index] { next = node }
            result[index] = keyed[index] ?? next ?? ""
        }
        var previous: String? = nil
        for index in requests.indices {
            if let node = keyed[index] { previous = node }
            if result[index].isEmpty {
                guard let node = previous ?? owner(of: nil) else { throw RedisError.connectionFailed("\(configuration): the slot map lists no master") }
                result[index] = node
            }
        }
        return result
    }

    /// Sends the requests, each to the master of its key, the requests of one node in one pipeline (the nodes in
    /// parallel), and returns one reply each in request order. Redirections and cluster retries are followed.
    func pipeline(_ requests: [RedisRequest], blockingFor: Duration) async throws -> [RESPValue] {
        try await ensureMap()
        let targets = try self.targets(requests)
        var replies: [RESPValue]
        if let first = targets.first, targets.allSatisfy({ $0 == first }) {
            replies = try await send(requests, to: first, blockingFor: blockingFor)
        } else {
            var groups: [String: [Int]] = [:]
            var order: [String] = []
            for (index, node) in targets.enumerated() {
                if groups[node] == nil { order.append(node) }
                groups[node, default: []].append(index)
            }
            replies = [RESPValue](repeating: .null, count: requests.count)
            try await withThrowingTaskGroup(of: ([Int], [RESPValue]).self) { group in
                for node in order {
                    let indices = groups[node]!
                    let part = indices.map { requests[$0] }
                    group.addTask { (indices, try await self.send(part, to: node, blockingFor: blockingFor)) }
                }
                for try await (indices, part) in group {
                    for (index, reply) in zip(indices, part) { replies[index] = reply }
                }
            }
        }
        var refreshed = false
        for index in replies.indices {
            guard let message = replies[index].errorMessage, Self.isClusterReply(message) else { continue }
            replies[index] = try await follow(requests[index], reply: replies[index], blockingFor: blockingFor, refreshed: &refreshed)
        }
        return replies
    }

    private func send(_ requests: [RedisRequest], to node: String, blockingFor: Duration) async throws -> [RESPValue] {
        let replicas = configuration.durableReplicas
        var replies: [RESPValue]
        do {
            if replicas > 0 {
                // Durable: `WAIT` behind the requests returns once that many replicas have this connection's writes
                // (at once when it wrote nothing), so the requests return only when a failover cannot undo them.
                let timeout = configuration.durableTimeout.components
                let milliseconds = timeout.seconds * 1000 + timeout.attoseconds / 1_000_000_000_000_000
                replies = try await client(for: node).pipeline(
                    requests + [.command(RedisCommand("WAIT", String(replicas), String(milliseconds)))],
                    blockingFor: blockingFor + configuration.durableTimeout)
            } else {
                return try await client(for: node).pipeline(requests, blockingFor: blockingFor)
            }
        } catch let error as RedisError where error.isConnectionError {
            // The node may have failed over: read the map again before the next request (the caller decides
            // whether to send this one again; whether it ran is unknown).
            markStale()
            throw error
        }
        let acknowledged = replies.removeLast()
        if let count = acknowledged.int, count < replicas {
            throw RedisError.notReady("WAIT on \(node): the writes reached \(count) of \(replicas) replicas within \(configuration.durableTimeout); they are on the master and a failover now could lose them. Send the request again (an enqueue with the same job id is not run twice) or check the replicas (CLUSTER NODES, INFO replication)")
        }
        return replies
    }

    static func isClusterReply(_ message: String) -> Bool {
        message.hasPrefix("MOVED ") || message.hasPrefix("ASK ") || message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN")
    }

    /// Follows `MOVED`/`ASK` and retries `TRYAGAIN`/`CLUSTERDOWN` for one request; returns its final reply.
    private func follow(_ request: RedisRequest, reply first: RESPValue, blockingFor: Duration, refreshed: inout Bool) async throws -> RESPValue {
        var reply = first
        var retries = 0
        var moves = 0
        for _ in 0..<Self.maximumRedirections {
            guard let message = reply.errorMessage else { return reply }
            let words = message.split(separator: " ")
            if (message.hasPrefix("MOVED ") || message.hasPrefix("ASK ")) && words.count >= 3, let slot = Int(words[1]) {
                let address = String(words[2])
                if message.hasPrefix("MOVED ") {
                    // A second MOVED for one request: the slot is changing hands (the old owner has let it go, the
                    // new one not yet taken it, and each points at the other): pause 5 ms, doubling to 200 ms.
                    if moves > 0 { try await Task.sleep(for: min(Duration.milliseconds(200), .milliseconds(5) * (1 << min(moves - 1, 6)))) }
                    moves += 1
                    learn(slot: slot, movedTo: address)
                    // A moved slot seldom moves alone (resharding, failover): read the whole map once per pipeline.
                    if !refreshed || moves > 1 {
                        refreshed = true
                        try? await refresh()
                    }
                    // The node that answered MOVED knows: send it there (the map read may lag behind it).
                    reply = try await send([request], to: address, blockingFor: blockingFor)[0]
                } else {
                    // The slot is being migrated and the key is already on `address`: ask it there, this once.
                    reply = try await send([.command(RedisCommand("ASKING")), request], to: address, blockingFor: blockingFor)[1]
                }
            } else if message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN") {
                guard retries < Self.maximumRetries else { return reply }
                let pause = min(Duration.milliseconds(500), .milliseconds(20) * (1 << retries))
                retries += 1
                try await Task.sleep(for: pause)
                if message.hasPrefix("CLUSTERDOWN") { try? await refresh() }
                guard let node = owner(of: request.routingKey) else { continue }
                reply = try await send([request], to: node, blockingFor: blockingFor)[0]
            } else {
                return reply
            }
        }
        return reply
    }

    /// Loads the scripts on every master (each node client keeps its SHAs and reloads after `NOSCRIPT`).
    func load(_ scripts: [RedisScript]) async throws {
        for node in try await masters() { try await client(for: node).load(scripts) }
    }

    /// Sends `command` to every master (in parallel); one reply per master, in map order.
    func everyMaster(_ command: RedisCommand) async throws -> [(node: String, reply: RESPValue)] {
        let nodes = try await masters()
        return try await withThrowingTaskGroup(of: (Int, RESPValue).self) { group in
            for (index, node) in nodes.enumerated() {
                group.addTask { (index, try await self.send([.command(command)], to: node, blockingFor: .zero)[0]) }
            }
            var replies = [RESPValue](repeating: .null, count: nodes.count)
            for try await (index, reply) in group { replies[index] = reply }
            return Array(zip(nodes, replies))
        }
    }

    // MARK: - Waiting on several slots at once

    /// Runs each group (whose requests must all route to one node) on a blocking connection of its own, and returns
    /// once every group answered: when the first group answers, the blocking commands of the others are ended
    /// (`CLIENT UNBLOCK`, as if they timed out), so the requests behind them run at once.
    func firstOf(_ groups: [[RedisRequest]], blockingFor: Duration) async throws -> [[RESPValue]] {
        try await ensureMap()
        var chosen: [(node: String, key: String, client: RedisClient)] = []
        for (index, group) in groups.enumerated() {
            let node = try targets(group).first ?? ""
            let key = "\(node)#\(index)"
            let client = state.withLock { state in
                if let lane = state.lanes[key] { return lane.client }
                let client = RedisClient(configuration: nodeConfiguration(node), name: "\(name)@\(key)")
                client.reportsClusterRetries = true
                state.lanes[key] = (client, nil)
                return client
            }
            chosen.append((node, key, client))
        }
        let lanes = chosen
        // The connection ids the unblocking needs, read once per connection (again after a failure).
        for lane in lanes where state.withLock({ $0.lanes[lane.key]?.id }) == nil {
            let id = try await lane.client.execute(RedisCommand("CLIENT", "ID")).int
            state.withLock { $0.lanes[lane.key]?.id = id }
        }
        let done = LaneFlags(count: groups.count)
        return try await withThrowingTaskGroup(of: (Int, Result<[RESPValue], any Error>).self) { group in
            for (index, lane) in lanes.enumerated() {
                group.addTask {
                    do {
                        let replies = try await lane.client.pipeline(groups[index], blockingFor: blockingFor)
                        done.flags.withLock { $0[index] = true }
                        return (index, .success(replies))
                    } catch {
                        done.flags.withLock { $0[index] = true }
                        self.state.withLock { $0.lanes[lane.key]?.id = nil }
                        return (index, .failure(error))
                    }
                }
            }
            var results = [[RESPValue]?](repeating: nil, count: groups.count)
            var firstError: (any Error)?
            var unblocker: Task<Void, Never>?
            for try await (index, result) in group {
                switch result {
                case .success(let replies): results[index] = replies
                case .failure(let error): firstError = firstError ?? error
                }
                if unblocker == nil && lanes.count > 1 {
                    // Unblock the others until they answer: a lane whose BLPOP has not reached its node yet would
                    // otherwise wait its whole timeout.
                    unblocker = Task {
                        while !Task.isCancelled {
                            let waiting = done.flags.withLock { flags in lanes.indices.filter { !flags[$0] } }
                            if waiting.isEmpty { return }
                            for index in waiting {
                                guard let id = self.state.withLock({ $0.lanes[lanes[index].key]?.id }) else { continue }
                                _ = try? await self.client(for: lanes[index].node).send([RedisCommand("CLIENT", "UNBLOCK", String(id))])
                            }
                            try? await Task.sleep(for: .milliseconds(10))
                        }
                    }
                }
            }
            unblocker?.cancel()
            if let firstError { throw firstError }
            // A lane met a moved slot: the next call reads the map again and routes there.
            if results.contains(where: { $0?.contains(where: { $0.errorMessage.map(Self.isClusterReply) ?? false }) ?? false }) { markStale() }
            return results.map { $0 ?? [] }
        }
    }

    /// Which lanes of a `firstOf` answered.
    private final class LaneFlags: Sendable {
        let flags: Mutex<[Bool]>
        init(count: Int) { flags = Mutex([Bool](repeating: false, count: count)) }
    }

    func close() {
        let clients = state.withLock { state in
            state.closed = true
            return Array(state.clients.values) + state.lanes.values.map(\.client)
        }
        for client in clients { client.close() }
    }
}
