import CComputeKernels

/// Base64 (RFC 4648, standard alphabet, `=` padding) straight into a caller's buffer: no `Data`, no copy.
///
/// Why not Foundation's `Data(base64Encoded:)`: a bad character is reported here with its offset in the text, and
/// the whole groups are decoded 32 characters a step where the CPU has AVX2 (`ck_base64_decode_groups`, portable C
/// elsewhere): several times faster than Foundation on a 512-row tensor (docs/BENCHMARKS.md, "Binary tensors").
/// The fast kernel stops at the first group holding a bad character; the careful scan here then names it.
public enum Base64 {
    /// Why a text is not base64 of the expected length.
    public enum Failure: Error, Equatable, Sendable {
        /// The character at this offset is not in the alphabet (or `=` not at the end).
        case badCharacter(offset: Int, byte: UInt8)
        /// The text's length is not a multiple of 4.
        case badLength(Int)
    }

    /// 0–63 for the alphabet, 0xFF for anything else.
    static let table: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            table[Int(byte)] = UInt8(index)
        }
        return table
    }()

    /// How many bytes `text` (UTF-8 of base64) decodes to, from its length and padding alone; nil when the length
    /// is not a multiple of 4.
    public static func decodedCount(_ text: UnsafeBufferPointer<UInt8>) -> Int? {
        guard text.count % 4 == 0 else { return nil }
        guard text.count > 0 else { return 0 }
        var padding = 0
        if text[text.count - 1] == UInt8(ascii: "=") { padding += 1 }
        if text[text.count - 2] == UInt8(ascii: "=") { padding += 1 }
        return text.count / 4 * 3 - padding
    }

    /// Decodes `text` into `output`, which must hold exactly `decodedCount(text)` bytes.
    public static func decode(_ text: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableRawBufferPointer) throws(Failure) {
        guard let count = decodedCount(text) else { throw .badLength(text.count) }
        precondition(output.count == count, "base64 output buffer holds \(output.count) bytes, the text decodes to \(count)")
        guard count > 0 else { return }
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let input = text.baseAddress!
        let wholeCharacters = count / 3 * 4  // the groups that decode to 3 bytes: all but a padded last one
        let decoded = ck_base64_decode_groups(input, wholeCharacters, out)
        let failure: Failure? = table.withUnsafeBufferPointer { table -> Failure? in
            if decoded < wholeCharacters { return firstBad(text, from: decoded, table: table) }
            let o = wholeCharacters / 4 * 3, i = wholeCharacters
            let rest = count - o  // 0, 1 or 2 bytes in a padded last group
            if rest > 0 {
                let a = table[Int(input[i])], b = table[Int(input[i + 1])]
                let c = rest == 2 ? table[Int(input[i + 2])] : 0
                if (a | b | c) & 0xC0 != 0 { return firstBad(text, from: i, table: table) }
                let word = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6
                out[o] = UInt8(truncatingIfNeeded: word >> 16)
                if rest == 2 { out[o + 1] = UInt8(truncatingIfNeeded: word >> 8) }
            }
            return nil
        }
        if let failure { throw failure }
    }

    private static func firstBad(_ text: UnsafeBufferPointer<UInt8>, from start: Int, table: UnsafeBufferPointer<UInt8>) -> Failure {
        var index = start
        while index < text.count, table[Int(text[index])] != 0xFF { index += 1 }
        return .badCharacter(offset: min(index, text.count - 1), byte: text[min(index, text.count - 1)])
    }
}
