import Foundation

/// Element types read from and written to `.npy` files (little-endian only);
/// raw values are NumPy `descr` strings.
public enum NpyDType: String, Sendable, CaseIterable {
    case float32 = "<f4"
    case float16 = "<f2"
    case float64 = "<f8"
    case int32 = "<i4"
    case int64 = "<i8"

    /// Bytes per element.
    public var byteWidth: Int {
        switch self {
        case .float16: return 2
        case .float32, .int32: return 4
        case .float64, .int64: return 8
        }
    }
}

/// Typed element storage of an `NpyArray` (one case per `NpyDType`).
public enum NpyStorage: Sendable, Equatable {
    case float32([Float])
    case float16([Float16])
    case float64([Double])
    case int32([Int32])
    case int64([Int64])
}

/// A C-ordered NumPy array loaded from or saved to the `.npy` format (versions 1.0, 2.0 and 3.0).
///
/// Fortran-ordered and big-endian arrays are rejected with `ComputeError`.
public struct NpyArray: Sendable, Equatable {
    /// Dimensions (empty for a 0-d array).
    public let shape: [Int]
    /// The elements in C order.
    public let storage: NpyStorage

    /// Creates an array, checking the element count against `shape`.
    public init(shape: [Int], storage: NpyStorage) throws {
        let n = try Tensor.elementCount(of: shape)
        let have: Int
        switch storage {
        case .float32(let v): have = v.count
        case .float16(let v): have = v.count
        case .float64(let v): have = v.count
        case .int32(let v): have = v.count
        case .int64(let v): have = v.count
        }
        guard have == n else { throw ComputeError.shapeMismatch("npy shape \(shape) needs \(n) elements, got \(have)") }
        self.shape = shape
        self.storage = storage
    }

