import Foundation
import Hummingbird
import JobPayloads
import JobProtocol

/// One Open Inference Protocol (KServe v2) inference request, read from its body: the JSON header and, with the
/// binary tensor data extension, the raw tensor bytes after it (`Inference-Header-Content-Length` bytes of JSON).
///
/// A JobFarm model has one input, `input` (`[rows, features]`, FP32 or FP16), and two outputs, `logits` and
/// `probabilities` (`[rows, classes]`, FP32). The input becomes the tensor object of an `inference` payload
/// (`{"dtype", "shape", "data": base64}`): binary FP32 and FP16 bytes go as they came, JSON numbers as float32.
struct InferenceRequestV2: Sendable {
    /// The name of the model's one input tensor.
    static let inputName = "input"
    /// The names of the outputs, in the order they are answered.
    static let outputNames = ["logits", "probabilities"]

    /// The request's `id`, echoed in the answer.
    var id: String?
    var rows: Int
    var width: Int
    /// The `inputs` member of the `inference` payload: a tensor object.
    var tensor: JSONValue
    /// The outputs asked for, in answer order, each as binary data or JSON numbers.
    var outputs: [(name: String, binary: Bool)]

    /// Reads a request body. `headerLength`: the `Inference-Header-Content-Length` header (nil: the whole body is JSON).
    /// Every problem is a `Problem` (400) whose detail names the member at fault.
    static func parse(_ body: UnsafeRawBufferPointer, headerLength: Int?) throws(Problem) -> InferenceRequestV2 {
        let jsonLength = headerLength ?? body.count
        guard jsonLength >= 0, jsonLength <= body.count else {
            throw bad("Inference-Header-Content-Length is \(jsonLength) but the body has \(body.count) bytes: it must give the length of the JSON header that starts the body")
        }
        let header: JSONValue
        do {
            header = try JSONParser.parse(bytes: UnsafeBufferPointer(rebasing: body.assumingMemoryBound(to: UInt8.self)[0..<jsonLength]))
        } catch {
            throw bad("the inference request is not valid JSON: \(error.message) at byte \(error.offset)"
                      + (headerLength == nil ? " (binary tensor data needs the header Inference-Header-Content-Length)" : ""))
        }
        guard case .object(let members) = header else {
            throw bad("the inference request must be a JSON object with \"inputs\", got \(header.kindDescription)")
        }
        var id: String?
        switch members["id"] {
        case nil, .null?: break
        case .string(let text)?: id = text
        case .some(let other): throw bad("\"id\" must be a string, got \(other.kindDescription)")
        }
        let parameters = try Self.parameters(members["parameters"], at: "\"parameters\"")
        var binaryOutput = false
        switch parameters["binary_data_output"] {
        case nil: break
        case .bool(let flag)?: binaryOutput = flag
        case .some(let other): throw bad("parameter \"binary_data_output\" must be true or false, got \(other.jsonText.prefix(32))")
        }
        guard case .array(let inputs)? = members["inputs"] else {
            throw bad("\"inputs\" is required: an array with the one input '\(inputName)' ({\"name\", \"shape\", \"datatype\", \"data\"})")
        }
        guard inputs.count == 1 else {
            throw bad("\"inputs\" has \(inputs.count) tensors; the model has one input, '\(inputName)'")
        }
        let binary = UnsafeRawBufferPointer(rebasing: body[jsonLength...])
        let (rows, width, tensor, used) = try Self.input(inputs[0], binary: binary, bodyBytes: body.count)
        guard used == binary.count else {
            throw bad("the body has \(binary.count) bytes after the JSON header, but the inputs' binary_data_size add up to \(used)")
        }

        var outputs: [(name: String, binary: Bool)] = []
        switch members["outputs"] {
        case nil, .null?:
            outputs = outputNames.map { ($0, binaryOutput) }
        case .array(let items)?:
            for (index, item) in items.enumerated() {
                guard case .object(let output) = item, case .string(let name)? = output["name"] else {
                    throw bad("outputs[\(index)] must be an object with a \"name\" (\(outputNames.joined(separator: " or ")))")
                }
                guard outputNames.contains(name) else {
                    throw bad("outputs[\(index)]: the model has no output '\(name.prefix(64))'; its outputs are \(outputNames.joined(separator: " and "))")
                }
                guard !outputs.contains(where: { $0.name == name }) else { throw bad("outputs[\(index)]: '\(name)' is asked twice") }
                let outputParameters = try Self.parameters(output["parameters"], at: "outputs[\(index)].parameters")
                if let count = outputParameters["class_count"], count != .number(0) {
                    throw bad("outputs[\(index)]: the classification extension (class_count) is not supported; ask for '\(name)' and take the top classes from it")
                }
                var flag = binaryOutput
                switch outputParameters["binary_data"] {
                case nil: break
                case .bool(let value)?: flag = value
                case .some(let other): throw bad("outputs[\(index)].parameters.binary_data must be true or false, got \(other.jsonText.prefix(32))")
                }
                outputs.append((name, flag))
            }
            if outputs.isEmpty { outputs = outputNames.map { ($0, binaryOutput) } }
            outputs.sort { outputNames.firstIndex(of: $0.name)! < outputNames.firstIndex(of: $1.name)! }
        case .some(let other):
            throw bad("\"outputs\" must be an array of {\"name\", \"parameters\"}, got \(other.kindDescription)")
        }
        return InferenceRequestV2(id: id, rows: rows, width: width, tensor: tensor, outputs: outputs)
    }

