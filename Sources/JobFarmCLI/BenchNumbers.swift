import Compute
import Foundation
import JobPayloads
import JobProtocol
import JobWorker
import MLJobs
import ModelStore

/// `jobfarm bench codec --only numbers,tensors`: bytes per second of JSON numbers read and float32 printed, the
/// way the farm did before (a `String` and `strtod` per number; `Float.description` and a `strtod` back per value)
/// beside now (`FloatText`); base64 decoding (Foundation against `JobPayloads.Base64`); and an `inference` job of
/// 512 rows of a 64-feature MLP in the worker, JSON against binary tensors, split into decode / forward / encode.
extension BenchCodecCommand {
    /// 512 × 64 values like standardised features (what a client sends), deterministic.
    static func sampleInputs(rows: Int = 512, width: Int = 64) -> [Float] {
        var state: UInt64 = 12345
        return (0..<(rows * width)).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Double(state >> 11) / Double(1 << 53) * 16 - 4)
        }
    }

    /// The JSON text of rows of numbers, each the shortest float32 text.
    static func rowsText(_ values: [Float], width: Int) -> String {
        FloatMatrix(rows: values.count / width, columns: width, values: values).jsonValueText
    }

    func numbers() throws {
        print("\nJSON numbers: a 512 × 64 float32 matrix as rows of numbers (the shortest float32 text of each value)")
        let values = Self.sampleInputs()
        let text = Self.rowsText(values, width: 64)
        let bytes = Array(text.utf8)
        let megabytes = Double(bytes.count) / 1e6
        let times = try BenchTiming.interleaved(rounds: rounds, minTime: minTime, [
            { _ = try bytes.withUnsafeBufferPointer { try Self.parseWithStrtod($0) } },
            { _ = try bytes.withUnsafeBufferPointer { try JSONParser.parse(bytes: $0) } },
            { _ = Self.printWithDescription(values, width: 64) },
            { var out: [UInt8] = []; FloatMatrix(rows: 512, columns: 64, values: values).write(to: &out) },
        ])
        print(pad("", 34) + pad("before", 22) + pad("now", 22) + "ratio")
        print(pad("parse (JSONParser → JSONValue)", 34) + pad(rate(megabytes, times[0]), 22) + pad(rate(megabytes, times[1]), 22)
              + String(format: "%.1f×", times[0] / times[1]))
        print(pad("print float32 rows", 34) + pad(rate(megabytes, times[2]), 22) + pad(rate(megabytes, times[3]), 22)
              + String(format: "%.1f×", times[2] / times[3]))
        print("(\(bytes.count) bytes; before = a String and strtod per number to parse, Float.description + strtod back per value to print)")
    }

    func tensors() throws {
        print("\nbase64 of a 512 × 64 float32 tensor (131 KB of floats, 175 KB of text) into the buffer the forward pass reads")
        let values = Self.sampleInputs()
        let text = values.withUnsafeBytes { Data($0).base64EncodedString() }
        var utf8 = Array(text.utf8)
        let megabytes = Double(utf8.count) / 1e6
        var destination = [Float](repeating: 0, count: values.count)
        let times = try BenchTiming.interleaved(rounds: rounds, minTime: minTime, [
            {
                let data = Data(base64Encoded: text)!
                destination.withUnsafeMutableBytes { out in data.withUnsafeBytes { out.copyMemory(from: $0) } }
            },
            {
                try utf8.withUnsafeMutableBufferPointer { input in
                    try destination.withUnsafeMutableBytes { try Base64.decode(UnsafeBufferPointer(input), into: $0) }
                }
            },
        ])
        print(pad("Foundation Data(base64Encoded:) + copy", 42) + rate(megabytes, times[0]))
        print(pad("JobPayloads.Base64.decode", 42) + rate(megabytes, times[1]) + String(format: "  (%.1f×)", times[0] / times[1]))

        print("\nenvelope compression of that payload (zlib level 1, what the producer pays):")
        let payload = #"{"inputs":{"data":"\#(text)","dtype":"float32","shape":[512,64]},"model":"m"}"#
        let payloadBytes = Array(payload.utf8)
        let compressTimes = try BenchTiming.interleaved(rounds: rounds, minTime: minTime, [
            { _ = PayloadCompression.compress(payloadBytes) },
            { _ = PayloadCompression.compressIfWorthIt(payloadBytes) },
        ])
        let compressed = PayloadCompression.compress(payloadBytes).count
        print(pad("always compressed (before)", 42) + String(format: "%.2f ms, %d → %d bytes (%d as base64)", compressTimes[0] * 1e3, payloadBytes.count, compressed, (compressed + 2) / 3 * 4))
        print(pad("sampled first, stored as it is (now)", 42) + String(format: "%.3f ms", compressTimes[1] * 1e3))

        try inferencePhases()
    }

    /// An `inference` job of 512 rows through a 64 → 128 → 64 → 10 MLP, in the worker, JSON against binary.
    func inferencePhases() throws {
        let sizes = [64, 128, 64, 10]
        var state: UInt64 = 99
        func random(_ n: Int, _ scale: Float) -> [Float] {
            (0..<n).map { _ in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return (Float(state >> 40) / Float(1 << 24) - 0.5) * scale
            }
        }
        var tensors: [String: Tensor] = [:]
        var layers: [DenseLayerConfig] = []
        for i in 0..<(sizes.count - 1) {
            tensors["\(2 * i).weight"] = try Tensor(shape: [sizes[i + 1], sizes[i]], float32: random(sizes[i + 1] * sizes[i], 2 / Float(sizes[i]).squareRoot()))
            tensors["\(2 * i).bias"] = try Tensor(shape: [sizes[i + 1]], float32: random(sizes[i + 1], 0.1))
            layers.append(DenseLayerConfig(weight: "\(2 * i).weight", bias: "\(2 * i).bias", activation: i == sizes.count - 2 ? .none : .relu))
        }
        let model = try MLPModel(config: ModelConfig(layers: layers), tensors: tensors)
        let version = try JSONDecoder().decode(ModelVersion.self, from: Data("""
            {"name":"bench-mlp","version":1,"sha256":"\(String(repeating: "0", count: 64))","bytes":0,"tensorBytes":0,"precision":"fp32",
             "config":"{}","inputs":64,"outputs":10,"createdAt":0,"metadata":{}}
            """.utf8))
        let values = Self.sampleInputs()
        let base64 = values.withUnsafeBytes { Data($0).base64EncodedString() }
        let forms: [(String, String)] = [
            ("JSON in, JSON out", #"{"model":"bench-mlp","inputs":\#(Self.rowsText(values, width: 64))}"#),
            ("binary in, JSON out", #"{"model":"bench-mlp","inputs":{"dtype":"float32","shape":[512,64],"data":"\#(base64)"}}"#),
            ("binary in, binary out", #"{"model":"bench-mlp","inputs":{"dtype":"float32","shape":[512,64],"data":"\#(base64)"},"outputFormat":"binary"}"#),
        ]
        print("\ninference job, 512 rows, 64 → 128 → 64 → 10 MLP, in the worker (envelope text → result text; one thread, no batching)")
        print(pad("form", 24) + pad("envelope", 12) + pad("decode", 11) + pad("forward", 11) + pad("encode", 11) + pad("total", 11) + "result")
        for (name, payload) in forms {
            let envelope = JobEnvelope(kind: "inference", queue: "ml", payload: try JSONValue(parsing: payload)).encoded()
            var decode = Double.infinity, forward = Double.infinity, encode = Double.infinity, resultBytes = 0
            for _ in 0..<max(rounds * 5, 20) {
                let t = try InferenceJob.timePhases(envelope: envelope, model: model, version: version)
                decode = min(decode, t.decode)
                forward = min(forward, t.forward)
                encode = min(encode, t.encode)
                resultBytes = t.resultBytes
            }
            let total = decode + forward + encode
            var line = pad(name, 24) + pad("\(envelope.utf8.count / 1000) KB", 12)
            line += pad(ms(decode), 11) + pad(ms(forward), 11) + pad(ms(encode), 11)
            line += pad(ms(total), 11) + "\(resultBytes / 1000) KB"
            print(line)
        }
        print("(best of \(max(rounds * 5, 20)) runs per phase; the forward pass is OpenBLAS with the process's thread setting)")
    }

    /// The parser as it was, approximately: the same tree, plus what the old number path did per non-integer
    /// number — its text as a `String`, then `Double(text)` (strtod).
    static func parseWithStrtod(_ bytes: UnsafeBufferPointer<UInt8>) throws -> JSONValue {
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "-") || (byte >= 0x30 && byte <= 0x39) {
                let start = index
                while index < bytes.count, bytes[index] != UInt8(ascii: ","), bytes[index] != UInt8(ascii: "]") { index += 1 }
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                guard Double(text) != nil else { throw JobError.nonRetryable("bad number") }
            } else {
                index += 1
            }
        }
        return try JSONParser.parse(bytes: bytes)
    }

    /// The printer as it was: `Float.description`, and `Double(text)` of it, per value.
    static func printWithDescription(_ values: [Float], width: Int) -> String {
        var out = "["
        for r in 0..<(values.count / width) {
            out += r == 0 ? "[" : ",["
            for c in 0..<width {
                if c > 0 { out += "," }
                let value = values[r * width + c]
                let text = value.description
                _ = Double(text)
                out += text
            }
            out += "]"
        }
        return out + "]"
    }

    private func rate(_ megabytes: Double, _ seconds: Double) -> String { String(format: "%.0f MB/s", megabytes / seconds) }
    private func ms(_ seconds: Double) -> String { String(format: "%.3f ms", seconds * 1e3) }
}

extension FloatMatrix {
    /// The compact JSON text.
    var jsonValueText: String {
        var out: [UInt8] = []
        write(to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
