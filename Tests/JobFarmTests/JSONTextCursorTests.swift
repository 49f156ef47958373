import Foundation
import JobProtocol
import Testing

/// `JSONTextCursor`, the one-pass writer of large answers, against the tree encoder's and Foundation's text.
@Suite struct JSONTextCursorTests {
    func written(capacity: Int, _ body: (inout JSONTextCursor) -> Void) -> String {
        var bytes = [UInt8](repeating: 0, count: capacity)
        let count = bytes.withUnsafeMutableBufferPointer { buffer in
            var cursor = JSONTextCursor(buffer)
            body(&cursor)
            return cursor.count
        }
        return String(decoding: bytes.prefix(count), as: UTF8.self)
    }

    @Test func stringsAreEscapedAsTheTreeEncoderEscapesThem() throws {
        var samples = ["", "plain", "say \"hi\"", "back\\slash", "line\nfeed\r\t", "ünïcödé ✓ 🚀", "\u{7F}/", "a\u{0}b"]
        samples.append(String(decoding: (0..<0x20).map { UInt8($0) }, as: UTF8.self))
        for sample in samples {
            var expected = ""
            JSONValue.writeString(sample, to: &expected)
            let got = written(capacity: JSONTextCursor.stringCapacity(sample)) { $0.string(sample) }
            #expect(got == expected)
            #expect(try JSONValue(parsing: got) == .string(sample))
        }
    }

    @Test func integersAreExact() {
        for value in [0, 1, -1, 9, 10, 99, 100, 12_345, -987_654_321, 1 << 53, Int.max, Int.min, Int.min + 1] {
            #expect(written(capacity: JSONTextCursor.maxIntegerLength) { $0.integer(value) } == String(value))
        }
    }

    @Test func base64IsFoundationsAtEveryLength() {
        var generator = SystemRandomNumberGenerator()
        for count in Array(0...100) + [1_000, 4_096, 20_480, 20_481, 20_482] {
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let got = bytes.withUnsafeBytes { raw in written(capacity: JSONTextCursor.base64Length(count)) { $0.base64(raw) } }
            #expect(got == Data(bytes).base64EncodedString(), "\(count) bytes")
            var appended: [UInt8] = Array("x".utf8)
            bytes.withUnsafeBytes { FloatMatrix.base64(of: $0, into: &appended) }
            #expect(appended == Array(("x" + Data(bytes).base64EncodedString()).utf8))
        }
    }

    @Test func aFloatMatrixReadsBackAsItsValues() throws {
        var generator = SystemRandomNumberGenerator()
        for (rows, columns) in [(1, 1), (3, 10), (7, 5), (512, 10)] {
            var values = (0..<(rows * columns)).map { _ in Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &generator)) }
            values = values.map { $0.isFinite ? $0 : 1 }
            values[0] = -0.0
            let numbers = FloatMatrix(rows: rows, columns: columns, values: values, encoding: .numbers)
            let text = try JSONValueEncoder().encodeText(numbers)
            #expect(text.utf8.count <= numbers.jsonTextCapacity)
            guard case .array(let parsed)? = try? JSONValue(parsing: text) else {
                Issue.record("not an array: \(text.prefix(80))")
                continue
            }
            #expect(parsed.count == rows && parsed.allSatisfy { if case .array(let row) = $0 { row.count == columns } else { false } })
            let read = parsed.flatMap { row -> [Double] in
                guard case .array(let items) = row else { return [] }
                return items.map { $0.doubleValue ?? .nan }
            }
            #expect(read == values.map(FloatText.readBack))

            let tensor = FloatMatrix(rows: rows, columns: columns, values: values, encoding: .float32Base64)
            let object = try JSONValue(parsing: JSONValueEncoder().encodeText(tensor))
            #expect(object["dtype"] == .string("float32"))
            #expect(object["shape"] == .array([.number(Double(rows)), .number(Double(columns))]))
            let data = try #require(object["data"]?.stringValue.flatMap { Data(base64Encoded: $0) })
            let decoded = data.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)).map { Float(bitPattern: UInt32(littleEndian: $0)) } }
            #expect(decoded.map(\.bitPattern) == values.map(\.bitPattern))
            // Inside another value, through the tree encoder: the same text.
            struct Holder: Encodable { var m: FloatMatrix }
            #expect(try JSONValueEncoder().encodeText(Holder(m: tensor)) == #"{"m":"# + JSONValueEncoder().encodeText(tensor) + "}")
            var bytes: [UInt8] = []
            tensor.write(to: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == (try JSONValueEncoder().encodeText(tensor)))
        }
    }

    @Test func preWrittenTextIsCopiedAsItIs() throws {
        let text = JSONText(bytes: Array(#"[{"a":1},"ü"]"#.utf8))
        #expect(try JSONValueEncoder().encodeText(text) == #"[{"a":1},"ü"]"#)
        struct Holder: Encodable { var t: JSONText }
        #expect(try JSONValueEncoder().encodeText(Holder(t: text)) == #"{"t":[{"a":1},"ü"]}"#)
    }
}
