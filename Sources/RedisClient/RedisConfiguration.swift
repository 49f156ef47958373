import Foundation
/// Where and how to connect: parsed from `redis://[user:pass@]host:port/db`, `unix:///path?db=N`, or, for a Redis
/// Cluster, `redis+cluster://[user:pass@]host:port[,host:port…]` (the seed nodes).
public struct RedisConfiguration: Sendable, Equatable, CustomStringConvertible {
    /// The endpoint of the server.
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var endpoint: Endpoint
    /// ACL user name (Redis 6+); `nil` authenticates with the password alone.
    public var username: String?
    public var password: String?
    /// The logical database, selected on every (re)connect.
    public var database: Int
    /// Time allowed for the TCP or Unix connect.
    public var connectTimeout: Duration
    /// Time allowed for one command (blocking commands add their own wait on top).
    public var commandTimeout: Duration
    /// First and largest pause between reconnect attempts (the pause doubles up to the largest).
    public var reconnectBackoff: (initial: Duration, maximum: Duration)
    /// The seed nodes of a Redis Cluster (`redis+cluster://`), `endpoint` being the first; empty for one server.
    /// A client of a cluster reads the slot map from a seed and routes each command to the master of its key's slot.
    public var clusterSeeds: [Endpoint] = []

    /// True when the URL named a Redis Cluster (`redis+cluster://`).
    public var isCluster: Bool { !clusterSeeds.isEmpty }

    /// Replicas that must have every write of a request before it returns (`WAIT`), on a cluster client; 0 (the
    /// default) returns as soon as the master has answered. `redis+cluster://…?durable=1` sets it. A request whose
    /// writes reach fewer replicas within `durableTimeout` throws `RedisError.notReady` (its writes are on the
    /// master, not yet confirmed on a replica: send it again, with the same job id, or keep it in an outbox).
    public var durableReplicas = 0
    /// How long a durable request waits for its replicas (`WAIT`'s timeout; `durableTimeout=<ms>` in the URL).
    public var durableTimeout: Duration = .seconds(1)

