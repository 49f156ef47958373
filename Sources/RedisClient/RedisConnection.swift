import CHiredis

#if canImport(Glibc)
import Glibc
#endif

/// Errors from the Redis client. Each message says what went wrong and what to try.
public enum RedisError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The URL could not be parsed.
    case invalidURL(String)
    /// Connecting (or re-connecting) failed: server down, wrong host/port, refused.
    case connectionFailed(String)
    /// The connection broke or timed out mid-command; whether the command ran is unknown.
    case connectionLost(String)
    /// AUTH or SELECT was refused.
    case authenticationFailed(String)
    /// The server answered with an error reply.
    case server(String)
    /// The server is up but not serving yet (`LOADING` its data after a restart, `MASTERDOWN`, `TRYAGAIN`): the
    /// command did not run; the same command may succeed shortly.
    case notReady(String)
    /// A reply had an unexpected shape.
    case unexpectedReply(String)

    public var description: String {
        switch self {
        case .invalidURL(let text): return "invalid Redis URL: \(text)"
        case .connectionFailed(let text): return "cannot connect to Redis: \(text). Is redis-server running? Check --redis-url / JOBFARM_REDIS_URL, or start the managed one with scripts/up"
        case .connectionLost(let text): return "Redis connection lost: \(text) (the client reconnects on the next command)"
        case .authenticationFailed(let text): return "Redis refused authentication: \(text). Check the user and password in the Redis URL"
        case .server(let text): return "Redis error: \(text)"
        case .notReady(let text): return "Redis is not ready: \(text) (retrying)"
        case .unexpectedReply(let text): return "unexpected Redis reply: \(text)"
        }
    }

    /// True when the failure is about the connection or a server not serving yet, so the same command may
    /// succeed after a reconnect or a pause.
    public var isConnectionError: Bool {
        switch self {
        case .connectionFailed, .connectionLost, .notReady: return true
        default: return false
        }
    }

    /// Error replies of a server that is up but not serving yet: the command did not run.
    public static func isNotReadyReply(_ message: String) -> Bool {
        message.hasPrefix("LOADING ") || message.hasPrefix("MASTERDOWN ") || message.hasPrefix("TRYAGAIN ")
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
            if let message = reply.errorMessage { close(); throw RedisError.authenticationFailed(message) }
        }
        if configuration.database != 0 {
            let reply = try send([RedisCommand("SELECT", String(configuration.database))])[0]
            if let message = reply.errorMessage { close(); throw RedisError.authenticationFailed("SELECT \(configuration.database): \(message)") }
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
        var replies: [RESPValue] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
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
