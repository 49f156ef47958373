import Foundation

/// Encodes `Encodable` values as a `JSONValue` or as compact JSON text, without Foundation's `JSONEncoder`.
///
/// Why: a producer's typed parameters become the envelope's payload (`JSONValue`) and a handler's result becomes
/// JSON text in the job hash; `JSONEncoder` then `JSONDecoder` made text only to parse it back. Follows
/// `JSONEncoder`'s defaults: `Data` as base64, `Date` as seconds since 2001, `URL` as its absolute string, NaN and
/// ±infinity refused (`EncodingError.invalidValue`), a value that encodes nothing is `{}` (and an error at the top).
/// A `Float` is written with its shortest text (`0.1`, not `0.10000000149011612`), and integers exactly.
public struct JSONValueEncoder: Sendable {
    /// Passed to the values being encoded (`Encoder.userInfo`).
    public var userInfo: [CodingUserInfoKey: any Sendable] = [:]

    public init() {}

    /// `value` as a `JSONValue` (numbers as doubles: an integer beyond ±2^53 is rounded, as any JSON reader would).
    public func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        try encodeNode(value).jsonValue
    }

    /// `value` as compact JSON text: members in the order the value encoded them, integers and floats exact.
    /// A value that writes its own text (`JSONTextWritable`: an inference answer, a `FloatMatrix`, `JSONText`) is
    /// written in one pass straight into the string, without a tree.
    public func encodeText<T: Encodable>(_ value: T) throws -> String {
        if let writable = value as? any JSONTextWritable { return writable.writtenJSONText }
        let node = try encodeNode(value)
        var out = ""
        out.reserveCapacity(256)
        node.write(to: &out)
        return out
    }

    private func encodeNode<T: Encodable>(_ value: T) throws -> EncodedNode {
        let root = JSONValueEncoding(parent: nil, key: nil, userInfo: userInfo)
        if let leaf = try root.leaf(value, key: nil) { return leaf }
        try value.encode(to: root)
        guard let node = root.node else {
            throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "Top-level \(T.self) did not encode any values."))
        }
        return node
    }
}

/// What an encoder built: a tree whose containers are references, so a container handed out can still be filled.
enum EncodedNode {
    case value(JSONValue)
    /// A number whose exact text differs from its double's (an integer beyond ±2^53, a `Decimal`).
    case exact(Double, String)
    /// Written with its shortest text (`0.1`); as a `JSONValue`, the double that text reads as.
    case float(Float)
    /// Written in one pass (`FloatMatrix.write`).
    case floatMatrix(FloatMatrix)
    /// Text written beforehand (`JSONText`), copied as it is.
    case text(JSONText)
    case array(EncodedArray)
    case object(EncodedObject)
    /// What a `superEncoder()` produced, read when the tree is.
    case deferred(JSONValueEncoding)

    var jsonValue: JSONValue {
        switch self {
        case .value(let value): return value
        case .exact(let number, _): return .number(number)
        case .float(let value): return .number(FloatText.readBack(value))
        case .floatMatrix(let matrix): return matrix.jsonValue
        case .text(let text): return (try? JSONValue(parsing: text.bytes)) ?? .null
        case .array(let array): return .array(array.items.map(\.jsonValue))
        case .object(let object):
            var members: [String: JSONValue] = [:]
            members.reserveCapacity(object.keys.count)
            for (key, value) in zip(object.keys, object.values) { members[key] = value.jsonValue }
            return .object(members)
        case .deferred(let encoder): return (encoder.node ?? .object(EncodedObject())).jsonValue
        }
    }

    func write(to out: inout String) {
        switch self {
        case .value(let value): value.write(to: &out)
        case .exact(_, let text): out += text
        case .float(let value): out += FloatText.string(value)
        case .floatMatrix(let matrix): out += matrix.writtenJSONText
        case .text(let text):
            out += String(decoding: text.bytes, as: UTF8.self)
        case .array(let array):
            out += "["
            for (index, item) in array.items.enumerated() {
                if index > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let object):
            out += "{"
            for index in object.keys.indices {
                if index > 0 { out += "," }
                JSONValue.writeString(object.keys[index], to: &out)
                out += ":"
                object.values[index].write(to: &out)
            }
            out += "}"
        case .deferred(let encoder): (encoder.node ?? .object(EncodedObject())).write(to: &out)
        }
    }
}

final class EncodedArray {
    var items: [EncodedNode] = []
}

/// Members in the order they were encoded; encoding a key again replaces its value (as `JSONEncoder` does).
final class EncodedObject {
    var keys: [String] = []
    var values: [EncodedNode] = []
    /// Positions by key, made once an object grows past a few members (most have a handful: a scan is cheaper).
    private var positions: [String: Int]?

