/// Job identifiers: 26-character ULIDs (48-bit millisecond time + 80 random bits, Crockford base32).
///
/// Sortable by creation time, unique without coordination between machines, safe in Redis keys and URLs.
public enum JobID {
    private static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    /// A new identifier for the given time (milliseconds since 1970).
    public static func make(milliseconds: Int64 = WallClock.nowMilliseconds()) -> String {
        var generator = SystemRandomNumberGenerator()
        return make(milliseconds: milliseconds, using: &generator)
    }

    /// A new identifier drawn from `generator`.
    public static func make<G: RandomNumberGenerator>(milliseconds: Int64, using generator: inout G) -> String {
        var bytes = [UInt8](repeating: 0, count: 26)
        var time = UInt64(max(0, milliseconds))
        for index in stride(from: 9, through: 0, by: -1) {
            bytes[index] = alphabet[Int(time & 31)]
            time >>= 5
        }
        var random = generator.next()
        let more = generator.next()
        for index in 10..<26 {
            if index == 22 { random = more }
            bytes[index] = alphabet[Int(random & 31)]
            random >>= 5
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// True when `text` can be a job id: 1…128 characters of letters, digits, `-`, `_`, `.` and `:`.
    /// Foreign clients may choose their own ids (UUIDs, say) within these rules.
    public static func isValid(_ text: String) -> Bool {
        guard (1...128).contains(text.utf8.count) else { return false }
        return text.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
        }
    }
}

/// Wall-clock milliseconds, the unit of every timestamp in the protocol.
public enum WallClock {
    public static func nowMilliseconds() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A fast, non-cryptographic generator (SplitMix64) seeded from the system's: for job ids in bulk, where a
/// system call per id (SystemRandomNumberGenerator) cost a fifth of the enqueue time.
public struct FastRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
    }

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
