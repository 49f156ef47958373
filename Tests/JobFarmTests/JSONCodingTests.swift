import Foundation
import JobKinds
import JobProtocol
import Testing

// `JSONValueDecoder` / `JSONValueEncoder` against Foundation's `JSONDecoder` / `JSONEncoder`: from the same JSON text,
// the same values, or errors of the same kind at the same coding path.

/// What a decoder made of a text: the value, or the error's kind and coding path.
enum Decoded<T: Equatable>: Equatable, CustomStringConvertible {
    case value(T)
    case error(kind: String, path: String)

    init(_ body: () throws -> T) {
        do {
            self = .value(try body())
        } catch let error as DecodingError {
            let (kind, context): (String, DecodingError.Context)
            switch error {
            case .typeMismatch(_, let c): (kind, context) = ("typeMismatch", c)
            case .valueNotFound(_, let c): (kind, context) = ("valueNotFound", c)
            case .keyNotFound(let key, let c): (kind, context) = ("keyNotFound(\(key.stringValue))", c)
            case .dataCorrupted(let c): (kind, context) = ("dataCorrupted", c)
            @unknown default: (kind, context) = ("unknown", .init(codingPath: [], debugDescription: ""))
            }
            self = .error(kind: kind, path: context.codingPath.map(\.stringValue).joined(separator: "."))
        } catch is JSONParser.Failure {
            // Text that is not JSON never reaches a decoder in the farm (the envelope is refused); Foundation calls
            // it corrupted data at the top.
            self = .error(kind: "dataCorrupted", path: "")
        } catch {
            self = .error(kind: "other: \(error)", path: "")
        }
    }

    var description: String {
        switch self {
        case .value(let value): return "value \(value)"
        case .error(let kind, let path): return "\(kind) at '\(path)'"
        }
    }
}

func foundation<T: Decodable & Equatable>(_ type: T.Type, _ text: String) -> Decoded<T> {
    Decoded { try JSONDecoder().decode(T.self, from: Data(text.utf8)) }
}

func own<T: Decodable & Equatable>(_ type: T.Type, _ text: String) -> Decoded<T> {
    Decoded { try JSONValueDecoder().decode(T.self, from: try JSONValue(parsing: text)) }
}

func expectAgreement<T: Decodable & Equatable>(_ type: T.Type, _ texts: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    for text in texts {
        let theirs = foundation(T.self, text)
        var ours = own(T.self, text)
        // A number out of the type's range: Foundation reports it at the top, JSONValueDecoder at the field.
        if case .error("dataCorrupted", _) = ours, theirs == .error(kind: "dataCorrupted", path: "") {
            ours = theirs
        }
        #expect(ours == theirs, "\(T.self) from \(text.prefix(120)): JSONDecoder gave \(theirs), JSONValueDecoder \(ours)", sourceLocation: sourceLocation)
    }
}

// MARK: - Types of the table

struct Scalars: Codable, Equatable {
    var int: Int
    var double: Double
    var float: Float
    var string: String
    var bool: Bool
    var u8: UInt8
    var i8: Int8
    var i32: Int32
    var u32: UInt32
    var i64: Int64
    var u64: UInt64
}

struct Optionals: Codable, Equatable {
    var a: Int?
    var b: String?
    var c: [Int?]?
    var d: Inner?
    var e: Double?
}

struct Inner: Codable, Equatable {
    var name: String
    var tags: [String]
}

struct Containers: Codable, Equatable {
    var rows: [[Double]]
    var map: [String: Int]
    var byNumber: [Int: String]
    var inner: Inner
    var list: [Inner]
    var json: JSONValue?
}

enum Level: String, Codable, Equatable { case low, high }

enum Shape: Codable, Equatable {
    case circle(radius: Double)
    case rectangle(width: Double, height: Double)
    case point
}

struct Foundationish: Codable, Equatable {
    var date: Date
    var data: Data
    var url: URL
    var level: Level
}

/// Hand-written `Codable` with nested containers, `decodeNil`, `superDecoder` and an unkeyed walk.
class Base: Codable, Equatable {
    var id: Int
    init(id: Int) { self.id = id }
    static func == (a: Base, b: Base) -> Bool { a.id == b.id && type(of: a) == type(of: b) && a.isEqual(b) }
    func isEqual(_ other: Base) -> Bool { true }
}

