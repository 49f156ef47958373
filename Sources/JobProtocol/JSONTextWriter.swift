import CComputeKernels

/// A value that writes its own compact JSON text in one pass, through a pointer into memory sized beforehand.
/// `JSONValueEncoder.encodeText` uses it instead of building a tree of nodes and copying each member's text.
///
/// Why: an `inference` answer of 512 rows is ~90 KB of text in a few members (top-k scores, base64 logits); a node
/// per value, or a `String` and a copy per member, cost more than its forward pass.
public protocol JSONTextWritable: Encodable {
    /// At most how many bytes `writeJSONText(to:)` writes.
    var jsonTextCapacity: Int { get }
    /// Writes the value's compact JSON text: at most `jsonTextCapacity` bytes.
    func writeJSONText(to cursor: inout JSONTextCursor)
}

extension JSONTextWritable {
    /// The value's compact JSON text, written straight into the string's storage.
    public var writtenJSONText: String {
        String(unsafeUninitializedCapacity: Swift.max(jsonTextCapacity, 1)) { buffer in
            var cursor = JSONTextCursor(buffer)
            writeJSONText(to: &cursor)
            return cursor.count
        }
    }

    /// Appends the value's compact JSON text to `out`.
    public func appendJSONText(to out: inout [UInt8]) {
        let start = out.count, capacity = jsonTextCapacity
        out.append(contentsOf: repeatElement(0, count: capacity))
        let written = out.withUnsafeMutableBufferPointer { buffer in
            var cursor = JSONTextCursor(UnsafeMutableBufferPointer(rebasing: buffer[start...]))
            writeJSONText(to: &cursor)
            return cursor.count
        }
        out.removeLast(capacity - written)
    }
}

/// Writes JSON text through a pointer into a buffer of a size fixed beforehand. Every piece checks that it fits
/// (one comparison per piece, not per byte): a writer whose capacity was too small stops the process instead of
/// writing past the buffer.
public struct JSONTextCursor {
    @usableFromInline let start: UnsafeMutablePointer<UInt8>
    @usableFromInline let end: UnsafeMutablePointer<UInt8>
    /// Where the next byte goes.
    @usableFromInline var position: UnsafeMutablePointer<UInt8>

    /// A cursor at the start of `buffer`.
    public init(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        start = buffer.baseAddress ?? UnsafeMutablePointer(bitPattern: 1)!
        end = start + buffer.count
        position = start
    }

    /// Bytes written.
    @inlinable public var count: Int { position - start }

    /// Stops the process when `n` more bytes do not fit (the message is built only then).
    @usableFromInline @inline(__always) func room(_ n: Int) {
        precondition(end - position >= n, "JSON text overflows its buffer of \(end - start) bytes: the writer's jsonTextCapacity is too small")
    }

    /// One byte (ASCII punctuation: `[`, `,`, …).
    @inlinable public mutating func byte(_ value: UInt8) {
        room(1)
        position.pointee = value
        position += 1
    }

    /// Text known to need no escaping (member names with their quotes and colon, `null`, …).
    @inlinable public mutating func raw(_ text: StaticString) {
        room(text.utf8CodeUnitCount)
        position.update(from: text.utf8Start, count: text.utf8CodeUnitCount)
        position += text.utf8CodeUnitCount
    }

    /// Bytes copied as they are (text written beforehand).
    @inlinable public mutating func raw(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let base = bytes.baseAddress else { return }
        room(bytes.count)
        position.update(from: base, count: bytes.count)
        position += bytes.count
    }

    /// Bytes copied as they are (text written beforehand).
    @inlinable public mutating func raw(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { raw($0) }
    }

    /// The most bytes `integer(_:)` writes.
    public static let maxIntegerLength = 20

    /// A whole number, exactly.
    @inlinable public mutating func integer(_ value: Int) {
        room(Self.maxIntegerLength)
        var p = position
        if value < 0 {
            p.pointee = UInt8(ascii: "-")
            p += 1
        }
        var magnitude = value.magnitude
        var digits = 1, limit: UInt = 10
        while digits < 20 && magnitude >= limit {
            digits += 1
            limit = limit &* 10
        }
        var i = digits - 1
        repeat {
            p[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
            magnitude /= 10
            i -= 1
        } while i >= 0
        position = p + digits
    }

    /// A float32 with its shortest text (`FloatText.write`); `null` when not finite.
    @inlinable public mutating func float(_ value: Float) {
        room(FloatText.maxFloatLength)
        position += FloatText.write(value, to: position)
    }

    /// The most bytes `string(_:)` writes for `value`: every byte escaped as `\u00XX`, and the quotes.
    public static func stringCapacity(_ value: String) -> Int { 2 + 6 * value.utf8.count }

    /// A string literal with the escapes JSON requires, as `JSONValue.writeString` writes it.
    public mutating func string(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            room(2 + 6 * utf8.count)
            var p = position
            p.pointee = UInt8(ascii: "\"")
            p += 1
            for byte in utf8 {
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                    p[0] = UInt8(ascii: "\\")
                    p[1] = byte
                    p += 2
                case 0x0A, 0x0D, 0x09:
                    p[0] = UInt8(ascii: "\\")
                    p[1] = byte == 0x0A ? UInt8(ascii: "n") : byte == 0x0D ? UInt8(ascii: "r") : UInt8(ascii: "t")
                    p += 2
                case ..<0x20:
                    let hex: StaticString = "0123456789abcdef"
                    p[0] = UInt8(ascii: "\\")
                    p[1] = UInt8(ascii: "u")
                    p[2] = UInt8(ascii: "0")
                    p[3] = UInt8(ascii: "0")
                    p[4] = hex.utf8Start[Int(byte >> 4)]
                    p[5] = hex.utf8Start[Int(byte & 15)]
                    p += 6
                default:
                    p.pointee = byte
                    p += 1
                }
            }
            p.pointee = UInt8(ascii: "\"")
            position = p + 1
        }
    }

    /// The length of the padded base64 text of `count` bytes.
    public static func base64Length(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    /// The base64 text (standard alphabet, padded, no quotes) of `bytes`: whole groups by the vectorised kernel
    /// where the CPU has one, the last one or two bytes here.
    public mutating func base64(_ bytes: UnsafeRawBufferPointer) {
        let length = Self.base64Length(bytes.count)
        room(length)
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let whole = bytes.count - bytes.count % 3
        if whole > 0 { ck_base64_encode_groups(base, whole, position) }
        let rest = bytes.count - whole
        if rest > 0 {
            let symbols: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            let table = symbols.utf8Start
            let word = UInt32(base[whole]) << 16 | (rest == 2 ? UInt32(base[whole + 1]) << 8 : 0)
            let p = position + whole / 3 * 4
            p[0] = table[Int(word >> 18)]
            p[1] = table[Int((word >> 12) & 63)]
            p[2] = rest == 2 ? table[Int((word >> 6) & 63)] : UInt8(ascii: "=")
            p[3] = UInt8(ascii: "=")
        }
        position += length
    }
}
