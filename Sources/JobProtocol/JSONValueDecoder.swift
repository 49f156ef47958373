import Foundation

/// Decodes `Decodable` values straight from a parsed `JSONValue`: no JSON text in between.
///
/// Why: a worker has the payload parsed already (the envelope parser made the `JSONValue`); going back to text and
/// through Foundation's `JSONDecoder` parsed it a second time at several times the cost. The errors are
/// `DecodingError`s of the same kinds and coding paths as `JSONDecoder`'s (Foundation's default strategies: `Data`
/// as base64, `Date` as seconds since 2001, `URL` as a string), so messages built from them read the same.
///
/// Differences, on purpose:
/// - A `JSONValue` number is a `Double`, so an integer whose magnitude is 2^53 (9007199254740992) or more may no
///   longer be the one that was sent; decoding it into an integer type throws `DecodingError.dataCorrupted` instead
///   of answering a neighbour (Foundation, reading text, reads it exactly).
/// - A number that does not fit the type (1.5 or 300 for a `UInt8`, 1e39 for a `Float`) is `dataCorrupted` at the
///   field's coding path; Foundation reports it at the top ("The given data was not valid JSON").
/// - An object with a key twice keeps the last value (the farm's parser does, as JavaScript does); Foundation the first.
public struct JSONValueDecoder: Sendable {
    /// Passed to the values being decoded (`Decoder.userInfo`).
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    public init() {}

    /// Decodes a `T` from `value`.
    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        let decoder = JSONValueDecoding(value: value, parent: nil, key: nil, userInfo: userInfo)
        return try decoder.unwrap(value, as: T.self)
    }
}

/// Integers read from a `Double` are exact below this magnitude (2^53).
let exactIntegerLimit: Double = 9_007_199_254_740_992

/// The `Decoder` handed to `init(from:)`. The coding path is a chain of parents, built only when asked for
/// (errors, or a type that reads `codingPath`).
final class JSONValueDecoding: Decoder {
    let value: JSONValue
    let parent: JSONValueDecoding?
    let key: (any CodingKey)?
    let options: [CodingUserInfoKey: any Sendable]

    init(value: JSONValue, parent: JSONValueDecoding?, key: (any CodingKey)?, userInfo: [CodingUserInfoKey: any Sendable]) {
        self.value = value
        self.parent = parent
        self.key = key
        self.options = userInfo
    }

    var codingPath: [any CodingKey] {
        var path: [any CodingKey] = []
        var node: JSONValueDecoding? = self
        while let current = node {
            if let key = current.key { path.append(key) }
            node = current.parent
        }
        return path.reversed()
    }

    var userInfo: [CodingUserInfoKey: Any] { options }

