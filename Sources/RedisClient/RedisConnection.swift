import CHiredis

#if canImport(Glibc)
import Glibc
#endif

/// Errors from the Redis client, one case per thing a caller does differently. Each description says what went
/// wrong and what to do next.
public enum RedisError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The URL could not be parsed (the text says which part is wrong).
    case invalidURL(String)
    /// `SELECT` refused the database index of the URL; `available` is the server's number of databases when it
    /// told (`CONFIG GET databases`).
    case invalidDatabase(index: Int, available: Int?, message: String)
    /// Connecting (or re-connecting) failed: server down, wrong host or port, connection refused, connect timeout.
    /// Nothing was sent, so the command did not run.
    case connectionFailed(String)
    /// The connection broke or timed out mid-command; whether the command ran is unknown.
    case connectionLost(String)
    /// The server wants a password and none was given (`NOAUTH`).
    case authenticationRequired(String)
    /// `AUTH` was refused (`WRONGPASS`, a disabled user, or a password given to a server that has none).
    case authenticationFailed(String)
    /// The ACL user may not run a command or touch a key (`NOPERM`).
    case permissionDenied(String)
    /// The server is up but not serving yet (`LOADING` its data after a restart, `MASTERDOWN`, `TRYAGAIN`, `BUSY`
    /// running a long script): the command did not run; the same command may succeed shortly.
    case notReady(String)
    /// A Lua script failed inside Redis: a runtime error, an error it raised, or a compile error at `SCRIPT LOAD`.
    case scriptFailed(script: String, message: String)
    /// A key holds a value of another type than the command or script expects (`WRONGTYPE`); `key` when known.
    case wrongType(key: String?, message: String)
    /// Any other error reply.
    case server(String)
    /// A reply had an unexpected shape.
    case unexpectedReply(String)

    public var description: String {
        switch self {
        case .invalidURL(let text):
            return "invalid Redis URL: \(text)"
        case .invalidDatabase(let index, let available?, _) where available > 0:
            return "Redis has no database \(index): it has \(available) (0…\(available - 1)). Fix the /DB part of the Redis URL (--redis-url or JOBFARM_REDIS_URL)"
        case .invalidDatabase(let index, _, let message):
            return "Redis refused database \(index) (\(message)): the database index is out of the server's range (0…15 unless redis.conf sets `databases`). Fix the /DB part of the Redis URL (--redis-url or JOBFARM_REDIS_URL)"
        case .connectionFailed(let text):
            return "cannot connect to Redis: \(text). Is redis-server running? Check --redis-url / JOBFARM_REDIS_URL, or start the managed one with scripts/up"
        case .connectionLost(let text):
            return "Redis connection lost: \(text). Whether the command ran is unknown; the client reconnects on the next command"
        case .authenticationRequired(let text):
            return "this Redis needs a password: add it to --redis-url (redis://:PASSWORD@host:port) or JOBFARM_REDIS_URL (Redis said: \(text))"
        case .authenticationFailed(let text) where text.contains("without any password configured"):
            return "Redis refused the password: this Redis has no password set. Remove the password from --redis-url / JOBFARM_REDIS_URL (Redis said: \(text))"
        case .authenticationFailed(let text):
            return "Redis refused the password (or the user is disabled): check the user and password in --redis-url / JOBFARM_REDIS_URL (redis://[USER]:PASSWORD@host:port) (Redis said: \(text))"
        case .permissionDenied(let text):
            return "the Redis user may not do this: \(text). Grant the user the commands and keys the farm uses (ACL SETUSER … +@all ~* &*), or use another user in the Redis URL"
        case .notReady(let text):
            return "Redis is not ready: \(text). The command did not run; retry in a moment (a restarted Redis is loading its data)"
        case .scriptFailed(let script, let message):
            return "the Lua script '\(script)' failed in Redis: \(message). Data another program wrote under the farm's keys is the usual cause: look at the key the message names"
        case .wrongType(let key?, let message):
            return "Redis key \(key) holds the wrong type of value (\(message)): another program wrote it. Check it with `redis-cli TYPE \(key)`, then delete or rename it if it is not the farm's"
        case .wrongType(nil, let message):
            return "a Redis key holds the wrong type of value (\(message)): another program wrote under the farm's keys. Check their types with `redis-cli TYPE <key>` (PROTOCOL.md lists each key's type)"
        case .server(let text):
            return "Redis error: \(text)\(Self.hint(for: text))"
        case .unexpectedReply(let text):
            return "unexpected Redis reply: \(text). Is this a Redis server (7.0 or later)?"
        }
    }

    /// Advice for error replies whose fix is known.
    private static func hint(for message: String) -> String {
        if message.contains("OOM ") { return ". Redis is out of memory (maxmemory): free memory, raise maxmemory, or shorten the retention of finished jobs" }
        if message.contains("READONLY ") { return ". This is a read-only replica: point the Redis URL at the primary" }
        if message.contains("MISCONF ") { return ". Redis cannot save its data to disk: check its disk space and log" }
        return ""
    }

    /// True when the failure is about the connection or a server not serving yet, so the same command may
    /// succeed after a reconnect or a pause.
    public var isConnectionError: Bool {
        switch self {
        case .connectionFailed, .connectionLost, .notReady: return true
        default: return false
        }
    }

    /// True when retrying cannot help: the URL, the password, the user or the database must change.
    public var isConfigurationError: Bool {
        switch self {
        case .invalidURL, .invalidDatabase, .authenticationRequired, .authenticationFailed, .permissionDenied: return true
        default: return false
        }
    }

    /// Error replies of a server that is up but not serving yet: the command did not run.
    public static func isNotReadyReply(_ message: String) -> Bool {
        message.hasPrefix("LOADING ") || message.hasPrefix("MASTERDOWN ") || message.hasPrefix("TRYAGAIN ")
            || message.hasPrefix("BUSY ")
    }

    /// The condition of the whole server behind this error, when it is one (`READONLY`, `OOM`, `MISCONF`, not
    /// ready): every write fails alike, whatever the key, until the server (or the URL) changes.
    public var serverCondition: RedisServerCondition? {
        switch self {
        case .notReady: return .notReady
        case .server(let text): return Self.serverCondition(ofReply: text)
        default: return nil
        }
    }

    /// The server-wide condition an error reply reports: its code at the start, or after the `what: ` a caller or a
    /// script put before it (a script's error keeps the code of the command that failed inside it).
    static func serverCondition(ofReply message: String) -> RedisServerCondition? {
        let codes: [(String, RedisServerCondition)] = [
            ("READONLY ", .readOnly), ("OOM ", .outOfMemory), ("MISCONF ", .cannotPersist), ("LOADING ", .notReady),
            ("BUSY ", .notReady), ("MASTERDOWN ", .notReady), ("TRYAGAIN ", .notReady),
        ]
        for (code, condition) in codes where message.hasPrefix(code) || message.contains(": " + code) { return condition }
        return nil
    }

    /// Classifies an error reply.
    /// - Parameters:
    ///   - script: the script that answered, if a script did.
    ///   - context: what was being done, prefixed to the message of a plain server error.
    ///   - key: the key the command touched, when there is one, for `WRONGTYPE`.
    public init(reply message: String, script: String? = nil, context: String? = nil, key: String? = nil) {
        if message.hasPrefix("NOAUTH") {
            self = .authenticationRequired(message)
        } else if message.hasPrefix("WRONGPASS") {
            self = .authenticationFailed(message)
        } else if message.hasPrefix("NOPERM") {
            self = .permissionDenied(message)
        } else if Self.isNotReadyReply(message) {
            self = .notReady(message)
        } else if message.hasPrefix("WRONGTYPE") {
            let text = script.map { "script \($0): \(message)" } ?? message
            self = .wrongType(key: Self.keyNamed(inWrongType: message) ?? key, message: text)
        } else if message.hasPrefix("JOBFARM_WRONGTYPE ") {
            // The protocol's scripts check key types before they write: "JOBFARM_WRONGTYPE <key> is a <type>, expected …".
            let named = message.dropFirst("JOBFARM_WRONGTYPE ".count).split(separator: " ", maxSplits: 1).first.map(String.init)
            let text = script.map { "script \($0): \(message)" } ?? message
            self = .wrongType(key: named ?? key, message: text)
        } else if Self.serverCondition(ofReply: message) != nil {
            // Not the script's fault nor the data's: the server refuses writes (a replica, out of memory, a failing disk).
            self = .server((script.map { "script \($0)" } ?? context).map { "\($0): \(message)" } ?? message)
        } else if let script {
            self = .scriptFailed(script: script, message: message)
        } else {
            self = .server(context.map { "\($0): \(message)" } ?? message)
        }
    }

    /// The key a `WRONGTYPE` message names, if it names one: scripts that check types before they write answer
    /// `WRONGTYPE <key> …` (or `WRONGTYPE key '<key>' …`); Redis' own message names none.
    static func keyNamed(inWrongType message: String) -> String? {
        if message.hasPrefix("WRONGTYPE Operation against a key holding the wrong kind of value") { return nil }
        let words = message.dropFirst("WRONGTYPE".count).split(whereSeparator: { $0 == " " || $0 == "\t" })
        for word in words {
            var token = Substring(word)
            while let first = token.first, "'\"`([<".contains(first) { token = token.dropFirst() }
            while let last = token.last, "'\"`)]>,;.:".contains(last) { token = token.dropLast() }
            // A key of the farm's layout: namespace:…, with a hash tag or a colon inside.
            guard token.contains(":") || token.contains("{") else { continue }
            if token.hasPrefix("@") || token == "script" || token.hasPrefix("user_script") { continue }
            return String(token)
        }
        return nil
    }
}

