import JobProtocol

/// A matrix sent as bytes: `{"dtype": "float32"|"float16", "shape": [rows, width], "data": "<base64>"}`, the
/// values little-endian and row-major (what NumPy's `ndarray.tobytes()` gives on every common machine).
public struct TensorPayload: Sendable, Equatable {
    /// The element types a tensor may carry.
    public enum DType: String, Sendable, CaseIterable {
        case float32, float16
        /// Bytes per element.
        public var size: Int { self == .float32 ? 4 : 2 }
    }

    public var dtype: DType
    public var rows: Int
    public var width: Int
    /// The base64 text, still encoded: decoded once, into the buffer that needs the values (`decode(into:)`).
    public var data: String
    /// Pointer of this tensor in the payload (`/inputs`), for the messages of `decode(into:)`.
    public var pointer: String

    /// Elements (`rows × width`).
    public var count: Int { rows * width }

    /// Reads a tensor object at `pointer`, collecting its problems (dtype, shape, the data's length).
    static func parse(_ members: [String: JSONValue], at pointer: String, problems: inout [PayloadProblem]) -> TensorPayload? {
        let before = problems.count
        func at(_ member: String) -> String { PayloadPointer.appending(pointer, member) }
        for key in members.keys.sorted() where !["dtype", "shape", "data"].contains(key) {
            problems.append(PayloadProblem(at(key), "unknown member; a tensor has dtype, shape and data"))
        }
        var dtype: DType?
        switch members["dtype"] {
        case .string(let text):
            dtype = DType(rawValue: text)
            if dtype == nil { problems.append(PayloadProblem(at("dtype"), "dtype '\(text.prefix(32))' is not float32 or float16")) }
        case nil: problems.append(PayloadProblem(at("dtype"), "required: \"float32\" or \"float16\""))
        case .some(let other): problems.append(PayloadProblem(at("dtype"), "must be \"float32\" or \"float16\", got \(other.kindDescription)"))
        }
        var shape: [Int]?
        switch members["shape"] {
        case .array(let items):
            let sizes = items.map { $0.intValue }
            if items.count == 2, let rows = sizes[0], let width = sizes[1], rows >= 1, width >= 1, rows <= 1 << 24, width <= 1 << 24 {
                shape = [rows, width]
            } else {
                problems.append(PayloadProblem(at("shape"), "must be [rows, width], two whole numbers 1…16777216, got \(JSONValue.array(items).jsonText.prefix(64))"))
            }
        case nil: problems.append(PayloadProblem(at("shape"), "required: [rows, width]"))
        case .some(let other): problems.append(PayloadProblem(at("shape"), "must be [rows, width], got \(other.kindDescription)"))
        }
        var data: String?
        switch members["data"] {
        case .string(let text): data = text
        case nil: problems.append(PayloadProblem(at("data"), "required: base64 of the little-endian values (numpy: base64.b64encode(array.tobytes()))"))
        case .some(let other): problems.append(PayloadProblem(at("data"), "must be a base64 string, got \(other.kindDescription)"))
        }
        guard problems.count == before, let dtype, let shape, var data else { return nil }
        let expected = shape[0] * shape[1] * dtype.size
        let decoded = data.withUTF8 { Base64.decodedCount($0) }
        guard let decoded else {
            problems.append(PayloadProblem(at("data"), "is \(data.utf8.count) characters, not a multiple of 4: not padded base64"))
            return nil
        }
        guard decoded == expected else {
            problems.append(PayloadProblem(at("data"), "holds \(decoded) bytes, but shape [\(shape[0]), \(shape[1])] of \(dtype.rawValue) needs \(expected) (\(shape[0] * shape[1]) values × \(dtype.size) bytes)"))
            return nil
        }
        return TensorPayload(dtype: dtype, rows: shape[0], width: shape[1], data: data, pointer: pointer)
    }

    /// Decodes the data into `output` (`count × dtype.size` bytes), as stored (little-endian); throws a
    /// `PayloadProblem` at `/inputs/data` when the text is not base64.
    public func decode(into output: UnsafeMutableRawBufferPointer) throws {
        var text = data
        let result: Base64.Failure? = text.withUTF8 { bytes in
            do throws(Base64.Failure) {
                try Base64.decode(bytes, into: output)
                return nil
            } catch {
                return error
            }
        }
        switch result {
        case nil: break
        case .badCharacter(let offset, let byte)?:
            let shown = byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
            throw PayloadProblem(PayloadPointer.appending(pointer, "data"), "is not base64: character \(offset) is \(shown) (the alphabet is A–Z a–z 0–9 + / with = padding at the end)")
        case .badLength(let count)?:
            throw PayloadProblem(PayloadPointer.appending(pointer, "data"), "is \(count) characters, not a multiple of 4: not padded base64")
        }
    }