    /// A `parameters` object (absent: empty).
    static func parameters(_ value: JSONValue?, at place: String) throws(Problem) -> [String: JSONValue] {
        switch value {
        case nil, .null?: return [:]
        case .object(let members)?: return members
        case .some(let other): throw bad("\(place) must be an object, got \(other.kindDescription)")
        }
    }

    /// The input tensor: its rows, width, the payload's tensor object, and the binary bytes it took.
    static func input(_ value: JSONValue, binary: UnsafeRawBufferPointer, bodyBytes: Int) throws(Problem) -> (Int, Int, JSONValue, Int) {
        guard case .object(let input) = value else { throw bad("inputs[0] must be an object with name, shape, datatype and data") }
        guard case .string(let name)? = input["name"] else { throw bad("inputs[0].name is required: '\(inputName)'") }
        guard name == inputName else { throw bad("the model has no input '\(name.prefix(64))'; its one input is '\(inputName)'") }
        guard case .array(let dimensions)? = input["shape"] else {
            throw bad("input '\(inputName)': shape is required, [rows, features]")
        }
        let sizes = dimensions.map { $0.intValue ?? -1 }
        let rows: Int, width: Int
        switch sizes.count {
        case 2: (rows, width) = (sizes[0], sizes[1])
        case 1: (rows, width) = (1, sizes[0])
        default: throw bad("input '\(inputName)': shape \(JSONValue.array(dimensions).jsonText.prefix(64)) must be [rows, features]")
        }
        guard (1...(1 << 24)).contains(rows), (1...(1 << 24)).contains(width), rows * width <= 1 << 26 else {
            throw bad("input '\(inputName)': shape \(JSONValue.array(dimensions).jsonText.prefix(64)) must be [rows, features] of whole numbers ≥ 1")
        }
        let dtype: TensorPayload.DType
        switch input["datatype"] {
        case .string("FP32")?: dtype = .float32
        case .string("FP16")?: dtype = .float16
        case .string(let other)?: throw bad("input '\(inputName)': datatype \(other.prefix(16)) is not supported; send FP32 or FP16")
        default: throw bad("input '\(inputName)': datatype is required, FP32 or FP16")
        }
        let parameters = try Self.parameters(input["parameters"], at: "input '\(inputName)' parameters")
        let count = rows * width
        // Every value takes at least a byte of the body (a JSON number and its comma: two), so a shape larger than
        // that is refused before anything is allocated for it.
        guard count <= bodyBytes else {
            throw bad("input '\(inputName)': shape [\(rows), \(width)] needs \(count) values, more than the \(bodyBytes)-byte body can hold")
        }
        var bytes: [UInt8] = []
        var used = 0
        var outputType = TensorPayload.DType.float32
        if let size = parameters["binary_data_size"] {
            guard let size = size.intValue, size >= 0 else {
                throw bad("input '\(inputName)': binary_data_size must be a whole number of bytes, got \(size.jsonText.prefix(32))")
            }
            if input["data"] != nil { throw bad("input '\(inputName)': give data or binary_data_size, not both") }
            let expected = count * dtype.size
            guard size == expected else {
                throw bad("input '\(inputName)': binary_data_size is \(size), but shape [\(rows), \(width)] of \(dtype == .float32 ? "FP32" : "FP16") needs \(expected) bytes")
            }
            guard size <= binary.count else {
                throw bad("input '\(inputName)': binary_data_size is \(size) but only \(binary.count) bytes follow the JSON header (is Inference-Header-Content-Length right?)")
            }
            bytes = Array(UnsafeRawBufferPointer(rebasing: binary[0..<size]))
            used = size
            outputType = dtype
            if let problem = nonFinite(bytes, dtype: dtype, width: width) { throw bad(problem) }
        } else {
            guard let data = input["data"] else {
                throw bad("input '\(inputName)': data is required (a JSON array of numbers), or parameters.binary_data_size with the bytes after the JSON")
            }
            bytes = [UInt8](repeating: 0, count: count * 4)
            var index = 0
            var failure: String?
            bytes.withUnsafeMutableBytes { raw in
                func walk(_ value: JSONValue) {
                    guard failure == nil else { return }
                    switch value {
                    case .array(let items): for item in items { walk(item) }
                    case .number(let number):
                        guard index < count else { index += 1; return }
                        let single = Float(number)
                        guard single.isFinite else {
                            failure = "input '\(inputName)': row \(index / width) feature \(index % width) is \(number), which overflows FP32; inputs must be finite"
                            return
                        }
                        raw.storeBytes(of: single.bitPattern.littleEndian, toByteOffset: index * 4, as: UInt32.self)
                        index += 1
                    default:
                        failure = "input '\(inputName)': element \(index) (row \(index / width) feature \(index % width)) is \(value.kindDescription), not a number"
                    }
                }
                walk(data)
            }
            if let failure { throw bad(failure) }
            guard index == count else {
                throw bad("input '\(inputName)': data has \(index) numbers, but shape [\(rows), \(width)] needs \(count)")
            }
        }
        var text: [UInt8] = []
        text.reserveCapacity((bytes.count + 2) / 3 * 4)
        bytes.withUnsafeBytes { FloatMatrix.base64(of: $0, into: &text) }
        let tensor = JSONValue.object([
            "dtype": .string(outputType.rawValue),
            "shape": .array([.number(Double(rows)), .number(Double(width))]),
            "data": .string(String(decoding: text, as: UTF8.self)),
        ])
        return (rows, width, tensor, used)
    }

