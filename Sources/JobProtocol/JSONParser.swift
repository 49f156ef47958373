/// A small, strict JSON parser (RFC 8259) into `JSONValue`.
///
/// Why not `JSONDecoder`: a worker decodes one envelope per job, and Foundation's decoder spent a quarter of a
/// worker's CPU on it in the queue benchmark. This parser reads the UTF-8 bytes once, without `Codable`.
public struct JSONParser {
    /// A parse error with the byte offset where it was found.
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public let message: String
        public let offset: Int
        public var description: String { "\(message) at byte \(offset)" }
    }

    /// Deepest nesting accepted (guards the stack against hostile input).
    public static let maxDepth = 512

    /// Parses one JSON text (surrounding whitespace allowed, nothing else).
    public static func parse(_ text: String) throws -> JSONValue {
        var text = text
        return try text.withUTF8 { try parse(bytes: $0) }
    }

    /// Parses one JSON text from UTF-8 bytes.
    public static func parse(bytes: UnsafeBufferPointer<UInt8>) throws(Failure) -> JSONValue {
        var parser = Cursor(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.failure("unexpected text after the JSON value") }
        return value
    }

    /// Walks the members of a top-level object without building a dictionary: `member` gets each key's raw
    /// bytes (escapes left as they are) and parses the value itself with the cursor.
    static func forEachMember(
        of bytes: UnsafeBufferPointer<UInt8>,
        _ member: (UnsafeBufferPointer<UInt8>, inout Cursor) throws -> Void
    ) throws {
        var cursor = Cursor(bytes: bytes)
        cursor.skipWhitespace()
        guard cursor.index < bytes.count, bytes[cursor.index] == UInt8(ascii: "{") else {
            throw cursor.failure("expected an object")
        }
        cursor.index += 1
        cursor.skipWhitespace()
        if cursor.index < bytes.count, bytes[cursor.index] == UInt8(ascii: "}") {
            cursor.index += 1
        } else {
            while true {
                cursor.skipWhitespace()
                guard cursor.index < bytes.count, bytes[cursor.index] == UInt8(ascii: "\"") else { throw cursor.failure("expected a string key") }
                let keyStart = cursor.index + 1
                _ = try cursor.string()
                let key = UnsafeBufferPointer(rebasing: bytes[keyStart..<(cursor.index - 1)])
                cursor.skipWhitespace()
                guard cursor.index < bytes.count, bytes[cursor.index] == UInt8(ascii: ":") else { throw cursor.failure("expected ':'") }
                cursor.index += 1
                cursor.skipWhitespace()
                try member(key, &cursor)
                cursor.skipWhitespace()
                guard cursor.index < bytes.count else { throw cursor.failure("unterminated object") }
                if bytes[cursor.index] == UInt8(ascii: ",") {
                    cursor.index += 1
                    continue
                }
                if bytes[cursor.index] == UInt8(ascii: "}") {
                    cursor.index += 1
                    break
                }
                throw cursor.failure("expected ',' or '}'")
            }
        }
        cursor.skipWhitespace()
        guard cursor.index == bytes.count else { throw cursor.failure("unexpected text after the JSON value") }
    }

    struct Cursor {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        func failure(_ message: String) -> Failure { Failure(message: message, offset: index) }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func value(depth: Int) throws(Failure) -> JSONValue {
            guard depth < JSONParser.maxDepth else { throw failure("nesting deeper than \(JSONParser.maxDepth)") }
            guard index < bytes.count else { throw failure("unexpected end of input") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw failure("unexpected character '\(Character(Unicode.Scalar(bytes[index])))'")
            }
        }

        mutating func literal(_ word: StaticString) throws(Failure) {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw failure("unexpected end of input") }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
                throw failure("invalid literal")
            }
            index += count
        }

        mutating func object(depth: Int) throws(Failure) -> JSONValue {
            index += 1
            var members: [String: JSONValue] = [:]
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw failure("expected a string key") }
                let key = try string()
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw failure("expected ':'") }
                index += 1
                skipWhitespace()
                members[key] = try value(depth: depth + 1)
                skipWhitespace()
                guard index < bytes.count else { throw failure("unterminated object") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    return .object(members)
                }
                throw failure("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws(Failure) -> JSONValue {
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            // Rows of numbers are the large arrays here: start them at 16 rather than growing from 1.
            items.reserveCapacity(16)
            while true {
                skipWhitespace()
                // Rows of numbers: straight to the number reader.
                if index < bytes.count, bytes[index] &- UInt8(ascii: "0") < 10 || bytes[index] == UInt8(ascii: "-") {
                    items.append(.number(try number()))
                } else {
                    items.append(try value(depth: depth + 1))
                }
                skipWhitespace()
                guard index < bytes.count else { throw failure("unterminated array") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                if bytes[index] == UInt8(ascii: "]") {
                    index += 1
                    return .array(items)
                }
                throw failure("expected ',' or ']'")
            }
        }

        mutating func string() throws(Failure) -> String {
            index += 1
            let start = index
            // Fast path: no escapes. Eight bytes at a time while none of them is '"', '\\' or a control character
            // (a base64 tensor is a string of ~100 KB), then byte by byte.
            if let base = bytes.baseAddress {
                while index + 8 <= bytes.count {
                    let chunk = UInt64(littleEndian: UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self))
                    guard !Self.hasSpecialStringByte(chunk) else { break }
                    index += 8
                }
            }
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                    index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { throw failure("control character in a string") }
                index += 1
            }
            var out = [UInt8](UnsafeBufferPointer(rebasing: bytes[start..<index]))
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    index += 1
                    return String(decoding: out, as: UTF8.self)
                }
                if byte < 0x20 { throw failure("control character in a string") }
                if byte != UInt8(ascii: "\\") {
                    out.append(byte)
                    index += 1
                    continue
                }
                index += 1
                guard index < bytes.count else { break }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        // A surrogate pair: \uD83D\uDE00.
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw failure("unpaired surrogate")
                        }
                        index += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw failure("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw failure("unpaired surrogate")
                    }
                    out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
                default:
                    throw failure("invalid escape")
                }
            }
            throw failure("unterminated string")
        }

        mutating func hex4() throws(Failure) -> UInt32 {
            guard index + 4 <= bytes.count else { throw failure("short \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw failure("bad hex digit in \\u escape")
                }
                value = value * 16 + digit
                index += 1
            }
            return value
        }

        /// Reads a number, checking the JSON grammar; the significant digits are gathered on the way so that most
        /// numbers need no `strtod` (`FloatText.double`).
        ///
        /// The usual number (at most 19 digits, the fraction's read eight at a time) takes one pass without
        /// per-digit bookkeeping; anything else, errors included, is read again by `numberCarefully`.
        mutating func number() throws(Failure) -> Double {
            let start = index
            let count = bytes.count
            let base = bytes.baseAddress!
            var i = index
            let negative = base[i] == UInt8(ascii: "-")
            if negative { i += 1 }
            let integerStart = i
            var mantissa: UInt64 = 0
            Self.readDigits(base, count, &i, &mantissa)
            var digits = i - integerStart
            guard digits > 0, digits == 1 || base[integerStart] != UInt8(ascii: "0") else { return try numberCarefully() }
            var exponent = 0
            var simple = true
            if i < count, base[i] == UInt8(ascii: ".") {
                simple = false
                i += 1
                let fractionStart = i
                Self.readDigits(base, count, &i, &mantissa)
                let fractionDigits = i - fractionStart
                guard fractionDigits > 0 else { return try numberCarefully() }
                digits += fractionDigits
                exponent = -fractionDigits
            }
            // 19 digits always fit in 64 bits; more, and the careful reader keeps the first 19.
            guard digits <= 19 else { return try numberCarefully() }
            if i < count, base[i] == UInt8(ascii: "e") || base[i] == UInt8(ascii: "E") {
                simple = false
                i += 1
                var exponentNegative = false
                if i < count, base[i] == UInt8(ascii: "+") || base[i] == UInt8(ascii: "-") {
                    exponentNegative = base[i] == UInt8(ascii: "-")
                    i += 1
                }
                let exponentStart = i
                var written = 0
                while i < count {
                    let digit = base[i] &- UInt8(ascii: "0")
                    guard digit < 10 else { break }
                    if written < 100_000 { written = written * 10 + Int(digit) }
                    i += 1
                }
                guard i > exponentStart else { return try numberCarefully() }
                exponent += exponentNegative ? -written : written
            }
            index = i
            if simple && mantissa < 1 << 62 {
                let integer = Int64(mantissa)
                if negative && integer == 0 { return -0.0 }
                return Double(negative ? -integer : integer)
            }
            guard let value = FloatText.double(bytes: UnsafeBufferPointer(rebasing: bytes[start..<i]), mantissa: mantissa,
                                               exponent: exponent, truncated: false, negative: negative) else {
                index = start
                return try numberCarefully()
            }
            return value
        }

        /// Appends the decimal digits at `i` to `mantissa` (wrapping past 19 digits: the caller counts them),
        /// eight bytes at a time while eight can be read.
        @inline(__always)
        static func readDigits(_ base: UnsafePointer<UInt8>, _ count: Int, _ i: inout Int, _ mantissa: inout UInt64) {
            while i + 8 <= count {
                let chunk = UInt64(littleEndian: UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self))
                let leading = leadingDigits(chunk)
                if leading == 8 {
                    mantissa = mantissa &* 100_000_000 &+ eightDigits(chunk)
                    i += 8
                    continue
                }
                if leading > 0 {
                    // The `leading` digits moved to the low decimal places, '0's in front of them.
                    let shift = UInt64(8 * (8 - leading))
                    let padded = (chunk << shift) | (0x3030_3030_3030_3030 >> UInt64(8 * leading))
                    mantissa = mantissa &* powersOfTen[leading] &+ eightDigits(padded)
                    i += leading
                }
                return
            }
            while i < count {
                let digit = base[i] &- UInt8(ascii: "0")
                guard digit < 10 else { return }
                mantissa = mantissa &* 10 &+ UInt64(digit)
                i += 1
            }
        }

        /// How many of the eight bytes of `chunk` (little-endian, the first in the low byte) are ASCII digits
        /// before the first that is not.
        @inline(__always)
        static func leadingDigits(_ chunk: UInt64) -> Int {
            // Per byte b: zero exactly when 0x30 ≤ b ≤ 0x39 (high nibble of b and of b + 6 both 3). A carry out of
            // a non-digit byte can only disturb the bytes after it, which are not counted.
            let high: UInt64 = 0xF0F0_F0F0_F0F0_F0F0, threes: UInt64 = 0x3030_3030_3030_3030
            let notDigit = ((chunk & high) ^ threes) | (((chunk &+ 0x0606_0606_0606_0606) & high) ^ threes)
            return notDigit.trailingZeroBitCount >> 3
        }

        /// True when one of the eight bytes of `chunk` may be '"', '\\' or below 0x20 (never false when one is;
        /// the byte loop after it decides).
        @inline(__always)
        static func hasSpecialStringByte(_ chunk: UInt64) -> Bool {
            let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
            func hasZeroByte(_ x: UInt64) -> Bool { (x &- ones) & ~x & highs != 0 }
            return hasZeroByte(chunk ^ 0x2222_2222_2222_2222) || hasZeroByte(chunk ^ 0x5C5C_5C5C_5C5C_5C5C)
                || (chunk &- 0x2020_2020_2020_2020) & ~chunk & highs != 0
        }

        /// 10^0 … 10^8.
        static let powersOfTen: [UInt64] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000]

        /// The value of eight ASCII digits (little-endian in `chunk`, the first digit in the low byte).
        @inline(__always)
        static func eightDigits(_ chunk: UInt64) -> UInt64 {
            var value = chunk &- 0x3030_3030_3030_3030
            value = (value &* 10) &+ (value >> 8)
            let mask: UInt64 = 0x0000_00FF_0000_00FF
            let high: UInt64 = 100 &+ (1_000_000 << 32)
            let low: UInt64 = 1 &+ (10_000 << 32)
            return (((value & mask) &* high) &+ (((value >> 16) & mask) &* low)) >> 32
        }

        /// The number at `index` read digit by digit, keeping the first 19 significant digits; reports every
        /// grammar error.
        mutating func numberCarefully() throws(Failure) -> Double {
            let start = index
            var negative = false
            if bytes[index] == UInt8(ascii: "-") {
                negative = true
                index += 1
            }
            var mantissa: UInt64 = 0
            var significant = 0  // significant digits seen (leading zeros excluded)
            var dropped = 0  // significant digits past the 19 kept
            var truncated = false
            var exponent = 0
            let digitsStart = index
            while index < bytes.count {
                let digit = bytes[index] &- UInt8(ascii: "0")
                guard digit < 10 else { break }
                if significant < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(digit)
                    if mantissa != 0 { significant += 1 }
                } else {
                    dropped += 1
                    if digit != 0 { truncated = true }
                }
                index += 1
            }
            guard index > digitsStart else { throw failure("expected digits") }
            if bytes[digitsStart] == UInt8(ascii: "0") && index - digitsStart > 1 { throw failure("leading zero") }
            exponent = dropped
            var simple = true
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                simple = false
                index += 1
                let fractionStart = index
                while index < bytes.count {
                    let digit = bytes[index] &- UInt8(ascii: "0")
                    guard digit < 10 else { break }
                    if significant < 19 {
                        mantissa = mantissa &* 10 &+ UInt64(digit)
                        if mantissa != 0 { significant += 1 }
                        exponent -= 1
                    } else if digit != 0 {
                        truncated = true
                    }
                    index += 1
                }
                guard index > fractionStart else { throw failure("expected digits after '.'") }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                simple = false
                index += 1
                var exponentNegative = false
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                    exponentNegative = bytes[index] == UInt8(ascii: "-")
                    index += 1
                }
                let exponentStart = index
                var written = 0
                while index < bytes.count {
                    let digit = bytes[index] &- UInt8(ascii: "0")
                    guard digit < 10 else { break }
                    if written < 100_000 { written = written * 10 + Int(digit) }
                    index += 1
                }
                guard index > exponentStart else { throw failure("expected exponent digits") }
                exponent += exponentNegative ? -written : written
            }
            if simple && !truncated && exponent == 0 && mantissa < 1 << 62 {
                let integer = Int64(mantissa)
                if negative && integer == 0 { return -0.0 }
                return Double(negative ? -integer : integer)
            }
            guard let value = FloatText.double(bytes: UnsafeBufferPointer(rebasing: bytes[start..<index]), mantissa: mantissa,
                                               exponent: exponent, truncated: truncated, negative: negative) else {
                throw failure("bad number")
            }
            return value
        }
    }
}