    func set(_ key: String, _ value: EncodedNode) {
        if let positions {
            if let position = positions[key] {
                values[position] = value
                return
            }
        } else if let position = keys.firstIndex(of: key) {
            values[position] = value
            return
        }
        keys.append(key)
        values.append(value)
        if positions != nil {
            positions![key] = keys.count - 1
        } else if keys.count > 16 {
            positions = Dictionary(uniqueKeysWithValues: zip(keys, keys.indices))
        }
    }
}

/// The `Encoder` handed to `encode(to:)`. The coding path is built only when asked for.
final class JSONValueEncoding: Encoder {
    var node: EncodedNode?
    let parent: JSONValueEncoding?
    let key: (any CodingKey)?
    let options: [CodingUserInfoKey: any Sendable]

    init(parent: JSONValueEncoding?, key: (any CodingKey)?, userInfo: [CodingUserInfoKey: any Sendable]) {
        self.parent = parent
        self.key = key
        self.options = userInfo
    }

    var codingPath: [any CodingKey] {
        var path: [any CodingKey] = []
        var node: JSONValueEncoding? = self
        while let current = node {
            if let key = current.key { path.append(key) }
            node = current.parent
        }
        return path.reversed()
    }

    var userInfo: [CodingUserInfoKey: Any] { options }

    func child(_ key: any CodingKey) -> JSONValueEncoding { JSONValueEncoding(parent: self, key: key, userInfo: options) }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        let object: EncodedObject
        if case .object(let existing)? = node {
            object = existing
        } else {
            object = EncodedObject()
            node = .object(object)
        }
        return KeyedEncodingContainer(JSONValueKeyedEncodingContainer<Key>(encoder: self, object: object))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        let array: EncodedArray
        if case .array(let existing)? = node {
            array = existing
        } else {
            array = EncodedArray()
            node = .array(array)
        }
        return JSONValueUnkeyedEncodingContainer(encoder: self, array: array)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { JSONValueSingleEncodingContainer(encoder: self) }

    // MARK: - Values

    /// The node of `value` at `key` below this encoder.
    func box<T: Encodable>(_ value: T, key: any CodingKey) throws -> EncodedNode {
        if let leaf = try leaf(value, key: key) { return leaf }
        let child = child(key)
        try value.encode(to: child)
        return child.node ?? .object(EncodedObject())
    }

    /// The node of a value `JSONEncoder` writes its own way (or a leaf, without an encoder of its own); nil otherwise.
    func leaf<T: Encodable>(_ value: T, key: (any CodingKey)?) throws -> EncodedNode? {
        if T.self == JSONValue.self { return .value(value as! JSONValue) }
        if T.self == String.self { return .value(.string(value as! String)) }
        if T.self == Double.self { return try double(value as! Double, key: key) }
        if T.self == Float.self { return try float(value as! Float, key: key) }
        if T.self == Int.self { return integer(value as! Int) }
        if T.self == FloatMatrix.self { return .floatMatrix(value as! FloatMatrix) }
        if T.self == JSONText.self { return .text(value as! JSONText) }
        if T.self == Bool.self { return .value(.bool(value as! Bool)) }
        if T.self == Int64.self { return integer(value as! Int64) }
        if T.self == UInt64.self { return integer(value as! UInt64) }
        if T.self == Data.self { return .value(.string((value as! Data).base64EncodedString())) }
        if T.self == URL.self { return .value(.string((value as! URL).absoluteString)) }
        if T.self == Decimal.self {
            let decimal = value as! Decimal
            guard !decimal.isNaN else { throw invalid(value, "Unable to encode Decimal.nan directly in JSON.", key: key) }
            return .exact(NSDecimalNumber(decimal: decimal).doubleValue, "\(decimal)")
        }
        return nil
    }

    func invalid(_ value: Any, _ message: String, key: (any CodingKey)?) -> EncodingError {
        EncodingError.invalidValue(value, .init(codingPath: key.map { codingPath + [$0] } ?? codingPath, debugDescription: message))
    }

    func double(_ value: Double, key: (any CodingKey)?) throws -> EncodedNode {
        guard value.isFinite else { throw invalid(value, "Unable to encode Double.\(value) directly in JSON.", key: key) }
        return .value(.number(value))
    }

    func float(_ value: Float, key: (any CodingKey)?) throws -> EncodedNode {
        guard value.isFinite else { throw invalid(value, "Unable to encode Float.\(value) directly in JSON.", key: key) }
        return .float(value)
    }

    func integer<T: BinaryInteger>(_ value: T) -> EncodedNode {
        let number = Double(value)
        if number.magnitude < exactIntegerLimit { return .value(.number(number)) }
        return .exact(number, String(value))
    }
}

struct JSONValueKeyedEncodingContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let encoder: JSONValueEncoding
    let object: EncodedObject
    var codingPath: [any CodingKey] { encoder.codingPath }

    mutating func encodeNil(forKey key: Key) throws { object.set(key.stringValue, .value(.null)) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { object.set(key.stringValue, .value(.bool(value))) }
    mutating func encode(_ value: String, forKey key: Key) throws { object.set(key.stringValue, .value(.string(value))) }
    mutating func encode(_ value: Double, forKey key: Key) throws { object.set(key.stringValue, try encoder.double(value, key: key)) }
    mutating func encode(_ value: Float, forKey key: Key) throws { object.set(key.stringValue, try encoder.float(value, key: key)) }
    mutating func encode(_ value: Int, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { object.set(key.stringValue, encoder.integer(value)) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { object.set(key.stringValue, try encoder.box(value, key: key)) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let nested = EncodedObject()
        object.set(key.stringValue, .object(nested))
        return KeyedEncodingContainer(JSONValueKeyedEncodingContainer<NestedKey>(encoder: encoder.child(key), object: nested))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let nested = EncodedArray()
        object.set(key.stringValue, .array(nested))
        return JSONValueUnkeyedEncodingContainer(encoder: encoder.child(key), array: nested)
    }

    mutating func superEncoder() -> any Encoder {
        let child = encoder.child(JSONIndexKey.superKey)
        object.set(JSONIndexKey.superKey.stringValue, .deferred(child))
        return child
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let child = encoder.child(key)
        object.set(key.stringValue, .deferred(child))
        return child
    }
}

struct JSONValueUnkeyedEncodingContainer: UnkeyedEncodingContainer {
    let encoder: JSONValueEncoding
    let array: EncodedArray
    var codingPath: [any CodingKey] { encoder.codingPath }
    var count: Int { array.items.count }
    private var nextKey: JSONIndexKey { JSONIndexKey(index: array.items.count) }

    init(encoder: JSONValueEncoding, array: EncodedArray) {
        self.encoder = encoder
        self.array = array
    }

    mutating func encodeNil() throws { array.items.append(.value(.null)) }
    mutating func encode(_ value: Bool) throws { array.items.append(.value(.bool(value))) }
    mutating func encode(_ value: String) throws { array.items.append(.value(.string(value))) }
    mutating func encode(_ value: Double) throws { array.items.append(try encoder.double(value, key: nextKey)) }
    mutating func encode(_ value: Float) throws { array.items.append(try encoder.float(value, key: nextKey)) }
    mutating func encode(_ value: Int) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: Int8) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: Int16) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: Int32) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: Int64) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: UInt) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: UInt8) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: UInt16) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: UInt32) throws { array.items.append(encoder.integer(value)) }
    mutating func encode(_ value: UInt64) throws { array.items.append(encoder.integer(value)) }
    mutating func encode<T: Encodable>(_ value: T) throws { array.items.append(try encoder.box(value, key: nextKey)) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let key = nextKey
        let nested = EncodedObject()
        array.items.append(.object(nested))
        return KeyedEncodingContainer(JSONValueKeyedEncodingContainer<NestedKey>(encoder: encoder.child(key), object: nested))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let key = nextKey
        let nested = EncodedArray()
        array.items.append(.array(nested))
        return JSONValueUnkeyedEncodingContainer(encoder: encoder.child(key), array: nested)
    }

    mutating func superEncoder() -> any Encoder {
        let child = encoder.child(nextKey)
        array.items.append(.deferred(child))
        return child
    }
}

struct JSONValueSingleEncodingContainer: SingleValueEncodingContainer {
    let encoder: JSONValueEncoding
    var codingPath: [any CodingKey] { encoder.codingPath }

    mutating func encodeNil() throws { encoder.node = .value(.null) }
    mutating func encode(_ value: Bool) throws { encoder.node = .value(.bool(value)) }
    mutating func encode(_ value: String) throws { encoder.node = .value(.string(value)) }
    mutating func encode(_ value: Double) throws { encoder.node = try encoder.double(value, key: nil) }
    mutating func encode(_ value: Float) throws { encoder.node = try encoder.float(value, key: nil) }
    mutating func encode(_ value: Int) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: Int8) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: Int16) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: Int32) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: Int64) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: UInt) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: UInt8) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: UInt16) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: UInt32) throws { encoder.node = encoder.integer(value) }
    mutating func encode(_ value: UInt64) throws { encoder.node = encoder.integer(value) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        if let leaf = try encoder.leaf(value, key: nil) {
            encoder.node = leaf
        } else {
            // Encoded through this very encoder: its containers land here (as JSONEncoder does).
            try value.encode(to: encoder)
            if encoder.node == nil { encoder.node = .object(EncodedObject()) }
        }
    }
}

/// A value whose JSON text was written beforehand, in one pass, by code that knows its shape (an inference result's
/// top-k table): `JSONValueEncoder` copies the text as it is instead of building a node per number. Any other
/// encoder gets the parsed value.
public struct JSONText: JSONTextWritable, Sendable, Equatable {
    /// UTF-8 JSON text of one value; the writer guarantees it is valid.
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    public var jsonTextCapacity: Int { bytes.count }

    public func writeJSONText(to cursor: inout JSONTextCursor) { cursor.raw(bytes) }

    public func encode(to encoder: any Encoder) throws {
        try JSONValue(parsing: bytes).encode(to: encoder)
    }
}