    /// The configuration of one node of this cluster (`host:port`, as `RedisClient.masters()` names them): the same
    /// credentials and timeouts, database 0, no seeds.
    public func clusterNode(_ address: String) -> RedisConfiguration {
        var node = self
        node.clusterSeeds = []
        node.database = 0
        if let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) {
            var host = String(address[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            node.endpoint = .tcp(host: host, port: port)
        }
        return node
    }

    public static func == (lhs: RedisConfiguration, rhs: RedisConfiguration) -> Bool {
        lhs.endpoint == rhs.endpoint && lhs.username == rhs.username && lhs.password == rhs.password
            && lhs.database == rhs.database && lhs.connectTimeout == rhs.connectTimeout
            && lhs.commandTimeout == rhs.commandTimeout && lhs.clusterSeeds == rhs.clusterSeeds
            && lhs.durableReplicas == rhs.durableReplicas && lhs.durableTimeout == rhs.durableTimeout
    }

    public init(
        endpoint: Endpoint = .tcp(host: "127.0.0.1", port: 6379),
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(5),
        reconnectBackoff: (initial: Duration, maximum: Duration) = (.milliseconds(50), .seconds(2))
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnectBackoff = reconnectBackoff
    }

    /// Parses a Redis URL: `redis://[[user]:password@]host[:port][/db]` or `unix:///path/to/socket[?db=N]`
    /// (`unix://` also takes `?password=` and `?user=`), or `redis+cluster://[[user]:password@]host:port[,host:port…]`
    /// for a Redis Cluster: one or more seed nodes (any nodes of the cluster; the client reads the rest from them),
    /// database 0 only. `rediss://` (TLS) is not supported by this build.
    public init(url: String) throws {
        self.init()
        func fail(_ why: String) -> RedisError {
            RedisError.invalidURL("\(why) in '\(Self.maskingPassword(in: url))'; expected redis://[user:password@]host:port/db, unix:///path/to/redis.sock or redis+cluster://host:port[,host:port…]")
        }
        if url.hasPrefix("redis+cluster://") {
            var rest = Substring(url.dropFirst("redis+cluster://".count))
            var userinfo: Substring = ""
            if let at = rest.lastIndex(of: "@") {
                userinfo = rest[..<at]
                rest = rest[rest.index(after: at)...]
            }
            if let q = rest.firstIndex(of: "?") {
                for pair in rest[rest.index(after: q)...].split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                    guard kv.count == 2 else { throw fail("query item '\(pair)' is not key=value") }
                    switch kv[0] {
                    case "durable":
                        let replicas = kv[1] == "true" ? 1 : kv[1] == "false" ? 0 : Int(kv[1])
                        guard let replicas, replicas >= 0 else { throw fail("durable '\(kv[1])' is not a number of replicas (durable=1)") }
                        durableReplicas = replicas
                    case "durableTimeout":
                        guard let ms = Int(kv[1]), ms > 0 else { throw fail("durableTimeout '\(kv[1])' is not a number of milliseconds") }
                        durableTimeout = .milliseconds(ms)
                    default: throw fail("unknown query item '\(kv[0])' (a cluster URL takes durable=N and durableTimeout=ms)")
                    }
                }
                rest = rest[..<q]
            }
            if let slash = rest.firstIndex(of: "/") {
                let db = rest[rest.index(after: slash)...]
                guard db.isEmpty || db == "0" else { throw fail("a Redis Cluster has database 0 only, not '\(db)'") }
                rest = rest[..<slash]
            }
            var seeds: [Endpoint] = []
            for node in rest.split(separator: ",", omittingEmptySubsequences: false) {
                guard !node.isEmpty else { throw fail("an empty seed node") }
                let single = try RedisConfiguration(url: "redis://" + (userinfo.isEmpty ? "" : userinfo + "@") + node)
                seeds.append(single.endpoint)
                username = single.username
                password = single.password
            }
            endpoint = seeds[0]
            clusterSeeds = seeds
            return
        }
        if url.hasPrefix("unix://") {
            var rest = String(url.dropFirst("unix://".count))
            var query = ""
            if let q = rest.firstIndex(of: "?") {
                query = String(rest[rest.index(after: q)...])
                rest = String(rest[..<q])
            }
            guard rest.hasPrefix("/") else { throw fail("the socket path must be absolute") }
            endpoint = .unix(path: rest)
            for pair in query.split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { throw fail("query item '\(pair)' is not key=value") }
                switch kv[0] {
                case "db":
                    guard let db = Int(kv[1]), db >= 0 else { throw fail("db '\(kv[1])' is not a number") }
                    database = db
                case "password": password = kv[1].removingPercentEncodingLite
                case "user", "username": username = kv[1].removingPercentEncodingLite
                default: throw fail("unknown query item '\(kv[0])'")
                }
            }
            return
        }
        if url.hasPrefix("rediss://") { throw fail("TLS (rediss://) is not supported; use redis:// on a trusted network or a unix socket") }
        guard url.hasPrefix("redis://") else { throw fail("unknown scheme") }
        var rest = Substring(url.dropFirst("redis://".count))
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                let user = String(userinfo[..<colon])
                username = user.isEmpty ? nil : user.removingPercentEncodingLite
                password = String(userinfo[userinfo.index(after: colon)...]).removingPercentEncodingLite
            } else if !userinfo.isEmpty {
                // `redis://secret@host` is the common shorthand for a password alone.
                password = String(userinfo).removingPercentEncodingLite
            }
        }
        var hostPort = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let number = Int(db), number >= 0 else { throw fail("database '\(db)' is not a number") }
                database = number
            }
        }
        var host = String(hostPort)
        var port = 6379
        if hostPort.hasPrefix("[") {  // [::1]:6379
            guard let close = hostPort.firstIndex(of: "]") else { throw fail("unclosed IPv6 bracket") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw fail("bad port") }
                port = p
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            guard let p = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(p) else {
                throw fail("port '\(hostPort[hostPort.index(after: colon)...])' is not a number in 1…65535")
            }
            port = p
        }
        if host.isEmpty { host = "127.0.0.1" }
        if host == "localhost" { host = "127.0.0.1" }
        endpoint = .tcp(host: host, port: port)
    }

    /// `url` with its password replaced by `***` (it may not parse, so by text), for error messages.
    static func maskingPassword(in url: String) -> String {
        var text = url
        if let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].lastIndex(of: "@") {
            let userinfo = text[scheme.upperBound..<at]
            if let colon = userinfo.firstIndex(of: ":") {
                text.replaceSubrange(text.index(after: colon)..<at, with: "***")
            } else if !userinfo.isEmpty {
                text.replaceSubrange(scheme.upperBound..<at, with: "***")
            }
        }
        if let range = text.range(of: "password=") {
            let end = text[range.upperBound...].firstIndex(of: "&") ?? text.endIndex
            text.replaceSubrange(range.upperBound..<end, with: "***")
        }
        return text
    }

    /// The URL with the password masked, for logs and error messages.
    public var description: String {
        let auth: String
        switch (username, password) {
        case (nil, nil): auth = ""
        case (let user?, _): auth = "\(user):***@"
        case (nil, _): auth = ":***@"
        }
        if isCluster {
            let nodes = clusterSeeds.map { seed -> String in
                guard case .tcp(let host, let port) = seed else { return "\(seed)" }
                return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            }
            let durable = durableReplicas > 0 ? "?durable=\(durableReplicas)" : ""
            return "redis+cluster://\(auth)\(nodes.joined(separator: ","))\(durable)"
        }
        switch endpoint {
        case .tcp(let host, let port):
            let shownHost = host.contains(":") ? "[\(host)]" : host
            return "redis://\(auth)\(shownHost):\(port)/\(database)"
        case .unix(let path):
            return "unix://\(path)?db=\(database)"
        }
    }
}

extension String {
    /// Decodes `%XX` escapes (enough for passwords in URLs) without Foundation.
    var removingPercentEncodingLite: String {
        guard contains("%") else { return self }
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let h = iterator.next(), let l = iterator.next(),
                let value = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
