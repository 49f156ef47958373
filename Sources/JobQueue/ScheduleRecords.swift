import JobProtocol
import RedisClient

/// The farm's cron schedules as stored: `<ns>:schedules`, a HASH of schedule name → definition JSON
/// (docs/PROTOCOL.md, "Schedules"). The queue engine keeps the records; what they mean (cron, time zone, target)
/// and how a firing runs is the `Schedules` target's.
extension JobFarm {
    /// The key of the schedules hash.
    public var schedulesKey: String { "\(configuration.namespace):schedules" }

    /// Every stored schedule: name → definition JSON.
    public func scheduleRecords() async throws -> [String: String] {
        let key = schedulesKey
        let reply = try await retrying(for: .seconds(10), what: "read the schedules") {
            try await client.send([RedisCommand("HGETALL", key)])[0]
        }
        try checkScheduleReply(reply, "HGETALL")
        let items = reply.array ?? []
        var records: [String: String] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            if let name = items[index].string, let json = items[index + 1].string { records[name] = json }
        }
        return records
    }

    /// One stored schedule's definition JSON, if it exists.
    public func scheduleRecord(named name: String) async throws -> String? {
        let key = schedulesKey
        let reply = try await retrying(for: .seconds(10), what: "read a schedule") {
            try await client.send([RedisCommand("HGET", key, name)])[0]
        }
        try checkScheduleReply(reply, "HGET")
        return reply.string
    }

    /// Stores (adds or replaces) schedules: name → definition JSON, in one `HSET`.
    public func storeScheduleRecords(_ records: [String: String]) async throws {
        guard !records.isEmpty else { return }
        var command = RedisCommand("HSET", schedulesKey)
        for (name, json) in records.sorted(by: { $0.key < $1.key }) {
            command.append(name)
            command.append(json)
        }
        let reply = try await retrying(for: .seconds(10), what: "store schedules") { try await client.send([command])[0] }
        try checkScheduleReply(reply, "HSET")
    }

    /// Removes schedules; returns how many existed.
    @discardableResult
    public func removeScheduleRecords(named names: [String]) async throws -> Int {
        guard !names.isEmpty else { return 0 }
        var command = RedisCommand("HDEL", schedulesKey)
        for name in names { command.append(name) }
        let reply = try await retrying(for: .seconds(10), what: "remove schedules") { try await client.send([command])[0] }
        try checkScheduleReply(reply, "HDEL")
        return reply.int ?? 0
    }

    private func checkScheduleReply(_ reply: RESPValue, _ command: String) throws {
        guard let message = reply.errorMessage else { return }
        if message.hasPrefix("WRONGTYPE") {
            throw JobFarmError.wrongType(key: schedulesKey, operation: "schedules",
                                         message: "\(schedulesKey) is not a hash: look at it (redis-cli TYPE \(schedulesKey)), then DEL or RENAME it and run `jobfarm schedule sync` again")
        }
        throw JobFarmError(RedisError(reply: message, context: "\(command) \(schedulesKey)"), operation: "schedules")
    }
}
