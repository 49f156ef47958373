import Foundation

/// A row-major float32 matrix in a result: rows of JSON numbers (`[[0.1, 2.5], …]`), or a tensor object
/// `{"dtype": "float32", "shape": [rows, columns], "data": "<base64 of little-endian bytes>"}` (NumPy:
/// `np.frombuffer(base64.b64decode(data), "<f4").reshape(shape)`).
///
/// `JSONValueEncoder` writes it in one pass into a byte buffer (shortest float32 text, `FloatText`), not one
/// node and one `String` per number.
public struct FloatMatrix: Encodable, Sendable, Equatable {
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
        switch encoding {
        case .numbers:
            out.reserveCapacity(out.count + values.count * 12 + rows * 3 + 2)
            out.append(UInt8(ascii: "["))
            values.withUnsafeBufferPointer { values in
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: FloatText.maxFloatLength + 4) { scratch in
                    let buffer = scratch.baseAddress!
                    for r in 0..<rows {
                        out.append(r == 0 ? UInt8(ascii: "[") : UInt8(ascii: ","))
                        if r > 0 { out.append(UInt8(ascii: "[")) }
                        for c in 0..<columns {
                            var count = 0
                            if c > 0 {
                                buffer[0] = UInt8(ascii: ",")
                                count = 1
                            }
                            count += FloatText.write(values[r * columns + c], to: buffer + count)
                            out.append(contentsOf: UnsafeBufferPointer(start: buffer, count: count))
                        }
                        out.append(UInt8(ascii: "]"))
                    }
                }
            }
            out.append(UInt8(ascii: "]"))
        case .float32Base64:
            out.append(contentsOf: #"{"dtype":"float32","shape":["#.utf8)
            out.append(contentsOf: "\(rows),\(columns)],\"data\":\"".utf8)
            var littleEndian = values
            #if _endian(big)
            for i in littleEndian.indices { littleEndian[i] = Float(bitPattern: littleEndian[i].bitPattern.littleEndian) }
            #endif
            littleEndian.withUnsafeBytes { FloatMatrix.base64(of: $0, into: &out) }
            out.append(contentsOf: "\"}".utf8)
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
        let symbols: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        let table = symbols.utf8Start
        let input = bytes.bindMemory(to: UInt8.self)
        let start = out.count
        out.append(contentsOf: repeatElement(UInt8(ascii: "="), count: (input.count + 2) / 3 * 4))
        out.withUnsafeMutableBufferPointer { buffer in
            var o = start, i = 0
            while i + 3 <= input.count {
                let word = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                buffer[o] = table[Int(word >> 18)]
                buffer[o + 1] = table[Int((word >> 12) & 63)]
                buffer[o + 2] = table[Int((word >> 6) & 63)]
                buffer[o + 3] = table[Int(word & 63)]
                i += 3
                o += 4
            }
            let rest = input.count - i
            if rest > 0 {
                let word = UInt32(input[i]) << 16 | (rest == 2 ? UInt32(input[i + 1]) << 8 : 0)
                buffer[o] = table[Int(word >> 18)]
                buffer[o + 1] = table[Int((word >> 12) & 63)]
                if rest == 2 { buffer[o + 2] = table[Int((word >> 6) & 63)] }
            }
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