/// A condition of the whole Redis server that refuses commands whatever their keys: a caller pauses all its work
/// once (and says what to do) rather than treat it as a fault of the data it was touching.
public enum RedisServerCondition: String, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// Up but not serving yet, or busy (`LOADING`, `MASTERDOWN`, `TRYAGAIN`, `BUSY`): passes by itself.
    case notReady
    /// A read-only replica (`READONLY`), typically the old primary after a failover: the URL must point at the primary.
    case readOnly
    /// Over `maxmemory` (`OOM`): memory must be freed or the limit raised.
    case outOfMemory
    /// Refusing writes because it cannot save to disk (`MISCONF`): the disk or the save settings must be fixed.
    case cannotPersist

    public var description: String {
        switch self {
        case .notReady: return "not ready: loading its data or busy (LOADING, BUSY…)"
        case .readOnly: return "a read-only replica (READONLY)"
        case .outOfMemory: return "out of memory (OOM)"
        case .cannotPersist: return "cannot save to disk (MISCONF)"
        }
    }
}

/// One blocking hiredis connection. Not thread-safe: `RedisClient` confines it to one thread.
///
/// The `redisContext` pointer never leaves this type; `deinit` frees it.
final class RedisConnection {
    private var context: UnsafeMutablePointer<redisContext>?
    private let configuration: RedisConfiguration
    private var currentTimeout: Duration

