/// Where names land on a Redis Cluster, and the nodes that own no slot: what spreading queues over masters and
/// measuring every node need.
extension RedisClient {
    /// `count` queue names that land on the cluster's masters in turn: the first `masters().count` on distinct
    /// masters, the next ones on each master again, and so on. The candidates are `prefix`, `prefix-1`, `prefix-2`,
    /// … (a queue's keys hash by its name, `…:{<queue>}:…`), taken in that order when their master is not used yet
    /// in the current round. On one server: `prefix`, `prefix-1`, … `prefix-<count-1>`.
    ///
    /// - Throws: `RedisError` when the slot map cannot be read, or no candidate among the first 100,000 lands on a
    ///   master that is still wanted (a slot range without a master: `jobfarm cluster where` shows the map).
    public func queuesSpreadOverMasters(_ count: Int, prefix: String) async throws -> [String] {
        func candidate(_ n: Int) -> String { n == 0 ? prefix : "\(prefix)-\(n)" }
        guard let router = clusterRouter else { return (0..<count).map(candidate) }
        let masters = Set(try await router.masters())
        var names: [String] = []
        var used = Set<String>()
        var n = 0
        while names.count < count {
            guard n < 100_000 else {
                throw RedisError.server("no queue name of the form \(prefix)-N lands on one of \(masters.subtracting(used).sorted()): run `jobfarm cluster where` to see which slots have no master")
            }
            let name = candidate(n)
            n += 1
            guard let owner = try await router.owner(ofSlot: ClusterSlot.of(name)), masters.contains(owner), !used.contains(owner) else { continue }
            names.append(name)
            used.insert(owner)
            if used.count == masters.count { used = [] }
        }
        return names
    }

    /// Sends `command` to every replica of a cluster's masters (each master's `INFO replication` names them), on a
    /// connection of its own per replica; one reply per replica, named `host:port`. None on one server.
    public func everyReplica(_ command: RedisCommand) async throws -> [(node: String, reply: RESPValue)] {
        guard clusterRouter != nil else { return [] }
        var replicas: [(host: String, port: Int)] = []
        for (node, reply) in try await everyMaster(RedisCommand("INFO", "replication")) {
            guard let info = reply.string else { throw RedisError.unexpectedReply("INFO replication on \(node): \(reply)") }
            // slave0:ip=127.0.0.1,port=7004,state=online,offset=…,lag=0
            for line in info.split(separator: "\r\n") where line.hasPrefix("slave") && line.contains(":ip=") {
                var fields: [Substring: Substring] = [:]
                for pair in line.drop(while: { $0 != ":" }).dropFirst().split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { fields[kv[0]] = kv[1] }
                }
                if let host = fields["ip"], let port = fields["port"].flatMap({ Int($0) }) { replicas.append((String(host), port)) }
            }
        }
        var replies: [(node: String, reply: RESPValue)] = []
        for replica in replicas {
            var single = configuration
            single.endpoint = .tcp(host: replica.host, port: replica.port)
            single.clusterSeeds = []
            single.durableReplicas = 0
            let client = RedisClient(configuration: single, name: "replica")
            defer { client.close() }
            replies.append(("\(replica.host):\(replica.port)", try await client.send([command])[0]))
        }
        return replies
    }
}
