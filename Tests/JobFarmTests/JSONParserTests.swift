import Foundation
import JobFarmTesting
import JobProtocol
import Testing

@Suite("JSON parser")
struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let value = try JSONParser.parse(#" {"a": [1, -2.5, 3e2, 0, -0.125E-1], "b": {"c": null, "d": true, "e": false}, "s": "x\"y\\z\/\n\t\u00e9\ud83d\ude00"} "#)
        #expect(value == .object([
            "a": .array([.number(1), .number(-2.5), .number(300), .number(0), .number(-0.0125)]),
            "b": .object(["c": .null, "d": .bool(true), "e": .bool(false)]),
            "s": .string("x\"y\\z/\n\té😀"),
        ]))
    }

    @Test func agreesWithFoundationOnNumbers() throws {
        for text in ["0.1", "1.7976931348623157e308", "123456789012345678", "-9007199254740993", "5e-324", "1E+2"] {
            let ours = try JSONParser.parse(text)
            let theirs = try JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed) as! NSNumber
            #expect(ours == .number(theirs.doubleValue), "\(text)")
        }
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "tru", "\"abc", "\"\\x\"", "\"\\ud83d\"",
                      "{\"a\":1} x", "\"tab\there\"", "[1 2]", "{1:2}", "nul"])
    func rejectsMalformedText(text: String) {
        #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(text) }
    }

    @Test func stringsAreReadTheSameWhereverTheirSpecialBytesFallInAnEightByteBlock() throws {
        // The fast path scans eight bytes at a time: put each special byte at every offset of a block.
        for length in 0..<20 {
            let plain = String(repeating: "a", count: length)
            #expect(try JSONParser.parse("\"\(plain)\"") == .string(plain))
            for offset in 0...length {
                let head = String(plain.prefix(offset)), tail = String(plain.dropFirst(offset))
                for (escaped, meant) in [("\\\"", "\""), ("\\\\", "\\"), ("\\n", "\n"), ("\\u00e9", "é"), ("é", "é")] {
                    #expect(try JSONParser.parse("\"\(head)\(escaped)\(tail)\"") == .string(head + meant + tail), "\(head)\(escaped)\(tail)")
                }
                #expect(throws: JSONParser.Failure.self) { try JSONParser.parse("\"\(head)\u{1}\(tail)\"") }
                #expect(throws: JSONParser.Failure.self) { try JSONParser.parse("\"\(head)\u{1F}\(tail)\"") }
                #expect(throws: JSONParser.Failure.self) { try JSONParser.parse("\"\(head)\(tail)") }
            }
        }
        // Bytes 0x20 and 0x7F and multi-byte UTF-8 are plain string bytes.
        let mixed = String(repeating: " ~\u{7F}€😀", count: 9)
        #expect(try JSONParser.parse("\"\(mixed)\"") == .string(mixed))
    }

    @Test func refusesDeepNesting() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParser.Failure.self) { try JSONParser.parse(deep) }
        #expect(throws: Never.self) { try JSONParser.parse(String(repeating: "[", count: 100) + String(repeating: "]", count: 100)) }
    }

    @Test func roundTripsThroughTheWriter() throws {
        let value = JSONValue.object(["k": .array([.string("é\u{1}\"q\""), .number(42), .number(0.5), .null, .bool(true)])])
        #expect(try JSONParser.parse(value.jsonText) == value)
    }

    @Test func envelopeIgnoresUnknownMembersButValidatesThem() throws {
        let envelope = try JobEnvelope(decoding: #"{"v":1,"id":"a1","kind":"k","extra":{"deep":[1,2]},"payload":{"x":1}}"#)
        #expect(envelope.payload == .object(["x": .number(1)]))
        #expect(throws: EnvelopeError.self) { try JobEnvelope(decoding: #"{"v":1,"id":"a1","kind":"k","extra":[1,}"#) }
    }
}