    /// Reads a `.npy` file.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw ComputeError.io("cannot read npy file \(url.path): \(error.localizedDescription)")
        }
        try self.init(data: data)
    }

    /// Parses `.npy` bytes.
    public init(data: Data) throws {
        let header = try NpyHeader.parse(prefix: data)
        let count = try Tensor.elementCount(of: header.shape)
        let needed = count * header.dtype.byteWidth
        guard data.count - header.dataOffset >= needed else {
            throw ComputeError.invalidFormat("npy data is \(data.count - header.dataOffset) bytes, shape \(header.shape) of \(header.dtype.rawValue) needs \(needed)")
        }
        let body = data.subdata(in: (data.startIndex + header.dataOffset)..<(data.startIndex + header.dataOffset + needed))
        try self.init(shape: header.shape, storage: NpyHeader.decode(body, dtype: header.dtype, count: count))
    }

    /// Element type.
    public var dtype: NpyDType {
        switch storage {
        case .float32: return .float32
        case .float16: return .float16
        case .float64: return .float64
        case .int32: return .int32
        case .int64: return .int64
        }
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }

    /// All elements as Float (FP16 through the F16C kernels; wider types rounded).
    public func floats() -> [Float] {
        switch storage {
        case .float32(let v): return v
        case .float16(let v): return FP16Conversion.toFloat32(v)
        case .float64(let v): return v.map { Float($0) }
        case .int32(let v): return v.map { Float($0) }
        case .int64(let v): return v.map { Float($0) }
        }
    }

    /// All elements as Double (exact for every supported type except int64 beyond 2⁵³).
    public func doubles() -> [Double] {
        switch storage {
        case .float32(let v): return v.map { Double($0) }
        case .float16(let v): return FP16Conversion.toFloat32(v).map { Double($0) }
        case .float64(let v): return v
        case .int32(let v): return v.map { Double($0) }
        case .int64(let v): return v.map { Double($0) }
        }
    }

    /// The array as a `Tensor` (FP32 and FP16 kept, other types converted to FP32).
    public func tensor() throws -> Tensor {
        if case .float16(let v) = storage { return try Tensor(shape: shape, float16: v) }
        return try Tensor(shape: shape, float32: floats())
    }

    /// Serialises as `.npy` version 1.0 (2.0 when the header needs it).
    public func serialized() -> Data {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = "{'descr': '\(dtype.rawValue)', 'fortran_order': False, 'shape': \(shapeText), }"
        let v1 = 10 + dict.utf8.count + 1 <= 65_535 + 10
        let prefix = v1 ? 10 : 12
        let total = ((prefix + dict.utf8.count + 1 + 63) / 64) * 64
        dict += String(repeating: " ", count: total - prefix - dict.utf8.count - 1) + "\n"
        var out = Data([0x93] + Array("NUMPY".utf8) + [v1 ? 1 : 2, 0])
        if v1 {
            withUnsafeBytes(of: UInt16(dict.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        } else {
            withUnsafeBytes(of: UInt32(dict.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        }
        out.append(contentsOf: Array(dict.utf8))
        switch storage {
        case .float32(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
        case .float16(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
        case .float64(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
        case .int32(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
        case .int64(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        return out
    }

    /// Writes the array to `url`.
    public func write(to url: URL) throws {
        do { try serialized().write(to: url, options: .atomic) } catch {
            throw ComputeError.io("cannot write npy file \(url.path): \(error.localizedDescription)")
        }
    }
}

/// A block of rows from `NpyRowReader`.
public struct NpyRowBlock: Sendable, Equatable {
    /// Index of the block's first row.
    public let firstRow: Int
    /// Rows in the block.
    public let rowCount: Int
    /// `rowCount × rowLength` values converted to Float.
    public let values: [Float]
}

/// Streams the rows (first dimension) of a large `.npy` file in blocks, converting to Float.
///
/// A reference type because it owns an open file; use it from one task.
public final class NpyRowReader {
    /// Shape of the whole array.
    public let shape: [Int]
    /// Element type on disk.
    public let dtype: NpyDType
    /// Elements per row (product of the trailing dimensions).
    public let rowLength: Int
    /// Rows per block.
    public let rowsPerBlock: Int

    private let source: ByteSource
    private var nextRow = 0

    /// Opens `url` and parses its header.
    public init(url: URL, rowsPerBlock: Int = 4096) throws {
        guard rowsPerBlock >= 1 else { throw ComputeError.invalidArgument("rowsPerBlock must be >= 1, got \(rowsPerBlock)") }
        let handle: FileHandle
        do { handle = try FileHandle(forReadingFrom: url) } catch {
            throw ComputeError.io("cannot open npy file \(url.path): \(error.localizedDescription)")
        }
        source = .file(handle)
        var prefix = try source.readExactly(12, what: "npy header")
        let headerLength = try NpyHeader.headerLength(prefix)
        prefix.append(try source.readExactly(headerLength.dataOffset - 12, what: "npy header"))
        let header = try NpyHeader.parse(prefix: prefix)
        guard !header.shape.isEmpty else { throw ComputeError.invalidFormat("a 0-d npy array has no rows to stream") }
        shape = header.shape
        dtype = header.dtype
        rowLength = header.shape.dropFirst().reduce(1, *)
        self.rowsPerBlock = rowsPerBlock
    }

    /// Number of rows.
    public var rowCount: Int { shape[0] }

    /// The next block, or nil after the last row.
    public func next() throws -> NpyRowBlock? {
        guard nextRow < rowCount else { return nil }
        let n = min(rowsPerBlock, rowCount - nextRow)
        let bytes = try source.readExactly(n * rowLength * dtype.byteWidth, what: "npy rows \(nextRow)..<\(nextRow + n)")
        let values: [Float]
        switch try NpyHeader.decode(bytes, dtype: dtype, count: n * rowLength) {
        case .float32(let v): values = v
        case .float16(let v): values = FP16Conversion.toFloat32(v)
        case .float64(let v): values = v.map { Float($0) }
        case .int32(let v): values = v.map { Float($0) }
        case .int64(let v): values = v.map { Float($0) }
        }
        defer { nextRow += n }
        return NpyRowBlock(firstRow: nextRow, rowCount: n, values: values)
    }
}

/// `.npy` header parsing shared by `NpyArray` and `NpyRowReader`.
enum NpyHeader {
    struct Parsed {
        var dtype: NpyDType
        var shape: [Int]
        var dataOffset: Int
    }

    /// Version and total header size (magic + length + dict) from the first 12 bytes.
    static func headerLength(_ data: Data) throws -> (version: UInt8, dataOffset: Int) {
        let b = [UInt8](data.prefix(12))
        guard b.count >= 10, b[0] == 0x93, Array(b[1..<6]) == Array("NUMPY".utf8) else {
            throw ComputeError.invalidFormat("not an .npy file (missing \\x93NUMPY magic)")
        }
        switch b[6] {
        case 1:
            return (1, 10 + Int(UInt16(b[8]) | UInt16(b[9]) << 8))
        case 2, 3:
            guard b.count >= 12 else { throw ComputeError.invalidFormat("npy v\(b[6]) header is truncated") }
            let n = UInt32(b[8]) | UInt32(b[9]) << 8 | UInt32(b[10]) << 16 | UInt32(b[11]) << 24
            guard n <= 100_000_000 else { throw ComputeError.invalidFormat("npy header length \(n) is implausibly large") }
            return (b[6], 12 + Int(n))
        default:
            throw ComputeError.invalidFormat("unsupported npy format version \(b[6]).\(b[7])")
        }
    }

    static func parse(prefix data: Data) throws -> Parsed {
        let (_, dataOffset) = try headerLength(data)
        guard data.count >= dataOffset else {
            throw ComputeError.invalidFormat("npy header needs \(dataOffset) bytes, file has \(data.count)")
        }
        let start = data.startIndex + (dataOffset > 10 && data[data.startIndex + 6] != 1 ? 12 : 10)
        let text = String(decoding: data[start..<(data.startIndex + dataOffset)], as: UTF8.self)
        guard let descr = stringValue(of: "descr", in: text) else {
            throw ComputeError.invalidFormat("npy header has no 'descr': \(text.trimmingSpaces())")
        }
        guard let fortran = rawValue(of: "fortran_order", in: text) else {
            throw ComputeError.invalidFormat("npy header has no 'fortran_order'")
        }
        if fortran.hasPrefix("True") {
            throw ComputeError.invalidFormat("npy array is stored in Fortran order; only C order is supported (save with np.ascontiguousarray)")
        }
        guard fortran.hasPrefix("False") else { throw ComputeError.invalidFormat("npy 'fortran_order' is \(fortran)") }
        guard let dtype = NpyDType(rawValue: descr) else {
            throw ComputeError.unsupportedDType("npy dtype '\(descr)'; supported: <f4, <f2, <f8, <i4, <i8 (little-endian)")
        }
        guard let shapeText = rawValue(of: "shape", in: text), shapeText.hasPrefix("("),
              let close = shapeText.firstIndex(of: ")") else {
            throw ComputeError.invalidFormat("npy header has no 'shape' tuple")
        }
        let inner = shapeText[shapeText.index(after: shapeText.startIndex)..<close]
        var shape: [Int] = []
        for part in inner.split(separator: ",") {
            let t = part.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            guard let d = Int(t.hasSuffix("L") ? String(t.dropLast()) : t), d >= 0 else {
                throw ComputeError.invalidFormat("npy shape entry '\(t)' is not a non-negative integer")
            }
            shape.append(d)
        }
        return Parsed(dtype: dtype, shape: shape, dataOffset: dataOffset)
    }

    /// Decodes little-endian element bytes.
    static func decode(_ data: Data, dtype: NpyDType, count: Int) throws -> NpyStorage {
        func copy<T>(_: T.Type) -> [T] {
            [T](unsafeUninitializedCapacity: count) { buf, initialized in
                data.withUnsafeBytes { raw in
                    UnsafeMutableRawBufferPointer(buf).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[0..<(count * MemoryLayout<T>.stride)]))
                }
                initialized = count
            }
        }
        guard data.count >= count * dtype.byteWidth else {
            throw ComputeError.invalidFormat("npy data truncated: \(data.count) bytes for \(count) × \(dtype.byteWidth)")
        }
        switch dtype {
        case .float32: return .float32(copy(Float.self))
        case .float16: return .float16(copy(Float16.self))
        case .float64: return .float64(copy(Double.self))
        case .int32: return .int32(copy(Int32.self))
        case .int64: return .int64(copy(Int64.self))
        }
    }

    /// The text after `'key':`, trimmed.
    private static func rawValue(of key: String, in text: String) -> Substring? {
        for quote in ["'", "\""] {
            if let r = text.range(of: "\(quote)\(key)\(quote)") {
                var rest = text[r.upperBound...].drop { $0 == " " }
                guard rest.first == ":" else { continue }
                rest = rest.dropFirst().drop { $0 == " " }
                return rest
            }
        }
        return nil
    }

    private static func stringValue(of key: String, in text: String) -> String? {
        guard let v = rawValue(of: key, in: text), let q = v.first, q == "'" || q == "\"" else { return nil }
        let body = v.dropFirst()
        guard let end = body.firstIndex(of: q) else { return nil }
        return String(body[..<end])
    }
}