    /// The values as float32, decoded (and, from float16, converted) — for the dispatcher's checks and for callers
    /// without a faster converter. The worker decodes float32 straight into its input buffer instead.
    public func floats() throws -> [Float] {
        switch dtype {
        case .float32:
            var values = [Float](repeating: 0, count: count)
            try values.withUnsafeMutableBytes { try decode(into: $0) }
            #if _endian(big)
            for i in values.indices { values[i] = Float(bitPattern: UInt32(littleEndian: values[i].bitPattern)) }
            #endif
            return values
        case .float16:
            var halves = [UInt16](repeating: 0, count: count)
            try halves.withUnsafeMutableBytes { try decode(into: $0) }
            return halves.map { Float(Float16(bitPattern: UInt16(littleEndian: $0))) }
        }
    }
}

extension PayloadProblem: Error {}


/// The `inference` payload: a model reference and input rows, as JSON numbers or a tensor.
public struct InferencePayload: KindPayload {
    public static let kind = "inference"

    /// How the result carries `logits` and `probabilities`.
    public enum OutputFormat: String, Sendable {
        /// Arrays of rows of numbers (the default).
        case json
        /// Tensor objects like the input's (`dtype` float32, base64 data).
        case binary
    }

    /// The rows, in the form they came.
    public enum Inputs: Sendable {
        /// `[[number]]`, read into float32, row-major (`rows × width`).
        case values([Float])
        /// A tensor object, decoded later straight into the buffer the forward pass reads.
        case tensor(TensorPayload)
    }

    /// `name`, `name:7`, `name:production`, `name:latest`.
    public var model: String
    public var inputs: Inputs
    public var rows: Int
    /// Features per row.
    public var width: Int
    /// `fp32`, `fp16`, `int8`; default: the stored model's precision.
    public var precision: String?
    /// Classes per row in `topK` (default 3).
    public var topK: Int?
    /// Include the raw logits (default true).
    public var returnLogits: Bool?
    /// Include every class probability (default false; top-k always has them).
    public var returnProbabilities: Bool?
    public var outputFormat: OutputFormat

    /// Members an `inference` payload may have.
    public static let members = ["model", "inputs", "precision", "topK", "returnLogits", "returnProbabilities", "outputFormat"]

    public init(parsing payload: JSONValue) throws(PayloadError) {
        var problems: [PayloadProblem] = []
        guard case .object(let fields) = payload else {
            throw PayloadError(kind: Self.kind, problems: [PayloadProblem("", "must be an object with 'model' and 'inputs', got \(payload.kindDescription)")])
        }
        for key in fields.keys.sorted() where !Self.members.contains(key) {
            problems.append(PayloadProblem(PayloadPointer.appending("", key), "unknown member; an inference payload has \(Self.members.joined(separator: ", "))"))
        }
        var model = ""
        switch fields["model"] {
        case .string(let text) where !text.isEmpty: model = text
        case nil: problems.append(PayloadProblem("/model", "required: a model reference such as \"digits-mlp:production\""))
        case .some(let other): problems.append(PayloadProblem("/model", "must be a model reference such as \"digits-mlp:production\", got \(other == .string("") ? "an empty string" : other.kindDescription)"))
        }
        var inputs = Inputs.values([])
        var rows = 0, width = 0
        switch fields["inputs"] {
        case .array(let items):
            if let values = Self.readRows(items, problems: &problems) {
                inputs = .values(values.values)
                rows = items.count
                width = values.width
            }
        case .object(let members):
            if let tensor = TensorPayload.parse(members, at: "/inputs", problems: &problems) {
                inputs = .tensor(tensor)
                rows = tensor.rows
                width = tensor.width
            }
        case nil:
            problems.append(PayloadProblem("/inputs", "required: rows of numbers ([[0.1, 0.2], …]) or a tensor {\"dtype\": \"float32\", \"shape\": [rows, width], \"data\": \"<base64>\"}"))
        case .some(let other):
            problems.append(PayloadProblem("/inputs", "must be rows of numbers or a tensor object, got \(other.kindDescription)"))
        }
        func optional<T>(_ key: String, _ what: String, _ read: (JSONValue) -> T?) -> T? {
            guard let value = fields[key], value != .null else { return nil }
            guard let result = read(value) else {
                problems.append(PayloadProblem(PayloadPointer.appending("", key), "must be \(what), got \(value.jsonText.prefix(64))"))
                return nil
            }
            return result
        }
        switch fields["precision"] {
        case nil, .null?: precision = nil
        case .string(let text)? where ["fp32", "fp16", "int8"].contains(text.lowercased()): precision = text
        case .string(let text)?: problems.append(PayloadProblem("/precision", "precision '\(text.prefix(32))' is not fp32, fp16 or int8"))
        case .some(let other): problems.append(PayloadProblem("/precision", "must be fp32, fp16 or int8, got \(other.kindDescription)"))
        }
        topK = optional("topK", "a whole number ≥ 1") { value in value.intValue.flatMap { $0 >= 1 ? $0 : nil } }
        returnLogits = optional("returnLogits", "true or false") { if case .bool(let b) = $0 { return b } else { return nil } }
        returnProbabilities = optional("returnProbabilities", "true or false") { if case .bool(let b) = $0 { return b } else { return nil } }
        outputFormat = optional("outputFormat", "\"json\" or \"binary\"") { $0.stringValue.flatMap(OutputFormat.init(rawValue:)) } ?? .json
        guard problems.isEmpty else { throw PayloadError(kind: Self.kind, problems: problems) }
        self.model = model
        self.inputs = inputs
        self.rows = rows
        self.width = width
    }

