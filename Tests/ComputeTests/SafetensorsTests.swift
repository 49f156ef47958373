import Foundation
import Testing
@testable import Compute

/// Builds a safetensors buffer from a raw JSON header and data bytes.
private func rawFile(header: String, data: [UInt8], headerLength: UInt64? = nil) -> Data {
    var out = Data()
    let json = Data(header.utf8)
    withUnsafeBytes(of: (headerLength ?? UInt64(json.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(json)
    out.append(contentsOf: data)
    return out
}

private func formatError(_ data: Data) -> ComputeError? {
    computeError { _ = try SafetensorsFile(data: data) }
}

@Suite struct SafetensorsTests {
    @Test func roundTripAllDTypesAndMetadata() throws {
        let f32 = try Tensor(shape: [2, 3], float32: [1, -2, 3.5, 4, 5, 6])
        let f16 = try Tensor(shape: [3], float16: [0.5, -1, 2048])
        let i8 = try Tensor(shape: [2, 2], int8: [1, -2, 127, -127], scales: [0.25, 3])
        let scalar = try Tensor(shape: [], float32: [42])
        let file = SafetensorsFile(tensors: ["w": f32, "h": f16, "q": i8, "s": scalar],
                                   metadata: ["format": "pt", "note": "héllo \"quoted\""])
        let url = temporaryURL(".safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try file.write(to: url)
        let back = try SafetensorsFile(contentsOf: url)
        #expect(back == file)
        #expect(back.names == ["h", "q", "s", "w"])
        let bytes = try file.serialized()
        let n = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect((8 + Int(n)) % 8 == 0, "data section is 8-byte aligned")
    }

    @Test func readsPythonWrittenFileWithMetadata() throws {
        let file = try SafetensorsFile(contentsOf: Fixtures.url("mlp_64_32_10.safetensors"))
        #expect(file.metadata["format"] == "pt")
        #expect(file.metadata["architecture"] == "64-32-10 relu")
        #expect(try file.tensor(named: "net.0.weight").shape == [32, 64])
        #expect(try file.tensor(named: "net.2.bias").shape == [10])
        #expect(computeError { _ = try file.tensor(named: "nope") }?.message.contains("nope") == true)
    }

    @Test func readsF64AndF16FromPython() throws {
        let file = try SafetensorsFile(contentsOf: Fixtures.url("dtypes_f64_f16.safetensors"))
        let a = try file.tensor(named: "a")
        #expect(a.dtype == .float32)
        #expect(a.shape == [2, 3])
        #expect(a.floats() == [0, 0.25, 0.5, 0.75, 1, 1.25])
        let h = try file.tensor(named: "h")
        #expect(h.dtype == .float16)
        #expect(h.floats() == [-1.5, -0.5, 0.5, 1.5])
    }

    @Test func readsBF16AsFloat32() throws {
        // bfloat16 bits of 1.0, -2.5, 0.15625 are the top halves of their FP32 patterns.
        let bits: [UInt16] = [0x3F80, 0xC020, 0x3E20]
        let bytes = bits.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let file = try SafetensorsFile(data: rawFile(header: #"{"b":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}"#, data: bytes))
        #expect(file.tensors["b"]?.floats() == [1, -2.5, 0.15625])
    }

    @Test func rejectsUnsupportedDTypeNamingIt() {
        let e = computeError { _ = try SafetensorsFile(contentsOf: Fixtures.url("unsupported_i16.safetensors")) }
        guard case .unsupportedDType(let m)? = e else { Issue.record("expected unsupportedDType, got \(String(describing: e))"); return }
        #expect(m.contains("I16") && m.contains("bad"))
        let e2 = formatError(rawFile(header: #"{"x":{"dtype":"U16","shape":[1],"data_offsets":[0,2]}}"#, data: [0, 0]))
        #expect(e2?.message.contains("U16") == true)
    }

    @Test func rejectsTruncatedFile() throws {
        let good = try SafetensorsFile(tensors: ["w": Tensor(shape: [4], float32: [1, 2, 3, 4])]).serialized()
        // Cut inside the data section: offsets now run past the end.
        let e1 = formatError(good.prefix(good.count - 3))
        #expect(e1?.message.contains("past the end") == true)
        // Cut inside the header: the header length runs past the end.
        let e2 = formatError(good.prefix(20))
        #expect(e2?.message.contains("header length") == true)
        // Shorter than the length prefix.
        let e3 = formatError(good.prefix(5))
        #expect(e3?.message.contains("too short") == true)
    }

    @Test func rejectsHeaderLength2To63() {
        let e = formatError(rawFile(header: "{}", data: [], headerLength: 1 << 63))
        guard case .invalidFormat(let m)? = e else { Issue.record("expected invalidFormat"); return }
        #expect(m.contains("9223372036854775808"))
    }

    @Test func rejectsHugeHeaderLength() {
        let e = formatError(rawFile(header: "{}", data: [], headerLength: 200_000_000))
        #expect(e?.message.contains("limit") == true)
    }

    @Test func rejectsLyingHeader() {
        // Header length claims more bytes than the JSON: JSON no longer parses.
        let e1 = formatError(rawFile(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                                     data: [0, 0, 128, 63, 1, 2, 3, 4, 5, 6], headerLength: 60))
        #expect(e1?.message.contains("JSON") == true)
        // dtype × shape disagrees with the offsets.
        let e2 = formatError(rawFile(header: #"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)))
        #expect(e2?.message.contains("span 8 bytes") == true)
        // Not an object / malformed entries.
        #expect(formatError(rawFile(header: "[1,2]", data: [])) != nil)
        #expect(formatError(rawFile(header: #"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, data: [])) != nil)
        #expect(formatError(rawFile(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: [0, 0, 0, 0])) != nil)
        #expect(formatError(rawFile(header: #"{"__metadata__":{"a":1}}"#, data: [])) != nil)
    }

    @Test func rejectsOffsetsPastEnd() {
        let e = formatError(rawFile(header: #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: [UInt8](repeating: 0, count: 8)))
        guard case .invalidFormat(let m)? = e else { Issue.record("expected invalidFormat"); return }
        #expect(m.contains("\"x\"") && m.contains("past the end"))
    }

    @Test func rejectsOverlappingTensors() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        let e = formatError(rawFile(header: header, data: [UInt8](repeating: 0, count: 12)))
        guard case .invalidFormat(let m)? = e else { Issue.record("expected invalidFormat"); return }
        #expect(m.contains("overlap") && m.contains("\"a\"") && m.contains("\"b\""))
    }

    @Test func int8ScalesTravelInCompanionTensor() throws {
        let q = try Tensor(shape: [2, 1], int8: [5, -5], scales: [0.5, 0.25])
        let data = try SafetensorsFile(tensors: ["fc.weight": q]).serialized()
        let back = try SafetensorsFile(data: data)
        #expect(back.names == ["fc.weight"])
        #expect(back.tensors["fc.weight"]?.floats() == [2.5, -1.25])
    }
}