    func path(appending key: (any CodingKey)?) -> [any CodingKey] {
        guard let key else { return codingPath }
        return codingPath + [key]
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        switch value {
        case .object(let members):
            return KeyedDecodingContainer(JSONValueKeyedContainer<Key>(decoder: self, members: members))
        case .null:
            throw DecodingError.valueNotFound([String: Any].self, .init(
                codingPath: codingPath, debugDescription: "Cannot get keyed decoding container -- found null value instead"))
        default:
            throw mismatch([String: Any].self, value, path: codingPath)
        }
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        switch value {
        case .array(let items):
            return JSONValueUnkeyedContainer(decoder: self, items: items)
        case .null:
            throw DecodingError.valueNotFound([Any].self, .init(
                codingPath: codingPath, debugDescription: "Cannot get unkeyed decoding container -- found null value instead"))
        default:
            throw mismatch([Any].self, value, path: codingPath)
        }
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { JSONValueSingleContainer(decoder: self) }

    /// A child decoder for the value at `key` of this one.
    func child(_ value: JSONValue, key: any CodingKey) -> JSONValueDecoding {
        JSONValueDecoding(value: value, parent: self, key: key, userInfo: options)
    }

    // MARK: - Values

    /// Decodes `value`, which sits at `key` below this decoder (nil: this decoder's own value).
    func unwrap<T: Decodable>(_ value: JSONValue, as type: T.Type, key: (any CodingKey)? = nil) throws -> T {
        // Types Foundation's JSONDecoder decodes its own way, and the leaves, without a decoder of their own.
        if T.self == JSONValue.self { return value as! T }
        if T.self == String.self { return try string(value, key: key) as! T }
        if T.self == Double.self { return try double(value, key: key) as! T }
        if T.self == Int.self { return try integer(value, Int.self, key: key) as! T }
        if T.self == Bool.self { return try bool(value, key: key) as! T }
        if T.self == Float.self { return try float(value, key: key) as! T }
        if T.self == Data.self { return try data(value, key: key) as! T }
        if T.self == URL.self { return try url(value, key: key) as! T }
        if T.self == Decimal.self { return try decimal(value, key: key) as! T }
        if let key { return try T(from: child(value, key: key)) }
        return try T(from: self)
    }

    func mismatch(_ type: Any.Type, _ value: JSONValue, path: [any CodingKey]) -> DecodingError {
        DecodingError.typeMismatch(type, .init(
            codingPath: path, debugDescription: "Expected to decode \(type) but found \(value.kindDescription) instead."))
    }

    func notFound(_ type: Any.Type, key: (any CodingKey)?) -> DecodingError {
        DecodingError.valueNotFound(type, .init(codingPath: path(appending: key), debugDescription: "Expected \(type) value but found null instead."))
    }

    func corrupted(_ message: String, key: (any CodingKey)?) -> DecodingError {
        DecodingError.dataCorrupted(.init(codingPath: path(appending: key), debugDescription: message))
    }

    func string(_ value: JSONValue, key: (any CodingKey)?) throws -> String {
        if case .string(let text) = value { return text }
        if case .null = value { throw notFound(String.self, key: key) }
        throw mismatch(String.self, value, path: path(appending: key))
    }

    func bool(_ value: JSONValue, key: (any CodingKey)?) throws -> Bool {
        if case .bool(let flag) = value { return flag }
        // A null is a type mismatch here, not a missing value: what JSONDecoder says for Bool (only).
        throw mismatch(Bool.self, value, path: path(appending: key))
    }

    func number<T>(_ value: JSONValue, _ type: T.Type, key: (any CodingKey)?) throws -> Double {
        switch value {
        case .number(let number):
            guard number.isFinite else {
                throw corrupted("Number \(number) is not representable in Swift.", key: key)
            }
            return number
        case .null: throw notFound(T.self, key: key)
        default: throw mismatch(T.self, value, path: path(appending: key))
        }
    }

    func double(_ value: JSONValue, key: (any CodingKey)?) throws -> Double {
        try number(value, Double.self, key: key)
    }

    func float(_ value: JSONValue, key: (any CodingKey)?) throws -> Float {
        let number = try self.number(value, Float.self, key: key)
        let result = Float(number)
        // Beyond Float's range, or so small it would read as 0.
        guard result.isFinite, result != 0 || number == 0 else {
            throw corrupted("Parsed JSON number <\(number)> does not fit in Float.", key: key)
        }
        return result
    }

    func integer<T: FixedWidthInteger>(_ value: JSONValue, _ type: T.Type, key: (any CodingKey)?) throws -> T {
        let number = try self.number(value, T.self, key: key)
        guard let result = T(exactly: number) else {
            throw corrupted("Parsed JSON number <\(JSONValue.number(number).jsonText)> does not fit in \(T.self).", key: key)
        }
        guard number.magnitude < exactIntegerLimit else {
            throw corrupted("Parsed JSON number <\(JSONValue.number(number).jsonText)> is beyond ±2^53 (9007199254740992), where a JSON number is not read exactly; send a smaller integer (or a string).", key: key)
        }
        return result
    }

    func data(_ value: JSONValue, key: (any CodingKey)?) throws -> Data {
        let text = try string(value, key: key)
        guard let data = Data(base64Encoded: text) else { throw corrupted("Encountered Data is not valid Base64.", key: key) }
        return data
    }

    func url(_ value: JSONValue, key: (any CodingKey)?) throws -> URL {
        let text = try string(value, key: key)
        guard let url = URL(string: text) else { throw corrupted("Invalid URL string.", key: key) }
        return url
    }

    func decimal(_ value: JSONValue, key: (any CodingKey)?) throws -> Decimal {
        let number = try double(value, key: key)
        // The shortest text of the double: 0.1 reads as 0.1, not 0.1000000000000000055…
        guard let decimal = Decimal(string: "\(number)", locale: Locale(identifier: "en_US_POSIX")) else {
            throw corrupted("Parsed JSON number <\(number)> is not a Decimal.", key: key)
        }
        return decimal
    }
}

extension JSONValue {
    /// "a string", "a number", … for error messages (decoding errors, the dispatcher's validation problems).
    public var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// The key of an array element in coding paths: "Index 3", as Foundation's `JSONDecoder` names it.
struct JSONIndexKey: CodingKey {
    let index: Int
    var intValue: Int? { index }
    /// Made when asked for (error messages): not for every element decoded.
    var stringValue: String { "Index \(index)" }
    init(index: Int) { self.index = index }
    init?(stringValue: String) { return nil }
    init?(intValue: Int) { self.init(index: intValue) }
    /// `super`, for `superDecoder()`.
    static let superKey = JSONStringKey("super")
}

/// A key made from a string (`super`, and what `superDecoder` is asked for).
struct JSONStringKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ text: String) { stringValue = text }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

struct JSONValueKeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: JSONValueDecoding
    let members: [String: JSONValue]