    /// Where binary input holds a NaN or an infinity, for the error.
    static func nonFinite(_ bytes: [UInt8], dtype: TensorPayload.DType, width: Int) -> String? {
        bytes.withUnsafeBytes { raw -> String? in
            switch dtype {
            case .float32:
                for index in 0..<raw.count / 4 {
                    let bits = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
                    if bits & 0x7F80_0000 == 0x7F80_0000 {
                        return "input '\(inputName)': row \(index / width) feature \(index % width) is \(Float(bitPattern: bits)); inputs must be finite"
                    }
                }
            case .float16:
                for index in 0..<raw.count / 2 {
                    let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))
                    if bits & 0x7C00 == 0x7C00 {
                        return "input '\(inputName)': row \(index / width) feature \(index % width) is \(bits & 0x03FF == 0 ? "infinite" : "NaN"); inputs must be finite"
                    }
                }
            }
            return nil
        }
    }

    static func bad(_ detail: String) -> Problem { Problem(.badRequest, detail: detail) }
}

/// The answer to an inference request: the JSON header and the binary tensor bytes after it.
struct InferenceResponseV2 {
    var header: [UInt8]
    var binary: [UInt8]

    /// Builds the answer from a finished `inference` job's result (its `logits` and `probabilities` as float32
    /// tensor objects, `outputFormat: "binary"`). Outputs asked as binary go as raw little-endian bytes after the
    /// JSON; the others as JSON arrays of the shortest decimal that reads back as the same float32.
    static func make(result: JSONValue, request: InferenceRequestV2, modelName: String, version: Int, jobID: String,
                     parameters: [String: JSONValue]) throws(Problem) -> InferenceResponseV2 {
        var out: [UInt8] = []
        var binary: [UInt8] = []
        func append(_ text: String) { out.append(contentsOf: text.utf8) }
        append(#"{"model_name":"#)
        append(JSONValue.string(modelName).jsonText)
        append(#","model_version":"#)
        append(JSONValue.string(String(version)).jsonText)
        append(#","id":"#)
        append(JSONValue.string(request.id ?? jobID).jsonText)
        append(#","parameters":"#)
        append(JSONValue.object(parameters).jsonText)
        append(#","outputs":["#)
        for (position, output) in request.outputs.enumerated() {
            guard case .object(let tensor)? = result[output.name], case .string(var data)? = tensor["data"],
                  case .array(let shape)? = tensor["shape"], shape.count == 2,
                  let rows = shape[0].intValue, let columns = shape[1].intValue else {
                throw Problem(.internalServerError, detail: "the inference job's result has no '\(output.name)' tensor; check the workers' version (they must understand outputFormat binary)")
            }
            var values = [UInt8](repeating: 0, count: rows * columns * 4)
            let decoded: Bool = data.withUTF8 { text in
                guard Base64.decodedCount(text) == values.count else { return false }
                return values.withUnsafeMutableBytes { target in (try? Base64.decode(text, into: target)) != nil }
            }
            guard decoded else {
                throw Problem(.internalServerError, detail: "the inference job's '\(output.name)' tensor does not hold \(rows)×\(columns) float32 values")
            }
            if position > 0 { out.append(UInt8(ascii: ",")) }
            append(#"{"name":""# + output.name + #"","datatype":"FP32","shape":["# + "\(rows),\(columns)]")
            if output.binary {
                append(#","parameters":{"binary_data_size":"# + "\(values.count)}}")
                binary.append(contentsOf: values)
            } else {
                append(#","data":["#)
                values.withUnsafeBytes { raw in
                    for index in 0..<raw.count / 4 {
                        if index > 0 { out.append(UInt8(ascii: ",")) }
                        let bits = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
                        FloatText.append(Float(bitPattern: bits), to: &out)
                    }
                }
                append("]}")
            }
        }
        append("]}")
        return InferenceResponseV2(header: out, binary: binary)
    }

    /// The HTTP response: JSON alone, or (with binary outputs) `application/octet-stream` with
    /// `Inference-Header-Content-Length`.
    func response(headers extra: HTTPFields) -> Response {
        var headers = extra
        var buffer = ByteBuffer()
        buffer.reserveCapacity(header.count + binary.count)
        buffer.writeBytes(header)
        if binary.isEmpty {
            headers[.contentType] = "application/json"
        } else {
            headers[.contentType] = "application/octet-stream"
            headers[.inferenceHeaderContentLength] = String(header.count)
            buffer.writeBytes(binary)
        }
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: buffer))
    }
}

extension HTTPFields.Element.Name {  // HTTPField: Hummingbird re-exports HTTPFields, not HTTPField
    /// The binary tensor data extension's length of the JSON header at the start of the body.
    static let inferenceHeaderContentLength = Self("Inference-Header-Content-Length")!
    /// The tier an Open Inference Protocol request runs in (default: the API key's default tier).
    static let jobFarmTier = Self("JobFarm-Tier")!
    /// The id of the job that answered an Open Inference Protocol request.
    static let jobFarmJobID = Self("JobFarm-Job-Id")!
}

extension Problem {
    /// The Open Inference Protocol's error shape, `{"error": "..."}` (application/json), with the same status and
    /// headers: what every `/v2` route answers instead of a problem document.
    var inferenceProtocolResponse: Response {
        var fields = headers
        fields[.contentType] = "application/json"
        var text = detail
        if !errors.isEmpty { text += ": " + errors.map(\.detail).joined(separator: "; ") }
        let body = JSONValue.object(["error": .string(text)]).jsonText
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// The response for a request to `path`: the protocol's error shape under `/v2`, a problem document elsewhere.
    func response(path: String) -> Response {
        path == "/v2" || path.hasPrefix("/v2/") ? inferenceProtocolResponse : response
    }
}