    init(configuration: RedisConfiguration) throws {
        self.configuration = configuration
        self.currentTimeout = configuration.commandTimeout
        let tv = Self.timeval(configuration.connectTimeout)
        let ctx: UnsafeMutablePointer<redisContext>?
        switch configuration.endpoint {
        case .tcp(let host, let port):
            ctx = redisConnectWithTimeout(host, Int32(port), tv)
        case .unix(let path):
            ctx = redisConnectUnixWithTimeout(path, tv)
        }
        guard let ctx else { throw RedisError.connectionFailed("out of memory allocating the hiredis context") }
        if ctx.pointee.err != 0 {
            let message = Self.errorText(ctx)
            redisFree(ctx)
            throw RedisError.connectionFailed("\(configuration): \(message)")
        }
        context = ctx
        // TCP keep-alive only: on a Unix socket hiredis' setsockopt fails and marks the context broken.
        if case .tcp = configuration.endpoint { _ = redisEnableKeepAlive(ctx) }
        _ = redisSetTimeout(ctx, Self.timeval(configuration.commandTimeout))
        if let password = configuration.password {
            var auth = RedisCommand("AUTH")
            if let user = configuration.username { auth.append(user) }
            auth.append(password)
            let reply = try send([auth])[0]
            if let message = reply.errorMessage {
                close()
                let error = RedisError(reply: message)
                if case .notReady = error { throw error }
                if case .permissionDenied = error { throw error }
                throw RedisError.authenticationFailed(message)
            }
        }
        if configuration.database != 0 {
            let reply = try send([RedisCommand("SELECT", String(configuration.database))])[0]
            if let message = reply.errorMessage {
                defer { close() }
                let error = RedisError(reply: message)
                if case .server = error, message.contains("out of range") {
                    // The server's number of databases, when CONFIG is permitted, for the message.
                    let config = try? send([RedisCommand("CONFIG", "GET", "databases")])[0]
                    let available = config?.array?.last?.int
                    throw RedisError.invalidDatabase(index: configuration.database, available: available, message: message)
                }
                if case .server = error { throw RedisError.server("SELECT \(configuration.database): \(message)") }
                throw error
            }
        } else if configuration.password == nil {
            // Without AUTH or SELECT nothing would tell a server that wants a password until the first command, and
            // then as NOAUTH of whatever came first (or a dropped connection: Redis closes an unauthenticated
            // connection that sends a long command). One PING says it here, as an authentication error.
            let reply = try send([RedisCommand("PING")])[0]
            if let message = reply.errorMessage, message.hasPrefix("NOAUTH") {
                close()
                throw RedisError.authenticationRequired(message)
            }
        }
    }

    deinit { close() }

    var isOpen: Bool { context != nil }

    func close() {
        if let context { redisFree(context) }
        context = nil
    }

