import Foundation

/// A row-major float32 matrix in a result: rows of JSON numbers (`[[0.1, 2.5], …]`), or a tensor object
/// `{"dtype": "float32", "shape": [rows, columns], "data": "<base64 of little-endian bytes>"}` (NumPy:
/// `np.frombuffer(base64.b64decode(data), "<f4").reshape(shape)`).
///
/// `JSONValueEncoder` writes it in one pass into a byte buffer (shortest float32 text, `FloatText`), not one
/// node and one `String` per number.
public struct FloatMatrix: JSONTextWritable, Sendable, Equatable {
    /// How the values are written.
    public enum Encoding: Sendable, Equatable {
        /// Rows of JSON numbers.
        case numbers
        /// A tensor object with base64 data.
        case float32Base64
    }

    public var rows: Int
    public var columns: Int
    /// `rows × columns` values, row-major.
    public var values: [Float]
    public var encoding: Encoding

    public init(rows: Int, columns: Int, values: [Float], encoding: Encoding = .numbers) {
        precondition(values.count == rows * columns, "a \(rows)×\(columns) matrix needs \(rows * columns) values, got \(values.count)")
        self.rows = rows
        self.columns = columns
        self.values = values
        self.encoding = encoding
    }

    /// The compact JSON text of the matrix, appended to `out`.
    public func write(to out: inout [UInt8]) {
        appendJSONText(to: &out)
    }

    /// At most how many bytes the matrix's text takes.
    public var jsonTextCapacity: Int {
        switch encoding {
        case .numbers: return 2 + rows * 3 + values.count * (FloatText.maxFloatLength + 1)
        case .float32Base64: return 64 + 2 * JSONTextCursor.maxIntegerLength + JSONTextCursor.base64Length(values.count * 4)
        }
    }

    /// Writes the matrix's compact JSON text: rows of shortest float32 texts, or the tensor object with its base64
    /// written in one pass (vectorised where the CPU allows).
    public func writeJSONText(to cursor: inout JSONTextCursor) {
        switch encoding {
        case .numbers:
            cursor.byte(UInt8(ascii: "["))
            values.withUnsafeBufferPointer { values in
                for r in 0..<rows {
                    cursor.raw(r == 0 ? "[" : ",[")
                    for c in 0..<columns {
                        if c > 0 { cursor.byte(UInt8(ascii: ",")) }
                        cursor.float(values[r * columns + c])
                    }
                    cursor.byte(UInt8(ascii: "]"))
                }
            }
            cursor.byte(UInt8(ascii: "]"))
        case .float32Base64:
            cursor.raw(#"{"dtype":"float32","shape":["#)
            cursor.integer(rows)
            cursor.byte(UInt8(ascii: ","))
            cursor.integer(columns)
            cursor.raw(#"],"data":""#)
            #if _endian(big)
            let littleEndian = values.map { Float(bitPattern: $0.bitPattern.littleEndian) }
            littleEndian.withUnsafeBytes { cursor.base64($0) }
            #else
            values.withUnsafeBytes { cursor.base64($0) }
            #endif
            cursor.raw(#""}"#)
        }
    }

    /// The matrix as a `JSONValue` (numbers as the doubles their shortest text reads as).
    public var jsonValue: JSONValue {
        switch encoding {
        case .numbers:
            return .array((0..<rows).map { r in
                .array((0..<columns).map { c in .number(FloatText.readBack(values[r * columns + c])) })
            })
        case .float32Base64:
            var out: [UInt8] = []
            values.withUnsafeBytes { FloatMatrix.base64(of: $0, into: &out) }
            return .object([
                "dtype": .string("float32"), "shape": .array([.number(Double(rows)), .number(Double(columns))]),
                "data": .string(String(decoding: out, as: UTF8.self)),
            ])
        }
    }

    /// For encoders other than `JSONValueEncoder`: the same shape, value by value.
    public func encode(to encoder: any Encoder) throws {
        switch encoding {
        case .numbers:
            var outer = encoder.unkeyedContainer()
            for r in 0..<rows {
                var inner = outer.nestedUnkeyedContainer()
                for c in 0..<columns { try inner.encode(values[r * columns + c]) }
            }
        case .float32Base64:
            try jsonValue.encode(to: encoder)
        }
    }

    /// Appends the base64 text (padded, standard alphabet) of `bytes` to `out`.
    public static func base64(of bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        let start = out.count, length = JSONTextCursor.base64Length(bytes.count)
        out.append(contentsOf: repeatElement(UInt8(ascii: "="), count: length))
        out.withUnsafeMutableBufferPointer { buffer in
            var cursor = JSONTextCursor(UnsafeMutableBufferPointer(rebasing: buffer[start...]))
            cursor.base64(bytes)
        }
    }
}

extension FloatText {
    /// The double a JSON reader gets from the text of `value`.
    public static func readBack(_ value: Float) -> Double {
        guard value.isFinite else { return .nan }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maxFloatLength) { buffer in
            let count = write(value, to: buffer.baseAddress!)
            return parseDouble(UnsafeBufferPointer(rebasing: buffer[0..<count])) ?? Double(value)
        }
    }
}
