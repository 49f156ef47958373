import Foundation

#if _endian(big)
#error("SafetensorsFile assumes a little-endian host")
#endif

/// A set of named tensors in the safetensors format (https://huggingface.co/docs/safetensors).
///
/// Layout: 8-byte little-endian header length `N`, `N` bytes of JSON
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`),
/// then the data section; offsets are relative to the data section.
///
/// Supported dtypes: `F32`, `F16`, `I8` (read and write); `F64` and `BF16` are
/// read and converted to FP32. Int8 tensors written by this type store their
/// per-output-channel scales in a companion `F32` tensor named `"<name>_scale"`;
/// on reading, an `I8` tensor with such a companion is recombined (the companion
/// is removed from `tensors`), an `I8` tensor without one gets scales of 1.
///
/// Parsing is hardened: the header length must fit in the file and be at most
/// `maxHeaderBytes`, the JSON must parse, every tensor's offsets must lie in
/// the data section, must not overlap, and must match dtype × shape.
public struct SafetensorsFile: Sendable, Equatable {
    /// Tensors by name.
    public var tensors: [String: Tensor]
    /// The free-form `__metadata__` string map.
    public var metadata: [String: String]

    /// Largest accepted JSON header (100 MB).
    public static let maxHeaderBytes = 100_000_000
    /// Suffix of the companion tensor holding int8 scales.
    public static let int8ScaleSuffix = "_scale"

    /// Creates a file from tensors and metadata.
    public init(tensors: [String: Tensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Reads and validates a file.
    public init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw ComputeError.io("cannot read safetensors file \(url.path): \(error.localizedDescription)")
        }
        try self.init(data: data)
    }

    /// Parses and validates an in-memory safetensors buffer.
    public init(data: Data) throws {
        let parsed = try data.withUnsafeBytes { raw in try SafetensorsFile.parse(raw) }
        self.tensors = parsed.tensors
        self.metadata = parsed.metadata
    }

    /// Tensor names, sorted.
    public var names: [String] { tensors.keys.sorted() }

    /// Returns the named tensor or throws `ComputeError.missingTensor`.
    public func tensor(named name: String) throws -> Tensor {
        guard let t = tensors[name] else {
            throw ComputeError.missingTensor("no tensor named \"\(name)\" (have: \(names.joined(separator: ", ")))")
        }
        return t
    }

    /// Serialises to the safetensors byte layout (header padded with spaces to 8 bytes).
    public func serialized() throws -> Data {
        var entries: [(name: String, dtype: String, shape: [Int], bytes: Data)] = []
        for name in names {
            guard let t = tensors[name] else { continue }
            switch t.storage {
            case .float32(let v):
                entries.append((name, "F32", t.shape, v.withUnsafeBytes { Data($0) }))
            case .float16(let v):
                entries.append((name, "F16", t.shape, v.withUnsafeBytes { Data($0) }))
            case .int8(let v, let scales):
                let scaleName = name + SafetensorsFile.int8ScaleSuffix
                guard tensors[scaleName] == nil else {
                    throw ComputeError.invalidArgument("cannot write int8 tensor \"\(name)\": its scale tensor name \"\(scaleName)\" is already used")
                }
                entries.append((name, "I8", t.shape, v.withUnsafeBytes { Data($0) }))
                entries.append((scaleName, "F32", [scales.count], scales.withUnsafeBytes { Data($0) }))
            }
        }
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = ["dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.bytes.count]] as [String: Any]
            offset += e.bytes.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for e in entries { out.append(e.bytes) }
        return out
    }

    /// Writes the file atomically.
    public func write(to url: URL) throws {
        let bytes = try serialized()
        do {
            try bytes.write(to: url, options: .atomic)
        } catch {
            throw ComputeError.io("cannot write safetensors file \(url.path): \(error.localizedDescription)")
        }
    }

    // MARK: - Parsing

    /// One tensor as a header declares it.
    public struct HeaderEntry: Sendable, Equatable {
        public var name: String
        /// `F32`, `F16`, `I8`, `F64` or `BF16`.
        public var dtype: String
        public var shape: [Int]
        /// Byte range within the data section.
        public var begin: Int
        public var end: Int
    }
    private typealias Entry = HeaderEntry

    /// Parses and checks a header's JSON (the `n` bytes after the length): a JSON object, string metadata, every
    /// tensor's dtype, shape and `data_offsets` (the byte count its dtype and shape need), no two tensors
    /// overlapping, and, when `dataSize` is given, every tensor inside a data section of that many bytes. The
    /// entries come in the header's order of keys as read.
    public static func parseHeader(json headerBytes: Data, dataSize: Int?) throws -> (entries: [HeaderEntry], metadata: [String: String]) {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: headerBytes, options: [])
        } catch {
            throw ComputeError.invalidFormat("safetensors header is not valid JSON: \(error.localizedDescription)")
        }
        guard let header = object as? [String: Any] else {
            throw ComputeError.invalidFormat("safetensors header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw ComputeError.invalidFormat("safetensors __metadata__ is not a JSON object")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw ComputeError.invalidFormat("safetensors __metadata__ value for \"\(k)\" is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            guard let info = value as? [String: Any] else {
                throw ComputeError.invalidFormat("safetensors entry \"\(name)\" is not a JSON object")
            }
            guard let dtype = info["dtype"] as? String else {
                throw ComputeError.invalidFormat("tensor \"\(name)\" has no string \"dtype\"")
            }
            guard let shapeAny = info["shape"] as? [Any] else {
                throw ComputeError.invalidFormat("tensor \"\(name)\" has no \"shape\" array")
            }
            let shape = try shapeAny.map { d -> Int in
                guard let i = exactNonNegativeInt(d) else {
                    throw ComputeError.invalidFormat("tensor \"\(name)\" has an invalid dimension \(d) in its shape")
                }
                return i
            }
            guard let offs = info["data_offsets"] as? [Any], offs.count == 2,
                  let begin = exactNonNegativeInt(offs[0]), let end = exactNonNegativeInt(offs[1]) else {
                throw ComputeError.invalidFormat("tensor \"\(name)\" needs \"data_offsets\": [begin, end] of non-negative integers")
            }
            guard begin <= end else {
                throw ComputeError.invalidFormat("tensor \"\(name)\" has data_offsets [\(begin), \(end)] with begin after end")
            }
            if let dataSize, end > dataSize {
                throw ComputeError.invalidFormat("tensor \"\(name)\" data_offsets [\(begin), \(end)] run past the end of the \(dataSize)-byte data section")
            }
            guard let width = elementWidth(dtype) else {
                throw ComputeError.unsupportedDType("tensor \"\(name)\" has dtype \"\(dtype)\"; supported: F32, F16, I8 (read-only: F64, BF16)")
            }
            let count: Int
            do { count = try Tensor.elementCount(of: shape) } catch {
                throw ComputeError.invalidFormat("tensor \"\(name)\" has an invalid shape \(shape)")
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: width)
            guard !overflow, bytes == end - begin else {
                throw ComputeError.invalidFormat("tensor \"\(name)\" is \(dtype) \(shape) = \(count) × \(width) bytes, but data_offsets [\(begin), \(end)] span \(end - begin) bytes")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
        }
        let sorted = entries.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.begin < a.end {
            throw ComputeError.invalidFormat("tensors \"\(a.name)\" [\(a.begin), \(a.end)] and \"\(b.name)\" [\(b.begin), \(b.end)] overlap")
        }
        return (entries, metadata)
    }

    private static func parse(_ raw: UnsafeRawBufferPointer) throws -> (tensors: [String: Tensor], metadata: [String: String]) {
        guard raw.count >= 8 else {
            throw ComputeError.invalidFormat("safetensors buffer is \(raw.count) bytes, too short for the 8-byte header length")
        }
        let headerLength = raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard headerLength <= UInt64(maxHeaderBytes) else {
            throw ComputeError.invalidFormat("safetensors header length \(headerLength) exceeds the \(maxHeaderBytes)-byte limit")
        }
        guard headerLength <= UInt64(raw.count - 8) else {
            throw ComputeError.invalidFormat("safetensors header length \(headerLength) runs past the end of the \(raw.count)-byte file")
        }
        guard headerLength >= 2 else {
            throw ComputeError.invalidFormat("safetensors header length \(headerLength) is too small for a JSON object")
        }
        let n = Int(headerLength)
        let headerBytes = Data(UnsafeRawBufferPointer(rebasing: raw[8..<(8 + n)]))
        let dataStart = 8 + n
        let (entries, metadata) = try parseHeader(json: headerBytes, dataSize: raw.count - dataStart)

        var tensors: [String: Tensor] = [:]
        for e in entries {
            let bytes = UnsafeRawBufferPointer(rebasing: raw[(dataStart + e.begin)..<(dataStart + e.end)])
            tensors[e.name] = try decode(e, bytes)
        }
        // Recombine int8 tensors with their scale companions.
        for e in entries where e.dtype == "I8" {
            guard case .int8(let values, _)? = tensors[e.name]?.storage else { continue }
            let scaleName = e.name + int8ScaleSuffix
            var scales = [Float](repeating: 1, count: e.shape.first ?? 1)
            if let s = tensors[scaleName], s.dtype == .float32 {
                let sv = s.floats()
                guard sv.count == scales.count else {
                    throw ComputeError.shapeMismatch("int8 tensor \"\(e.name)\" has \(scales.count) output channels but \"\(scaleName)\" holds \(sv.count) scales")
                }
                scales = sv
                tensors[scaleName] = nil
            }
            tensors[e.name] = try Tensor(shape: e.shape, int8: values, scales: scales)
        }
        return (tensors, metadata)
    }

    private static func exactNonNegativeInt(_ value: Any) -> Int? {
        // JSON true/false may bridge to numbers; reject them explicitly.
        if type(of: value) == Bool.self { return nil }
        if let i = value as? Int { return i >= 0 ? i : nil }
        if let d = value as? Double, d >= 0, d <= 9.0e15, d == d.rounded() { return Int(d) }
        return nil
    }

    private static func elementWidth(_ dtype: String) -> Int? {
        switch dtype {
        case "F32": return 4
        case "F16", "BF16": return 2
        case "I8": return 1
        case "F64": return 8
        default: return nil
        }
    }

    private static func decode(_ e: Entry, _ bytes: UnsafeRawBufferPointer) throws -> Tensor {
        func copy<T>(_: T.Type) -> [T] {
            let n = bytes.count / MemoryLayout<T>.stride
            return [T](unsafeUninitializedCapacity: n) { buf, initialized in
                if n > 0 { UnsafeMutableRawBufferPointer(buf).copyMemory(from: bytes) }
                initialized = n
            }
        }
        switch e.dtype {
        case "F32":
            return try Tensor(shape: e.shape, float32: copy(Float.self))
        case "F16":
            return try Tensor(shape: e.shape, float16: copy(Float16.self))
        case "I8":
            let v = copy(Int8.self)
            return try Tensor(shape: e.shape, int8: v, scales: [Float](repeating: 1, count: e.shape.first ?? 1))
        case "F64":
            return try Tensor(shape: e.shape, float32: copy(Double.self).map { Float($0) })
        case "BF16":
            return try Tensor(shape: e.shape, float32: copy(UInt16.self).map { Float(bitPattern: UInt32($0) << 16) })
        default:
            throw ComputeError.unsupportedDType("tensor \"\(e.name)\" has dtype \"\(e.dtype)\"")
        }
    }
}
