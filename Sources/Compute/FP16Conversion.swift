import CComputeKernels

/// FP16 ↔ FP32 conversion through the CComputeKernels F16C kernels.
///
/// Whole-array helpers convert in one kernel call; models convert weights in
/// row blocks right before each block's GEMM (see `MLPModel`).
///
/// Swift's own `Float(Float16)` compiles to a soft-float `__extendhfsf2`
/// call per element on x86-64 unless the module is built with F16C enabled,
/// so bulk conversions go through C kernels that use `vcvtph2ps`/`vcvtps2ph`
/// when the CPU has F16C (checked at run time) and a bit-exact scalar
/// fallback otherwise. Rounding FP32 → FP16 is round-to-nearest-even.
public enum FP16Conversion {
    /// Whether the running CPU has F16C (the fast path is used).
    public static var hardwareAccelerated: Bool { ck_cpu_has_f16c() != 0 }

    /// Converts FP16 values to FP32.
    public static func toFloat32(_ values: [Float16]) -> [Float] {
        [Float](unsafeUninitializedCapacity: values.count) { dst, initialized in
            values.withUnsafeBufferPointer { src in convert(src, into: dst) }
            initialized = values.count
        }
    }

    /// Converts FP32 values to FP16 (round-to-nearest-even, overflow → ±inf).
    public static func toFloat16(_ values: [Float]) -> [Float16] {
        [Float16](unsafeUninitializedCapacity: values.count) { dst, initialized in
            values.withUnsafeBufferPointer { src in convert(src, into: dst) }
            initialized = values.count
        }
    }

    /// Converts FP16 values into an existing FP32 array (no allocation); counts must match.
    public static func convert(_ values: [Float16], into destination: inout [Float]) throws {
        guard destination.count == values.count else {
            throw ComputeError.shapeMismatch("FP16→FP32: \(values.count) source values, destination holds \(destination.count)")
        }
        values.withUnsafeBufferPointer { src in
            destination.withUnsafeMutableBufferPointer { dst in convert(src, into: dst) }
        }
    }

    /// Converts FP32 values into an existing FP16 array (no allocation); counts must match.
    public static func convert(_ values: [Float], into destination: inout [Float16]) throws {
        guard destination.count == values.count else {
            throw ComputeError.shapeMismatch("FP32→FP16: \(values.count) source values, destination holds \(destination.count)")
        }
        values.withUnsafeBufferPointer { src in
            destination.withUnsafeMutableBufferPointer { dst in convert(src, into: dst) }
        }
    }

    /// Portable scalar FP16 → FP32 conversion (the fallback path), exposed for checking.
    public static func toFloat32Scalar(_ values: [Float16]) -> [Float] {
        [Float](unsafeUninitializedCapacity: values.count) { dst, initialized in
            values.withUnsafeBufferPointer { src in
                src.withMemoryRebound(to: UInt16.self) { bits in
                    if let s = bits.baseAddress, let d = dst.baseAddress { ck_f16_to_f32_scalar(s, d, values.count) }
                }
            }
            initialized = values.count
        }
    }

    /// Portable scalar FP32 → FP16 conversion (the fallback path), exposed for checking.
    public static func toFloat16Scalar(_ values: [Float]) -> [Float16] {
        [Float16](unsafeUninitializedCapacity: values.count) { dst, initialized in
            values.withUnsafeBufferPointer { src in
                dst.withMemoryRebound(to: UInt16.self) { bits in
                    if let s = src.baseAddress, let d = bits.baseAddress { ck_f32_to_f16_scalar(s, d, values.count) }
                }
            }
            initialized = values.count
        }
    }

    /// Converts `src` into `dst` (same count). Large outputs (≥ 8 MiB) use streaming stores.
    static func convert(_ src: UnsafeBufferPointer<Float16>, into dst: UnsafeMutableBufferPointer<Float>) {
        precondition(dst.count >= src.count)
        guard let s0 = src.baseAddress, let d = dst.baseAddress else { return }
        s0.withMemoryRebound(to: UInt16.self, capacity: src.count) { s in
            ck_f16_to_f32(s, d, src.count)
        }
    }

    /// Converts `src` into `dst` (same count).
    static func convert(_ src: UnsafeBufferPointer<Float>, into dst: UnsafeMutableBufferPointer<Float16>) {
        precondition(dst.count >= src.count)
        guard let s = src.baseAddress, let d0 = dst.baseAddress else { return }
        d0.withMemoryRebound(to: UInt16.self, capacity: src.count) { d in
            ck_f32_to_f16(s, d, src.count)
        }
    }
}

/// Int8 → FP32 dequantisation through the CComputeKernels kernel.
enum Dequantize {
    /// Dequantises rows `firstRow ..< firstRow+rowCount` of a row-major int8
    /// matrix into `dst` (packed, `rowCount * rowLength` floats).
    static func rows(_ src: UnsafeBufferPointer<Int8>, scales: [Float], rowLength: Int,
                     firstRow: Int, rowCount: Int, into dst: UnsafeMutableBufferPointer<Float>) {
        guard rowLength > 0, rowCount > 0, let s = src.baseAddress, let d = dst.baseAddress else { return }
        precondition((firstRow + rowCount) * rowLength <= src.count && rowCount * rowLength <= dst.count)
        for r in 0..<rowCount {
            ck_i8_to_f32_scaled(s + (firstRow + r) * rowLength, d + r * rowLength, rowLength, scales[firstRow + r])
        }
    }
}
