import JobProtocol

extension WorkerConfiguration {
    /// What the worker registry shows of this configuration besides host, pid, queues, kinds and concurrency: the
    /// program's version, the pool, and the tiers served (`queue:tier,tier;…`, `*` for every configured tier).
    var registryFields: [String: String] {
        var fields = ["version": JobFarmVersion.current]
        if let pool { fields["pool"] = pool }
        if tiersByQueue.isEmpty {
            fields["tiers"] = "*"
        } else {
            fields["tiers"] = tiersByQueue.keys.sorted().map { "\($0):\(tiersByQueue[$0]!.joined(separator: ","))" }.joined(separator: ";")
        }
        return fields
    }
}
