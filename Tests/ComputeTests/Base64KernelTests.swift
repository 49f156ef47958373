import CComputeKernels
import Foundation
import Testing

/// The base64 kernels of CComputeKernels, the one this CPU dispatches to and the portable one, against Foundation:
/// whole groups only (padding is the Swift caller's).
@Suite struct Base64KernelTests {
    typealias Decode = @Sendable (UnsafePointer<UInt8>, Int, UnsafeMutablePointer<UInt8>) -> Int
    typealias Encode = @Sendable (UnsafePointer<UInt8>, Int, UnsafeMutablePointer<UInt8>) -> Void

    static let decoders: [(String, Decode)] = [
        ("dispatched", { ck_base64_decode_groups($0, $1, $2) }),
        ("portable", { ck_base64_decode_groups_portable($0, $1, $2) }),
    ]
    static let encoders: [(String, Encode)] = [
        ("dispatched", { ck_base64_encode_groups($0, $1, $2) }),
        ("portable", { ck_base64_encode_groups_portable($0, $1, $2) }),
    ]
    static let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Random bytes, a multiple of 3 long, and their base64 (no padding then).
    static func sample(groups: Int, seed: UInt64) -> (bytes: [UInt8], text: [UInt8]) {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        let bytes = (0..<(groups * 3)).map { _ -> UInt8 in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
        return (bytes, Array(Data(bytes).base64EncodedString().utf8))
    }

    func decode(_ text: [UInt8], with decoder: Decode) -> (decoded: Int, bytes: [UInt8]) {
        var out = [UInt8](repeating: 0xAA, count: text.count / 4 * 3 + 8)
        let decoded = text.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { decoder(input.baseAddress ?? UnsafePointer(bitPattern: 1)!, input.count, $0.baseAddress!) }
        }
        return (decoded, out)
    }

    @Test func decodesAndEncodesLikeFoundationAtEveryLength() {
        for groups in 0..<80 {
            let (bytes, text) = Self.sample(groups: groups, seed: UInt64(groups))
            for (name, decoder) in Self.decoders {
                let (decoded, out) = decode(text, with: decoder)
                #expect(decoded == text.count, "\(name), \(groups) groups")
                #expect(Array(out.prefix(bytes.count)) == bytes, "\(name), \(groups) groups")
                #expect(out.dropFirst(bytes.count).allSatisfy { $0 == 0xAA }, "\(name) wrote past its \(bytes.count) bytes")
            }
            for (name, encoder) in Self.encoders {
                var out = [UInt8](repeating: 0xAA, count: text.count + 8)
                bytes.withUnsafeBufferPointer { input in
                    out.withUnsafeMutableBufferPointer { encoder(input.baseAddress ?? UnsafePointer(bitPattern: 1)!, input.count, $0.baseAddress!) }
                }
                #expect(Array(out.prefix(text.count)) == text, "\(name), \(groups) groups")
                #expect(out.dropFirst(text.count).allSatisfy { $0 == 0xAA }, "\(name) wrote past its \(text.count) characters")
            }
        }
    }

    @Test func stopsAtTheGroupOfEveryBadByteAtEveryOffset() {
        // 96 characters: three 32-character blocks of the vectorised loop, then a tail of 16 the portable loop takes.
        let (bytes, text) = Self.sample(groups: 28, seed: 7)
        let bad = (0...255).map(UInt8.init).filter { !Self.alphabet.contains($0) }
        #expect(bad.count == 192)
        for offset in text.indices {
            for byte in bad {
                var broken = text
                broken[offset] = byte
                for (name, decoder) in Self.decoders {
                    let (decoded, out) = decode(broken, with: decoder)
                    let group = offset / 4 * 4
                    guard decoded == group else {
                        Issue.record("\(name): byte \(byte) at \(offset) stopped at \(decoded), not at its group \(group)")
                        return
                    }
                    #expect(Array(out.prefix(group / 4 * 3)) == Array(bytes.prefix(group / 4 * 3)), "\(name): the groups before \(offset)")
                }
            }
        }
    }

    @Test func ignoresAPartialGroupAtTheEnd() {
        let (bytes, text) = Self.sample(groups: 10, seed: 3)
        for (name, decoder) in Self.decoders {
            let (decoded, out) = decode(text + Array("QQ".utf8), with: decoder)
            #expect(decoded == text.count, "\(name)")
            #expect(Array(out.prefix(bytes.count)) == bytes, "\(name)")
        }
    }
}