    var codingPath: [any CodingKey] { decoder.codingPath }
    var allKeys: [Key] { members.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

    func value(_ key: Key) throws -> JSONValue {
        guard let value = members[key.stringValue] else {
            throw DecodingError.keyNotFound(key, .init(
                codingPath: decoder.codingPath, debugDescription: "No value associated with key \(key) (\"\(key.stringValue)\")."))
        }
        return value
    }

    func decodeNil(forKey key: Key) throws -> Bool { try value(key) == .null }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decoder.bool(value(key), key: key) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try decoder.string(value(key), key: key) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decoder.double(value(key), key: key) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try decoder.float(value(key), key: key) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try decoder.integer(value(key), type, key: key) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try decoder.integer(value(key), type, key: key) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try decoder.unwrap(value(key), as: T.self, key: key) }

    // The `IfPresent` forms without a second lookup: absent or null is nil.
    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? { try present(key) { try decoder.bool($0, key: key) } }
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? { try present(key) { try decoder.string($0, key: key) } }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? { try present(key) { try decoder.double($0, key: key) } }
    func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? { try present(key) { try decoder.float($0, key: key) } }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { try present(key) { try decoder.integer($0, type, key: key) } }
    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? { try present(key) { try decoder.integer($0, type, key: key) } }
    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? { try present(key) { try decoder.integer($0, type, key: key) } }
    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        try present(key) { try decoder.unwrap($0, as: T.self, key: key) }
    }

    private func present<T>(_ key: Key, _ read: (JSONValue) throws -> T) throws -> T? {
        guard let value = members[key.stringValue], value != .null else { return nil }
        return try read(value)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        let value = try nested(key)
        return try decoder.child(value, key: key).container(keyedBy: NestedKey.self)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        let value = try nested(key)
        return try decoder.child(value, key: key).unkeyedContainer()
    }

    private func nested(_ key: Key) throws -> JSONValue {
        guard let value = members[key.stringValue] else {
            throw DecodingError.keyNotFound(key, .init(
                codingPath: decoder.codingPath, debugDescription: "Cannot get nested container -- no value found for key \(key) (\"\(key.stringValue)\")"))
        }
        return value
    }

    func superDecoder() throws -> any Decoder {
        decoder.child(members[JSONIndexKey.superKey.stringValue] ?? .null, key: JSONIndexKey.superKey)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        decoder.child(members[key.stringValue] ?? .null, key: key)
    }
}