final class Derived: Base {
    var point: (x: Int, y: Int) = (0, 0)
    var values: [Int?] = []
    var note: String?

    enum Keys: String, CodingKey { case point, values, note, base }
    enum PointKeys: String, CodingKey { case x, y }

    init(id: Int, point: (Int, Int), values: [Int?], note: String?) {
        self.point = point
        self.values = values
        self.note = note
        super.init(id: id)
    }

    required init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        let point = try container.nestedContainer(keyedBy: PointKeys.self, forKey: .point)
        self.point = (try point.decode(Int.self, forKey: .x), try point.decode(Int.self, forKey: .y))
        var list = try container.nestedUnkeyedContainer(forKey: .values)
        var values: [Int?] = []
        while !list.isAtEnd {
            if try list.decodeNil() { values.append(nil) } else { values.append(try list.decode(Int.self)) }
        }
        self.values = values
        self.note = try container.decodeNil(forKey: .note) ? nil : try container.decode(String.self, forKey: .note)
        try super.init(from: try container.superDecoder(forKey: .base))
    }

    override func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        var point = container.nestedContainer(keyedBy: PointKeys.self, forKey: .point)
        try point.encode(self.point.x, forKey: .x)
        try point.encode(self.point.y, forKey: .y)
        var list = container.nestedUnkeyedContainer(forKey: .values)
        for value in values { if let value { try list.encode(value) } else { try list.encodeNil() } }
        if let note { try container.encode(note, forKey: .note) } else { try container.encodeNil(forKey: .note) }
        try super.encode(to: container.superEncoder(forKey: .base))
    }

    override func isEqual(_ other: Base) -> Bool {
        guard let other = other as? Derived else { return false }
        return point == other.point && values == other.values && note == other.note
    }
}

/// `superDecoder()` (key "super") and an unkeyed `superDecoder()`.
struct SuperUser: Codable, Equatable {
    var inner: Inner
    var first: Inner

    enum Keys: String, CodingKey { case list }

    init(inner: Inner, first: Inner) {
        self.inner = inner
        self.first = first
    }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        inner = try Inner(from: try container.superDecoder())
        var list = try container.nestedUnkeyedContainer(forKey: .list)
        first = try Inner(from: try list.superDecoder())
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try inner.encode(to: container.superEncoder())
        var list = container.nestedUnkeyedContainer(forKey: .list)
        try first.encode(to: list.superEncoder())
    }
}

/// A tuple read from an array: reading past its end is `valueNotFound` at "Index n".
struct Triple: Codable, Equatable {
    var a: Int, b: Int, c: Int
    init(from decoder: Decoder) throws {
        var list = try decoder.unkeyedContainer()
        a = try list.decode(Int.self)
        b = try list.decode(Int.self)
        c = try list.decode(Int.self)
    }
    func encode(to encoder: Encoder) throws {
        var list = encoder.unkeyedContainer()
        try list.encode(a)
        try list.encode(b)
        try list.encode(c)
    }
}

indirect enum Tree: Codable, Equatable {
    case leaf(Int)
    case node([Tree])
}

struct Recursive: Codable, Equatable {
    var next: [Recursive]
}

extension SleepJob.Parameters: Equatable {
    public static func == (a: Self, b: Self) -> Bool { a.seconds == b.seconds && a.steps == b.steps && a.blocking == b.blocking }
}

extension FailJob.Parameters: Equatable {
    public static func == (a: Self, b: Self) -> Bool { a.message == b.message && a.retryable == b.retryable && a.times == b.times }
}

// MARK: - Tests

