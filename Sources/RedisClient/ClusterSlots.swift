/// Redis Cluster's key-to-slot function (the cluster specification, "Keys distribution model"): CRC16 (XMODEM) of
/// the key, or of its hash tag, modulo 16384.
public enum ClusterSlot {
    /// The number of hash slots of a Redis Cluster.
    public static let count = 16384

    /// The slot of `key`: when the key holds a `{…}` with at least one byte between the first `{` and the first `}`
    /// after it, only those bytes are hashed (`{user1000}.following` and `{user1000}.followers` share a slot).
    public static func of(_ key: some Collection<UInt8>) -> Int {
        let bytes = Array(key)
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            return Int(crc16(bytes[(open + 1)..<close]) % UInt16(count))
        }
        return Int(crc16(bytes) % UInt16(count))
    }

    /// The slot of a text key.
    public static func of(_ key: String) -> Int { of(Array(key.utf8)) }

    /// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis uses for slots; `crc16("123456789")`
    /// is `0x31C3`.
    public static func crc16(_ bytes: some Collection<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes { crc = (crc << 8) ^ table[Int(UInt8(crc >> 8) ^ byte)] }
        return crc
    }

    private static let table: [UInt16] = (0..<256).map { index in
        var crc = UInt16(index) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}

extension RedisCommand {
    /// The bytes of argument `index` (0 is the command name).
    func argument(_ index: Int) -> ArraySlice<UInt8>? {
        guard index < lengths.count else { return nil }
        var offset = 0
        for length in lengths.prefix(index) { offset += length }
        return buffer[offset..<offset + lengths[index]]
    }

    /// The key a Redis Cluster routes this command by (its first key), or nil for a command without keys
    /// (`PING`, `INFO`, `TIME`, `SCRIPT`, `CONFIG`, `MULTI`…), which any node answers.
    var routingKey: ArraySlice<UInt8>? {
        switch name {
        case "PING", "INFO", "TIME", "CONFIG", "SCRIPT", "CLIENT", "CLUSTER", "MULTI", "EXEC", "DISCARD", "ASKING",
            "AUTH", "SELECT", "SCAN", "KEYS", "DBSIZE", "FLUSHALL", "FLUSHDB", "PUBSUB", "ECHO", "COMMAND", "WAIT",
            "READONLY", "READWRITE", "HELLO", "SHUTDOWN", "LASTSAVE", "SLOWLOG", "LATENCY", "ACL", "FUNCTION", "RANDOMKEY":
            return nil
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            // EVALSHA sha numkeys key…: the first of KEYS, none when numkeys is 0.
            guard let numkeys = argument(2).flatMap({ Int(String(decoding: $0, as: UTF8.self)) }), numkeys > 0 else { return nil }
            return argument(3)
        case "LMPOP", "ZMPOP", "SINTERCARD", "ZINTERCARD", "ZUNION", "ZINTER", "ZDIFF":
            return argument(2)  // numkeys key…
        case "BLMPOP", "BZMPOP":
            return argument(3)  // timeout numkeys key…
        case "OBJECT", "MEMORY", "XINFO":
            return argument(2)  // subcommand key
        case "XREAD", "XREADGROUP":
            for index in 1..<count where String(decoding: argument(index)!, as: UTF8.self).uppercased() == "STREAMS" {
                return argument(index + 1)
            }
            return nil
        default:
            return argument(1)
        }
    }
}

extension RedisRequest {
    /// The key a Redis Cluster routes this request by: a script call's first key, a command's first key.
    var routingKey: ArraySlice<UInt8>? {
        switch self {
        case .command(let command): return command.routingKey
        case .script(_, let keys, _), .packedScript(_, let keys, _): return keys.first.map { ArraySlice($0.utf8) }
        }
    }
}