struct JSONValueUnkeyedContainer: UnkeyedDecodingContainer {
    let decoder: JSONValueDecoding
    let items: [JSONValue]
    private(set) var currentIndex = 0

    init(decoder: JSONValueDecoding, items: [JSONValue]) {
        self.decoder = decoder
        self.items = items
    }

    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    /// The next element and its key; throws `valueNotFound` at the end.
    private func next<T>(_ type: T.Type) throws -> (JSONValue, JSONIndexKey) {
        let key = JSONIndexKey(index: currentIndex)
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(T.self, .init(codingPath: decoder.codingPath + [key], debugDescription: "Unkeyed container is at end."))
        }
        return (items[currentIndex], key)
    }

    mutating func decodeNil() throws -> Bool {
        let (value, _) = try next(Any?.self)
        if value == .null {
            currentIndex += 1
            return true
        }
        return false
    }

    /// Reads the next element with `body`; `type` names what was expected when there is none.
    private mutating func read<T, Result>(_ type: T.Type, _ body: (JSONValueDecoding, JSONValue, JSONIndexKey) throws -> Result) throws -> Result {
        let (value, key) = try next(T.self)
        let result = try body(decoder, value, key)
        currentIndex += 1
        return result
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try read(type) { try $0.bool($1, key: $2) } }
    mutating func decode(_ type: String.Type) throws -> String { try read(type) { try $0.string($1, key: $2) } }
    mutating func decode(_ type: Double.Type) throws -> Double { try read(type) { try $0.double($1, key: $2) } }
    mutating func decode(_ type: Float.Type) throws -> Float { try read(type) { try $0.float($1, key: $2) } }
    mutating func decode(_ type: Int.Type) throws -> Int { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try read(type) { try $0.integer($1, type, key: $2) } }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try read(type) { try $0.unwrap($1, as: T.self, key: $2) } }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try read([String: Any].self) { try $0.child($1, key: $2).container(keyedBy: NestedKey.self) }
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try read([Any].self) { try $0.child($1, key: $2).unkeyedContainer() }
    }

    mutating func superDecoder() throws -> any Decoder {
        try read((any Decoder).self) { $0.child($1, key: $2) }
    }
}

struct JSONValueSingleContainer: SingleValueDecodingContainer {
    let decoder: JSONValueDecoding
    var codingPath: [any CodingKey] { decoder.codingPath }
    var value: JSONValue { decoder.value }

    func decodeNil() -> Bool { value == .null }
    func decode(_ type: Bool.Type) throws -> Bool { try decoder.bool(value, key: nil) }
    func decode(_ type: String.Type) throws -> String { try decoder.string(value, key: nil) }
    func decode(_ type: Double.Type) throws -> Double { try decoder.double(value, key: nil) }
    func decode(_ type: Float.Type) throws -> Float { try decoder.float(value, key: nil) }
    func decode(_ type: Int.Type) throws -> Int { try decoder.integer(value, type, key: nil) }
    func decode(_ type: Int8.Type) throws -> Int8 { try decoder.integer(value, type, key: nil) }
    func decode(_ type: Int16.Type) throws -> Int16 { try decoder.integer(value, type, key: nil) }
    func decode(_ type: Int32.Type) throws -> Int32 { try decoder.integer(value, type, key: nil) }
    func decode(_ type: Int64.Type) throws -> Int64 { try decoder.integer(value, type, key: nil) }
    func decode(_ type: UInt.Type) throws -> UInt { try decoder.integer(value, type, key: nil) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try decoder.integer(value, type, key: nil) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try decoder.integer(value, type, key: nil) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try decoder.integer(value, type, key: nil) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try decoder.integer(value, type, key: nil) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.unwrap(value, as: T.self) }
}
