import Foundation
import JobPayloads
import Testing

/// `Base64.decode`: the vectorised groups, the padded last group and the report of the first bad character.
@Suite struct Base64DecodeTests {
    static let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    func decode(_ text: [UInt8]) -> Result<[UInt8], Base64.Failure> {
        text.withUnsafeBufferPointer { utf8 in
            guard let count = Base64.decodedCount(utf8) else { return .failure(.badLength(text.count)) }
            var out = [UInt8](repeating: 0, count: count)
            let failure: Base64.Failure? = out.withUnsafeMutableBytes { buffer in
                do throws(Base64.Failure) {
                    try Base64.decode(utf8, into: buffer)
                    return nil
                } catch {
                    return error
                }
            }
            return failure.map { .failure($0) } ?? .success(out)
        }
    }

    func randomBytes(_ count: Int, _ generator: inout some RandomNumberGenerator) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    @Test func everyLengthUpTo64AndRandomLengthsRoundTripWithFoundation() throws {
        var generator = SystemRandomNumberGenerator()
        let lengths = Array(0...64) + (0..<200).map { _ in Int.random(in: 65...20_000, using: &generator) }
        for count in lengths {
            let bytes = randomBytes(count, &generator)
            let text = Data(bytes).base64EncodedString()
            #expect(try decode(Array(text.utf8)).get() == bytes, "\(count) bytes")
            #expect(Data(base64Encoded: text).map(Array.init) == bytes)
        }
    }

    @Test func paddingCases() throws {
        #expect(try decode([]).get() == [])
        #expect(try decode(Array("QQ==".utf8)).get() == Array("A".utf8))
        #expect(try decode(Array("QUI=".utf8)).get() == Array("AB".utf8))
        #expect(try decode(Array("QUJD".utf8)).get() == Array("ABC".utf8))
        #expect(try decode(Array("QUJDRA==".utf8)).get() == Array("ABCD".utf8))
        #expect(decode(Array("QUJ".utf8)) == .failure(.badLength(3)))
        #expect(decode(Array("Q===".utf8)) == .failure(.badCharacter(offset: 1, byte: UInt8(ascii: "="))))
        #expect(decode(Array("QQ=A".utf8)) == .failure(.badCharacter(offset: 2, byte: UInt8(ascii: "="))))
        #expect(decode(Array("=QUJ".utf8)) == .failure(.badCharacter(offset: 0, byte: UInt8(ascii: "="))))
        // `=` inside the text, before a last group that is padded.
        #expect(decode(Array("QU=DRA==".utf8)) == .failure(.badCharacter(offset: 2, byte: UInt8(ascii: "="))))
    }

    /// Every byte outside the alphabet at every offset of a text of three 32-character blocks, a tail and a padded
    /// last group: the failure names that offset and byte, as the careful scan did before the vectorised kernel.
    @Test func everyBadByteAtEveryOffsetIsReportedWhereItIs() {
        var generator = SystemRandomNumberGenerator()
        let text = Array(Data(randomBytes(80, &generator)).base64EncodedString().utf8)  // 108 characters, "==" at the end
        #expect(text.count == 108 && text.last == UInt8(ascii: "="))
        let bad = (0...255).map(UInt8.init).filter { !Self.alphabet.contains($0) && $0 != UInt8(ascii: "=") }
        for offset in 0..<(text.count - 2) {
            for byte in bad {
                var broken = text
                broken[offset] = byte
                let result = decode(broken)
                guard result == .failure(.badCharacter(offset: offset, byte: byte)) else {
                    Issue.record("byte \(byte) at \(offset): \(result)")
                    return
                }
            }
        }
    }
}

/// The check for NaN and infinity in a decoded tensor names the first one, wherever it is.
@Suite struct NonFiniteTensorTests {
    @Test func theFirstNonFiniteValueIsFoundAtEveryOffset() {
        for count in [1, 7, 63, 64, 65, 200] {
            #expect([Float](repeating: 1, count: count).withUnsafeBufferPointer { InferencePayload.nonFinite(in: $0, width: 1, pointer: "/inputs") } == nil)
            for offset in 0..<count {
                for bad in [Float.nan, .infinity, -.infinity, Float(bitPattern: 0x7FC0_0001)] {
                    var values = (0..<count).map { Float($0) * (($0 % 2 == 0) ? 1 : -1) * 1e30 }
                    values[offset] = bad
                    if offset + 1 < count { values[count - 1] = .nan }
                    let problem = values.withUnsafeBufferPointer { InferencePayload.nonFinite(in: $0, width: 4, pointer: "/inputs") }
                    #expect(problem?.detail.hasPrefix("row \(offset / 4) feature \(offset % 4) is ") == true, "\(count) values, \(bad) at \(offset)")
                }
            }
        }
        // The largest finite values are finite.
        let extremes: [Float] = [.greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude, -0.0]
        #expect(extremes.withUnsafeBufferPointer { InferencePayload.nonFinite(in: $0, width: 1, pointer: "/inputs") } == nil)
    }
}