    /// Sets the socket timeout used for the next replies (blocking commands need a longer one).
    func setTimeout(_ timeout: Duration) {
        guard let context, timeout != currentTimeout else { return }
        _ = redisSetTimeout(context, Self.timeval(timeout))
        currentTimeout = timeout
    }

    /// Writes every command, then reads one reply each: one round trip for the whole batch.
    func send(_ commands: [RedisCommand]) throws -> [RESPValue] {
        try write(commands)
        return try readReplies(commands.count)
    }

    /// Writes the commands to the socket without reading anything (`readReplies` reads their replies).
    func write(_ commands: [RedisCommand]) throws {
        guard let context else { throw RedisError.connectionLost("connection is closed") }
        for command in commands {
            let status: Int32 = command.buffer.withUnsafeBufferPointer { raw in
                let base = raw.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }
                    ?? UnsafePointer<CChar>(bitPattern: 1)!  // only empty arguments; hiredis reads 0 bytes
                var pointers: [UnsafePointer<CChar>?] = []
                pointers.reserveCapacity(command.lengths.count)
                var offset = 0
                for length in command.lengths {
                    pointers.append(base + offset)
                    offset += length
                }
                return pointers.withUnsafeMutableBufferPointer { argv in
                    command.lengths.withUnsafeBufferPointer { lengths in
                        redisAppendCommandArgv(context, Int32(command.lengths.count), argv.baseAddress, lengths.baseAddress)
                    }
                }
            }
            if status != REDIS_OK { throw lost("writing \(command)") }
        }
        var done: Int32 = 0
        while done == 0 {
            if redisBufferWrite(context, &done) != REDIS_OK { throw lost("writing \(commands.count) commands") }
        }
    }

    /// Reads `count` replies (of commands written before).
    func readReplies(_ count: Int) throws -> [RESPValue] {
        guard let context else { throw RedisError.connectionLost("connection is closed") }
        var replies: [RESPValue] = []
        replies.reserveCapacity(count)
        for _ in 0..<count {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(context, &raw) != REDIS_OK || raw == nil {
                throw lost("reading the reply")
            }
            let reply = raw!.assumingMemoryBound(to: redisReply.self)
            replies.append(Self.convert(reply))
            freeReplyObject(reply)
        }
        return replies
    }

    /// Reads one more reply without sending anything (pub/sub messages).
    func readReply() throws -> RESPValue {
        guard let context else { throw RedisError.connectionLost("connection is closed") }
        var raw: UnsafeMutableRawPointer?
        if redisGetReply(context, &raw) != REDIS_OK || raw == nil { throw lost("reading a message") }
        let reply = raw!.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(reply) }
        return Self.convert(reply)
    }

    /// Returns the next reply if one arrives within `wait`, else `nil`; never trips the socket timeout.
    func readReply(waitingUpTo wait: Duration) throws -> RESPValue? {
        guard let context else { throw RedisError.connectionLost("connection is closed") }
        var raw: UnsafeMutableRawPointer?
        if redisGetReplyFromReader(context, &raw) != REDIS_OK { throw lost("parsing a message") }
        if raw == nil {
            var descriptor = pollfd(fd: context.pointee.fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000)
            let ready = poll(&descriptor, 1, milliseconds)
            if ready == 0 { return nil }
            if ready < 0 {
                if errno == EINTR { return nil }
                throw lost("polling")
            }
            return try readReply()
        }
        let reply = raw!.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(reply) }
        return Self.convert(reply)
    }

    private func lost(_ doing: String) -> RedisError {
        let message = context.map(Self.errorText) ?? "closed"
        close()
        return RedisError.connectionLost("\(doing) from \(configuration): \(message)")
    }

    private static func errorText(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: ctx.pointee.errstr) { raw in
            let text = String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            return text.isEmpty ? "error \(ctx.pointee.err)" : text
        }
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            guard let str = r.str else { return .bulk([]) }
            return .bulk(Array(UnsafeRawBufferPointer(start: str, count: r.len)))
        case REDIS_REPLY_STATUS:
            return .status(r.str.map { String(cString: $0) } ?? "")
        case REDIS_REPLY_ERROR:
            return .error(r.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: r.len), as: UTF8.self) } ?? "ERR")
        case REDIS_REPLY_INTEGER:
            return .integer(Int(r.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var items: [RESPValue] = []
            items.reserveCapacity(r.elements)
            for index in 0..<r.elements {
                if let element = r.element[index] { items.append(convert(element)) } else { items.append(.null) }
            }
            return .array(items)
        default:
            return .error("unknown reply type \(r.type)")
        }
    }

    static func timeval(_ duration: Duration) -> Glibc.timeval {
        let (seconds, attoseconds) = duration.components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
