/// A typed Redis reply (RESP2), copied out of hiredis' reply tree.
public enum RESPValue: Sendable, Equatable {
    /// A bulk string (binary safe).
    case bulk([UInt8])
    /// A status reply such as `OK` or `QUEUED`.
    case status(String)
    /// An integer reply.
    case integer(Int)
    /// A nil bulk or nil multi-bulk reply.
    case null
    /// An error reply (`ERR …`, `NOSCRIPT …`, `WRONGTYPE …`).
    case error(String)
    /// A multi-bulk reply.
    case array([RESPValue])

    /// The reply as text: bulk strings decoded as UTF-8, status replies, integers formatted.
    public var string: String? {
        switch self {
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .status(let text): return text
        case .integer(let value): return String(value)
        default: return nil
        }
    }

    /// The reply as an integer: integer replies, and bulk strings that hold a decimal integer.
    public var int: Int? {
        switch self {
        case .integer(let value): return value
        case .bulk(let bytes): return Int(String(decoding: bytes, as: UTF8.self))
        default: return nil
        }
    }

    /// The elements of an array reply; `nil` for other kinds (an empty array for `.null`).
    public var array: [RESPValue]? {
        switch self {
        case .array(let items): return items
        case .null: return []
        default: return nil
        }
    }

    /// The raw bytes of a bulk string.
    public var bytes: [UInt8]? {
        if case .bulk(let bytes) = self { return bytes }
        return nil
    }

    /// True for `.null`.
    public var isNull: Bool { self == .null }

    /// The error text when the reply is an error.
    public var errorMessage: String? {
        if case .error(let message) = self { return message }
        return nil
    }
}

/// One Redis command, its arguments packed into one buffer so that hiredis gets them without copies.
public struct RedisCommand: Sendable, CustomStringConvertible {
    var buffer: [UInt8] = []
    var lengths: [Int] = []

    /// Creates a command from its arguments, the command name first.
    public init(_ arguments: String...) {
        for argument in arguments { append(argument) }
    }

    /// Creates a command from an array of arguments, the command name first.
    public init(_ arguments: [String]) {
        buffer.reserveCapacity(arguments.reduce(0) { $0 + $1.utf8.count })
        for argument in arguments { append(argument) }
    }

    /// Appends one text argument.
    public mutating func append(_ argument: String) {
        var argument = argument
        argument.withUTF8 { buffer.append(contentsOf: $0) }
        lengths.append(argument.utf8.count)
    }

    /// Appends one integer argument.
    public mutating func append(_ argument: Int) { append(String(argument)) }

    /// Appends one binary argument.
    public mutating func append(bytes argument: some Collection<UInt8>) {
        buffer.append(contentsOf: argument)
        lengths.append(argument.count)
    }

    /// Appends every argument of `other`.
    public mutating func append(contentsOf other: RedisCommand) {
        buffer.append(contentsOf: other.buffer)
        lengths.append(contentsOf: other.lengths)
    }

    /// Reserves room for `bytes` more bytes in `arguments` more arguments.
    public mutating func reserve(bytes: Int, arguments: Int) {
        buffer.reserveCapacity(buffer.count + bytes)
        lengths.reserveCapacity(lengths.count + arguments)
    }

    /// The command name (its first argument), upper-cased.
    public var name: String {
        guard let first = lengths.first else { return "" }
        return String(decoding: buffer[0..<first], as: UTF8.self).uppercased()
    }

    /// The key of a command that names exactly one key as its first argument (`GET`, `HGETALL`, `SMEMBERS`, …);
    /// nil for commands that take several keys or none, whose `WRONGTYPE` cannot be pinned on one key.
    public var singleKey: String? {
        guard lengths.count >= 2, !Self.notSingleKey.contains(name) else { return nil }
        let start = lengths[0]
        return String(decoding: buffer[start..<start + lengths[1]], as: UTF8.self)
    }

    private static let notSingleKey: Set<String> = [
        "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP", "LMPOP", "ZMPOP", "MGET", "MSET", "DEL", "UNLINK",
        "EXISTS", "TOUCH", "WATCH", "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "SCRIPT", "CONFIG", "PING", "AUTH",
        "SELECT", "SUNION", "SINTER", "SDIFF", "ZUNION", "ZINTER", "ZDIFF", "PUBLISH", "SUBSCRIBE", "PSUBSCRIBE", "INFO",
        "CLIENT", "SCAN", "KEYS", "TIME", "MULTI", "EXEC",
    ]

    /// The number of arguments, the command name included.
    public var count: Int { lengths.count }

    /// The command name and the first arguments, for logs and errors (payloads cut short).
    public var description: String {
        var parts: [String] = []
        var offset = 0
        for length in lengths.prefix(4) {
            let text = String(decoding: buffer[offset..<offset + min(length, 40)], as: UTF8.self)
            parts.append(length > 40 ? text + "…" : text)
            offset += length
        }
        if lengths.count > 4 { parts.append("… (\(lengths.count) args)") }
        return parts.joined(separator: " ")
    }
}