    /// Every problem of `payload`, its tensor's data decoded and checked for non-finite values too (what the
    /// worker finds after decoding, before it looks at the model).
    public static func problems(in payload: JSONValue) -> [PayloadProblem] {
        do {
            let parsed = try InferencePayload(parsing: payload)
            if case .tensor(let tensor) = parsed.inputs {
                let values = try tensor.floats()
                if let problem = values.withUnsafeBufferPointer({ nonFinite(in: $0, width: tensor.width, pointer: tensor.pointer) }) {
                    return [problem]
                }
            }
            return []
        } catch let error as PayloadError {
            return error.problems
        } catch let problem as PayloadProblem {
            return [problem]
        } catch {
            return [PayloadProblem("", "\(error)")]
        }
    }

    /// The first value of a decoded tensor that is NaN or infinite, as a problem naming its row and feature.
    public static func nonFinite(in values: UnsafeBufferPointer<Float>, width: Int, pointer: String) -> PayloadProblem? {
        guard let index = firstNonFinite(values) else { return nil }
        return PayloadProblem(PayloadPointer.appending(pointer, "data"),
                              "row \(index / width) feature \(index % width) is \(values[index]); inputs must be finite")
    }

    /// The index of the first NaN or infinity. Blocks of 64 values are checked with integer operations the compiler
    /// vectorises (an exponent of all ones carries into the sign bit when 2^23 is added to it); only a block with
    /// such a value is scanned one by one.
    static func firstNonFinite(_ values: UnsafeBufferPointer<Float>) -> Int? {
        values.withMemoryRebound(to: UInt32.self) { bits in
            var start = 0
            while start < bits.count {
                let end = min(start + 64, bits.count)
                var carried: UInt32 = 0
                for i in start..<end { carried |= (bits[i] & 0x7F80_0000) &+ 0x0080_0000 }
                if carried & 0x8000_0000 != 0 { return (start..<end).first { !values[$0].isFinite } }
                start = end
            }
            return nil
        }
    }

    /// `[[number]]` → float32 row-major, every problem with its pointer (`/inputs/3`, `/inputs/3/7`).
    /// Numbers may also be the strings "NaN", "Infinity", "-Infinity" (JSON has no literal for them): such inputs
    /// are refused as not finite, naming the row and feature, instead of as a parse error.
    static func readRows(_ items: [JSONValue], problems: inout [PayloadProblem]) -> (values: [Float], width: Int)? {
        guard !items.isEmpty else {
            problems.append(PayloadProblem("/inputs", "is empty: give at least one row"))
            return nil
        }
        let before = problems.count
        var width = -1
        var values: [Float] = []
        let limit = 20  // problems reported per payload, beyond which the rest are summed up
        var extra = 0
        func report(_ pointer: String, _ detail: String) {
            if problems.count - before < limit { problems.append(PayloadProblem(pointer, detail)) } else { extra += 1 }
        }
        for (index, row) in items.enumerated() {
            var rowPointer: String { PayloadPointer.appending("/inputs", index) }  // built only for a problem
            guard case .array(let numbers) = row else {
                report(rowPointer, "row \(index) is \(row.kindDescription), not an array of numbers")
                continue
            }
            if width < 0 {
                width = numbers.count
                if width == 0 { report(rowPointer, "row 0 is empty: give each row's features") }
                values.reserveCapacity(items.count * width)
            } else if numbers.count != width {
                report(rowPointer, "row \(index) has \(numbers.count) values, row 0 has \(width): every row needs the same number of features")
                continue
            }
            for (column, value) in numbers.enumerated() {
                let number: Double
                switch value {
                case .number(let n): number = n
                case .string(let text):
                    switch text.lowercased() {
                    case "nan": number = .nan
                    case "infinity", "inf", "+infinity": number = .infinity
                    case "-infinity", "-inf": number = -.infinity
                    default:
                        report(PayloadPointer.appending(rowPointer, column), "row \(index) feature \(column) is \"\(text.prefix(32))\", not a number")
                        continue
                    }
                default:
                    report(PayloadPointer.appending(rowPointer, column), "row \(index) feature \(column) is \(value.kindDescription), not a number")
                    continue
                }
                let single = Float(number)
                if !single.isFinite {
                    report(PayloadPointer.appending(rowPointer, column), "row \(index) feature \(column) is \(number)\(number.isFinite ? " (overflows float32)" : ""); inputs must be finite")
                    continue
                }
                values.append(single)
            }
        }
        if extra > 0 { problems.append(PayloadProblem("/inputs", "and \(extra) more problems like these")) }
        return problems.count == before ? (values, width) : nil
    }
}
