import RedisClient

/// Moving an alias with a compare-and-set, keeping its previous target for a rollback: what promotion and
/// `jobfarm model rollback` use. The previous target is the field `previous:<alias>` of the same aliases hash (a
/// name with `:` is never an alias, so it cannot be resolved by mistake), so both change in one atomic script on one
/// key.
extension ModelRegistry {
    /// ALIAS SWITCH: KEYS[1] = the aliases hash; ARGV = alias, expected version ('' = no alias yet), new version.
    /// Moves the alias only when it still points at the expected version, keeping that version as `previous:<alias>`;
    /// returns {1 (moved) or 0 (it points elsewhere), the version it pointed at ('' = none)}.
    static let aliasSwitch = RedisScript(name: "aliasSwitch", source: """
        local current = redis.call('HGET', KEYS[1], ARGV[1])
        if (current or '') ~= ARGV[2] then return {0, current or ''} end
        if current == ARGV[3] then return {1, current} end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
        if current then redis.call('HSET', KEYS[1], 'previous:' .. ARGV[1], current) else redis.call('HDEL', KEYS[1], 'previous:' .. ARGV[1]) end
        return {1, current or ''}
        """)

    /// Points `alias` of `name` at `version` only if it still points at `expected` (nil: the alias does not exist
    /// yet). Returns whether it moved and the version it pointed at; the old target is kept for `rollbackAlias`.
    public func switchAlias(_ alias: String, name: String, expected: Int?, to version: Int) async throws -> (moved: Bool, current: Int?) {
        guard isValidRegistryName(alias), Int(alias) == nil, alias != "latest" else {
            throw ModelStoreError.invalidArgument("alias '\(alias)' must be 1–64 of A–Z a–z 0–9 _ - ., not a number and not 'latest'")
        }
        _ = try await self.version(name, version)  // must exist
        let reply = try await client.run(Self.aliasSwitch, keys: [aliasesKey(name)],
                                         arguments: [alias, expected.map(String.init) ?? "", String(version)])
        if let message = reply.errorMessage { throw RedisError(reply: message, context: "model alias") }
        let items = reply.array ?? []
        guard items.count == 2 else { throw ModelStoreError.invalidArgument("unexpected reply of the alias switch: \(reply)") }
        return (items[0].int == 1, items[1].string.flatMap { Int($0) })
    }

    /// The version `alias` pointed at before its last switch (nil when there is none to go back to).
    public func previousTarget(of alias: String, name: String) async throws -> Int? {
        try await client.execute(RedisCommand("HGET", aliasesKey(name), "previous:" + alias)).string.flatMap { Int($0) }
    }

    /// Moves `alias` back to its previous target (compare-and-set on the current one); the target it leaves becomes
    /// the previous one, so a second rollback undoes the first. Returns (from, to).
    public func rollbackAlias(_ alias: String, name: String) async throws -> (from: Int, to: Int) {
        let current = try await aliases(name)[alias]
        guard let current else { throw ModelStoreError.notFound("model '\(name)' has no alias '\(alias)'; nothing to roll back") }
        guard let previous = try await previousTarget(of: alias, name: name) else {
            throw ModelStoreError.notFound("alias '\(name):\(alias)' has no previous target (it was set once, or by hand); point it with `jobfarm model alias`")
        }
        let (moved, now) = try await switchAlias(alias, name: name, expected: current, to: previous)
        guard moved else {
            throw ModelStoreError.invalidArgument("alias '\(name):\(alias)' moved to \(now.map(String.init) ?? "nothing") meanwhile; look again (`jobfarm model show \(name)`) and retry")
        }
        return (current, previous)
    }
}
