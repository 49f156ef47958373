import Testing
@testable import Compute

@Suite struct TensorTests {
    @Test func shapeAndCountChecks() throws {
        let t = try Tensor(shape: [2, 3], float32: [1, 2, 3, 4, 5, 6])
        #expect(t.count == 6)
        #expect(t.rowLength == 3)
        #expect(t.byteCount == 24)
        #expect(t.dtype == .float32)
        let e = computeError { _ = try Tensor(shape: [2, 3], float32: [1, 2]) }
        #expect(e?.message.contains("[2, 3]") == true)
        #expect(computeError { _ = try Tensor(shape: [-1], float32: []) } != nil)
        #expect(computeError { _ = try t.reshaped([4, 2]) } != nil)
        #expect(try t.reshaped([3, 2]).shape == [3, 2])
    }

    @Test func fp16RoundTripAndBytes() throws {
        let values: [Float] = [0.5, -1.25, 1024, 3.0e-5]
        let t = try Tensor(shape: [4], float32: values)
        let h = t.toFloat16()
        #expect(h.dtype == .float16)
        #expect(h.byteCount == 8)
        let back = h.floats()
        for (a, b) in zip(values, back) { #expect(abs(a - b) <= abs(a) * 1e-3) }
    }

    @Test func int8DequantisesPerChannel() throws {
        let t = try Tensor(shape: [2, 2], int8: [127, -64, 10, -127], scales: [0.5, 2])
        #expect(t.floats() == [63.5, -32, 20, -254])
        #expect(t.byteCount == 4 + 8)
        #expect(computeError { _ = try Tensor(shape: [2, 2], int8: [1, 2, 3, 4], scales: [1]) } != nil)
        #expect(computeError { _ = try t.reshaped([4]) } != nil)
    }
}