@Suite("JSONValueDecoder agrees with JSONDecoder")
struct JSONValueDecoderAgreementTests {
    @Test func scalars() {
        let good = #"{"int": -5, "double": 0.1, "float": 3.25, "string": "é\n", "bool": true, "u8": 255, "i8": -128, "i32": 2147483647, "u32": 4294967295, "i64": -9007199254740991, "u64": 9007199254740991}"#
        expectAgreement(Scalars.self, [
            good,
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": 1e2"#),             // integer written with an exponent
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": 7.0"#),             // integral fraction
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": -0"#),
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": 1.5"#),             // not an integer
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": "5""#),             // a string
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": null"#),            // null for a non-optional
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": true"#),
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": 1e300"#),           // huge
            good.replacingOccurrences(of: #""int": -5"#, with: #""int": 123456789012345678901234567890"#),
            good.replacingOccurrences(of: #""u8": 255"#, with: #""u8": 256"#),              // overflow
            good.replacingOccurrences(of: #""u8": 255"#, with: #""u8": -1"#),
            good.replacingOccurrences(of: #""i8": -128"#, with: #""i8": -129"#),
            good.replacingOccurrences(of: #""i32": 2147483647"#, with: #""i32": 2147483648"#),
            good.replacingOccurrences(of: #""u32": 4294967295"#, with: #""u32": 4294967296"#),
            good.replacingOccurrences(of: #""u64": 9007199254740991"#, with: #""u64": -1"#),
            good.replacingOccurrences(of: #""u64": 9007199254740991"#, with: #""u64": 1e20"#),
            good.replacingOccurrences(of: #""double": 0.1"#, with: #""double": 5"#),        // Double from an integer
            good.replacingOccurrences(of: #""double": 0.1"#, with: #""double": 1.7976931348623157e308"#),
            good.replacingOccurrences(of: #""double": 0.1"#, with: #""double": 5e-324"#),
            good.replacingOccurrences(of: #""double": 0.1"#, with: #""double": 1e400"#),    // not representable
            good.replacingOccurrences(of: #""double": 0.1"#, with: #""double": "NaN""#),
            good.replacingOccurrences(of: #""float": 3.25"#, with: #""float": 7"#),         // Float from an integer
            good.replacingOccurrences(of: #""float": 3.25"#, with: #""float": 0.1"#),
            good.replacingOccurrences(of: #""float": 3.25"#, with: #""float": 3.4028234663852886e38"#),
            good.replacingOccurrences(of: #""float": 3.25"#, with: #""float": 1e39"#),      // beyond Float
            good.replacingOccurrences(of: #""float": 3.25"#, with: #""float": 1e-50"#),     // would read as 0
            good.replacingOccurrences(of: #""float": 3.25"#, with: #""float": 1e-40"#),     // a subnormal Float
            good.replacingOccurrences(of: #""string": "é\n""#, with: #""string": 5"#),
            good.replacingOccurrences(of: #""bool": true"#, with: #""bool": 1"#),
            good.replacingOccurrences(of: #""bool": true"#, with: #""bool": "true""#),
            good.replacingOccurrences(of: #""int": -5, "#, with: ""),                       // key not found
            "[]", "null", "5", #""text""#,
        ])
        expectAgreement(Int.self, ["5", "-5", "5.5", "null", "\"5\"", "9007199254740991", "-9007199254740991"])
        expectAgreement(Double.self, ["5", "0.5", "-0", "null", "[]", "{}"])
        expectAgreement(Bool.self, ["true", "false", "0", "null"])
        expectAgreement(String.self, [#""a""#, "1", "null", "[\"a\"]"])
    }

    @Test func optionalsAndNulls() {
        expectAgreement(Optionals.self, [
            "{}",
            #"{"a": null, "b": null, "c": null, "d": null, "e": null}"#,
            #"{"a": 1, "b": "x", "c": [1, null, 3], "d": {"name": "n", "tags": []}, "e": 2}"#,
            #"{"a": "1"}"#,                        // present but of the wrong type: not nil
            #"{"a": 1.5}"#,
            #"{"c": [1, "two"]}"#,
            #"{"c": {}}"#,
            #"{"d": {"name": "n"}}"#,              // missing key inside an optional
            #"{"d": {"name": null, "tags": []}}"#,
            #"{"d": 5}"#,
            #"{"e": 1e400}"#,
            "null", "[]",
        ])
        expectAgreement(Int?.self, ["null", "5", "\"5\""])
        expectAgreement([Int?].self, ["[null, 1]", "[null, \"x\"]", "[]", "null"])
    }

    @Test func nestedContainers() {
        let good = #"{"rows": [[1, 2.5], []], "map": {"a": 1, "b": 2}, "byNumber": {"1": "one", "20": "twenty"}, "inner": {"name": "n", "tags": ["t"]}, "list": [{"name": "m", "tags": []}], "json": {"any": [1, "x", null, {"deep": true}]}}"#
        expectAgreement(Containers.self, [
            good,
            good.replacingOccurrences(of: "[[1, 2.5], []]", with: #"[[1, "2.5"]]"#),
            good.replacingOccurrences(of: "[[1, 2.5], []]", with: "[1, 2]"),
            good.replacingOccurrences(of: "[[1, 2.5], []]", with: #"{"a": 1}"#),
            good.replacingOccurrences(of: #"{"a": 1, "b": 2}"#, with: #"{"a": 1, "b": "2"}"#),
            good.replacingOccurrences(of: #"{"a": 1, "b": 2}"#, with: "[1, 2]"),
            good.replacingOccurrences(of: #""20": "twenty""#, with: #""x": "twenty""#),
            good.replacingOccurrences(of: #"[{"name": "m", "tags": []}]"#, with: #"[{"name": "m"}]"#),
            good.replacingOccurrences(of: #"[{"name": "m", "tags": []}]"#, with: #"[{"name": "m", "tags": [1]}]"#),
            good.replacingOccurrences(of: #""json": {"any": [1, "x", null, {"deep": true}]}"#, with: #""json": null"#),
            good.replacingOccurrences(of: #", "json": {"any": [1, "x", null, {"deep": true}]}"#, with: ""),
        ])
        expectAgreement([String: [String: [Int]]].self, [#"{"a": {"b": [1, 2]}}"#, #"{"a": {"b": [1, "2"]}}"#, #"{"a": []}"#])
    }

    @Test func enumsAndFoundationTypes() {
        expectAgreement(Level.self, [#""low""#, #""medium""#, "1", "null"])
        expectAgreement(Shape.self, [
            #"{"circle": {"radius": 2}}"#, #"{"rectangle": {"width": 1, "height": 2.5}}"#, #"{"point": {}}"#,
            #"{"circle": {"radius": "2"}}"#, #"{"circle": {}}"#, #"{"triangle": {}}"#, #"{}"#,
            #"{"circle": {"radius": 1}, "point": {}}"#, "[]",
        ])
        expectAgreement(Foundationish.self, [
            #"{"date": 123.5, "data": "aGVsbG8=", "url": "https://example.com/a?b=c", "level": "high"}"#,
            #"{"date": "2026-01-01", "data": "aGVsbG8=", "url": "https://example.com", "level": "high"}"#,
            #"{"date": 0, "data": "not base64!", "url": "https://example.com", "level": "high"}"#,
            #"{"date": 0, "data": [104, 105], "url": "https://example.com", "level": "high"}"#,
            #"{"date": 0, "data": "", "url": 5, "level": "high"}"#,
        ])
    }

    @Test func handWrittenCodable() {
        expectAgreement(Derived.self, [
            #"{"point": {"x": 1, "y": 2}, "values": [1, null, 3], "note": "n", "base": {"id": 7}}"#,
            #"{"point": {"x": 1, "y": 2}, "values": [], "note": null, "base": {"id": 7}}"#,
            #"{"point": {"x": 1, "y": 2}, "values": [], "base": {"id": 7}}"#,           // decodeNil of a missing key
            #"{"point": {"x": 1}, "values": [], "note": null, "base": {"id": 7}}"#,
            #"{"point": [1, 2], "values": [], "note": null, "base": {"id": 7}}"#,
            #"{"values": [], "note": null, "base": {"id": 7}}"#,                         // nested container of a missing key
            #"{"point": {"x": 1, "y": 2}, "values": {}, "note": null, "base": {"id": 7}}"#,
            #"{"point": {"x": 1, "y": 2}, "values": [1.5], "note": null, "base": {"id": 7}}"#,
            #"{"point": {"x": 1, "y": 2}, "values": [], "note": null}"#,                 // superDecoder of a missing key
            #"{"point": {"x": 1, "y": 2}, "values": [], "note": null, "base": {"id": "7"}}"#,
        ])
        expectAgreement(SuperUser.self, [
            #"{"super": {"name": "s", "tags": []}, "list": [{"name": "f", "tags": ["x"]}]}"#,
            #"{"list": [{"name": "f", "tags": []}]}"#,                                   // no "super"
            #"{"super": {"name": "s", "tags": []}, "list": []}"#,                        // unkeyed superDecoder at the end
            #"{"super": {"name": "s", "tags": [1]}, "list": [{"name": "f", "tags": []}]}"#,
        ])
        expectAgreement(Triple.self, ["[1, 2, 3]", "[1, 2]", "[1, 2, 3, 4]", "[1, \"2\", 3]", "{}", "null"])
    }

    @Test func hostileInputs() {
        // Deep nesting: fine within both parsers' limit, refused by both beyond it.
        func tree(_ depth: Int) -> String { String(repeating: #"{"node": ["#, count: depth) + #"{"leaf": 1}"# + String(repeating: "]}", count: depth) }
        expectAgreement(Tree.self, [tree(50), tree(200), tree(300)])
        func chain(_ depth: Int) -> String { String(repeating: #"{"next": ["#, count: depth) + #"{"next": []}"# + String(repeating: "]}", count: depth) }
        expectAgreement(Recursive.self, [chain(10), chain(240)])
        #expect(throws: (any Error).self) { try JSONValueDecoder().decode(Recursive.self, from: try JSONValue(parsing: chain(5000))) }
        #expect(throws: (any Error).self) { try JSONDecoder().decode(Recursive.self, from: Data(chain(5000).utf8)) }
        // Wide and long values.
        let wide = "{" + (0..<5000).map { #""k\#($0)": \#($0)"# }.joined(separator: ",") + "}"
        expectAgreement([String: Int].self, [wide])
        expectAgreement([Double].self, ["[" + (0..<20000).map { "\($0).5" }.joined(separator: ",") + "]"])
        expectAgreement(String.self, ["\"" + String(repeating: "\\u00e9x", count: 10000) + "\""])
        // The farm's own parameter types, with wrong and hostile values.
        expectAgreement(SleepJob.Parameters.self, [
            #"{"seconds": 2}"#, #"{"seconds": "2"}"#, #"{}"#, #"{"seconds": 1e400}"#, #"{"seconds": 1, "steps": 1e19}"#,
            #"{"seconds": 1, "steps": 2.5}"#, #"{"seconds": 1, "blocking": "yes"}"#, "[]", "null",
        ])
        expectAgreement(FailJob.Parameters.self, [
            #"{}"#, #"{"times": -1, "retryable": false, "message": "m"}"#, #"{"times": 9223372036854775808}"#, #"{"message": {}}"#,
        ])
    }

    @Test func documentedDifferences() {
        // Foundation reads these digits exactly; a JSONValue number is a double, so they are refused rather than
        // read as a neighbour (9007199254740993 would become ...992).
        for text in ["9007199254740993", "9007199254740992", "-9223372036854775808", "18446744073709551615"] {
            #expect(own(Int64.self, text) == .error(kind: "dataCorrupted", path: ""), "\(text)")
            #expect(own(UInt64.self, text) == .error(kind: "dataCorrupted", path: ""), "\(text)")
        }
        #expect(foundation(Int64.self, "9007199254740993") == .value(9_007_199_254_740_993))
        // Below 2^53 both read every integer exactly.
        #expect(own(Int64.self, "9007199254740991") == .value(9_007_199_254_740_991))
        // A key twice: the farm's parser keeps the last value (as it does for envelopes), Foundation the first.
        #expect(own([String: Int].self, #"{"a": 1, "a": 2}"#) == .value(["a": 2]))
        #expect(foundation([String: Int].self, #"{"a": 1, "a": 2}"#) == .value(["a": 1]))
        // Out of range: the same kind of error, and the farm's names the field.
        #expect(own(SleepJob.Parameters.self, #"{"seconds": 1, "steps": 1e19}"#) == .error(kind: "dataCorrupted", path: "steps"))
        #expect(foundation(SleepJob.Parameters.self, #"{"seconds": 1, "steps": 1e19}"#) == .error(kind: "dataCorrupted", path: ""))
    }

    @Test func errorsReadAsBefore() throws {
        // The worker's message names the field and what was expected and found.
        let value = try JSONValue(parsing: #"{"seconds": "soon"}"#)
        do {
            _ = try JSONValueDecoder().decode(SleepJob.Parameters.self, from: value)
            Issue.record("decoded")
        } catch let error as DecodingError {
            guard case .typeMismatch(let type, let context) = error else { Issue.record("\(error)"); return }
            #expect("\(type)" == "Double")
            #expect(context.codingPath.map(\.stringValue) == ["seconds"])
            #expect(context.debugDescription == "Expected to decode Double but found a string instead.")
        }
    }
}

@Suite("JSONValueEncoder agrees with JSONEncoder")
struct JSONValueEncoderAgreementTests {
    /// Both encoders' text read back with the farm's parser, and the tree the encoder makes.
    func expectSameJSON<T: Encodable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let theirs = try JSONValue(parsing: JSONEncoder().encode(value))
        let text = try JSONValueEncoder().encodeText(value)
        #expect(try JSONValue(parsing: text) == theirs, "\(text)", sourceLocation: sourceLocation)
        #expect(try JSONValueEncoder().encode(value) == theirs, sourceLocation: sourceLocation)
    }

    func roundTrip<T: Codable & Equatable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try expectSameJSON(value, sourceLocation: sourceLocation)
        #expect(try JSONValueDecoder().decode(T.self, from: JSONValueEncoder().encode(value)) == value, sourceLocation: sourceLocation)
        #expect(try JSONValueDecoder().decode(T.self, from: JSONValue(parsing: JSONValueEncoder().encodeText(value))) == value, sourceLocation: sourceLocation)
    }

    @Test func valuesOfTheTable() throws {
        try roundTrip(Scalars(int: -5, double: 0.1, float: 0.1, string: "q\"\\\u{1}é", bool: false, u8: 255, i8: -128,
                              i32: .min, u32: .max, i64: -9_007_199_254_740_991, u64: 9_007_199_254_740_991))
        try roundTrip(Optionals(a: nil, b: "x", c: [1, nil], d: Inner(name: "n", tags: []), e: nil))
        try roundTrip(Containers(rows: [[1, 2.5], []], map: ["a": 1], byNumber: [1: "one"], inner: Inner(name: "i", tags: ["t"]),
                                 list: [], json: .object(["k": .array([.null, .bool(true), .string("s")])])))
        try roundTrip(Shape.rectangle(width: 1, height: 2))
        try roundTrip(Shape.point)
        try roundTrip(Foundationish(date: Date(timeIntervalSinceReferenceDate: 123.5), data: Data("hello".utf8),
                                    url: URL(string: "https://example.com/a?b=c")!, level: .low))
        try roundTrip(Derived(id: 7, point: (1, 2), values: [1, nil], note: nil))
        try roundTrip(SuperUser(inner: Inner(name: "s", tags: []), first: Inner(name: "f", tags: ["x"])))
        try roundTrip(Tree.node([.leaf(1), .node([.leaf(2)])]))
        try expectSameJSON([Float(0.1), 1e-7, 3.4028235e38, 16_777_216, -0.0])
    }

    @Test func floatsAndBigIntegersAreWrittenExactly() throws {
        #expect(try JSONValueEncoder().encodeText([Float(0.1), 2.5, 3]) == "[0.1,2.5,3]")
        #expect(try JSONValueEncoder().encodeText([Int64.max, Int64.min]) == "[9223372036854775807,-9223372036854775808]")
        #expect(try JSONValueEncoder().encodeText([UInt64.max]) == "[18446744073709551615]")
    }

    @Test func refusesWhatJSONEncoderRefuses() throws {
        for value in [Double.nan, .infinity, -.infinity] {
            #expect(throws: EncodingError.self) { try JSONEncoder().encode([value]) }
            #expect(throws: EncodingError.self) { try JSONValueEncoder().encodeText([value]) }
        }
        #expect(throws: EncodingError.self) { try JSONValueEncoder().encode(["x": Float.nan]) }
        struct Silent: Encodable { func encode(to encoder: Encoder) throws {} }
        #expect(throws: EncodingError.self) { try JSONEncoder().encode(Silent()) }
        #expect(throws: EncodingError.self) { try JSONValueEncoder().encodeText(Silent()) }
        // Nested, a value that encodes nothing is an empty object, as JSONEncoder writes it.
        #expect(try JSONValueEncoder().encodeText(["a": Silent()]) == #"{"a":{}}"#)
        #expect(String(decoding: try JSONEncoder().encode(["a": Silent()]), as: UTF8.self) == #"{"a":{}}"#)
    }

    @Test func jsonValueEncodingNoLongerGoesThroughText() throws {
        struct Sleep: Encodable {
            var seconds: Double
            var steps: Int?
            var blocking: Bool?
        }
        let value = try JSONValue(encoding: Sleep(seconds: 0.25, steps: 3, blocking: nil))
        #expect(value == .object(["seconds": .number(0.25), "steps": .number(3)]))
        #expect(try value.decode(SleepJob.Parameters.self).steps == 3)
    }
}
