/// Element type of a `Tensor`.
public enum DType: String, Sendable, Codable, CaseIterable {
    /// IEEE binary32.
    case float32
    /// IEEE binary16 (Swift `Float16`).
    case float16
    /// Signed 8-bit integers with one FP32 scale per output channel (dimension 0).
    case int8

    /// Bytes per element (scales of int8 tensors not included).
    public var byteWidth: Int {
        switch self {
        case .float32: return 4
        case .float16: return 2
        case .int8: return 1
        }
    }
}

/// The element storage of a `Tensor`.
public enum TensorStorage: Sendable, Equatable {
    /// FP32 values in row-major (C) order.
    case float32([Float])
    /// FP16 values in row-major (C) order.
    case float16([Float16])
    /// Int8 values in row-major order; the real value of element `[r, ...]`
    /// is `Float(values[i]) * scales[r]` (one scale per output channel `r`).
    case int8(values: [Int8], scales: [Float])
}

/// An n-dimensional array stored row-major in FP32, FP16 or per-channel int8.
///
/// A value type: copies share storage until written (Swift arrays are CoW).
public struct Tensor: Sendable, Equatable {
    /// Dimensions, outermost first. A scalar has shape `[]`.
    public let shape: [Int]
    /// The elements.
    public let storage: TensorStorage

    /// Number of elements implied by a shape (1 for a scalar).
    public static func elementCount(of shape: [Int]) throws -> Int {
        var n = 1
        for d in shape {
            guard d >= 0 else { throw ComputeError.shapeMismatch("negative dimension \(d) in shape \(shape)") }
            let (p, o) = n.multipliedReportingOverflow(by: d)
            guard !o else { throw ComputeError.shapeMismatch("shape \(shape) overflows the element count") }
            n = p
        }
        return n
    }

    /// Creates an FP32 tensor; `values.count` must equal the product of `shape`.
    public init(shape: [Int], float32 values: [Float]) throws {
        let n = try Tensor.elementCount(of: shape)
        guard n == values.count else {
            throw ComputeError.shapeMismatch("shape \(shape) needs \(n) elements, got \(values.count)")
        }
        self.shape = shape
        self.storage = .float32(values)
    }

    /// Creates an FP16 tensor; `values.count` must equal the product of `shape`.
    public init(shape: [Int], float16 values: [Float16]) throws {
        let n = try Tensor.elementCount(of: shape)
        guard n == values.count else {
            throw ComputeError.shapeMismatch("shape \(shape) needs \(n) elements, got \(values.count)")
        }
        self.shape = shape
        self.storage = .float16(values)
    }

    /// Creates an int8 tensor with one scale per output channel (`shape[0]`).
    public init(shape: [Int], int8 values: [Int8], scales: [Float]) throws {
        let n = try Tensor.elementCount(of: shape)
        guard n == values.count else {
            throw ComputeError.shapeMismatch("shape \(shape) needs \(n) elements, got \(values.count)")
        }
        let channels = shape.first ?? 1
        guard scales.count == channels else {
            throw ComputeError.shapeMismatch("int8 tensor with \(channels) output channels needs \(channels) scales, got \(scales.count)")
        }
        guard scales.allSatisfy({ $0.isFinite }) else {
            throw ComputeError.nonFiniteValue("int8 scales must be finite")
        }
        self.shape = shape
        self.storage = .int8(values: values, scales: scales)
    }

    /// Element type.
    public var dtype: DType {
        switch storage {
        case .float32: return .float32
        case .float16: return .float16
        case .int8: return .int8
        }
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }

    /// Storage size in bytes, including int8 scales.
    public var byteCount: Int {
        switch storage {
        case .float32(let v): return v.count * 4
        case .float16(let v): return v.count * 2
        case .int8(let v, let s): return v.count + s.count * 4
        }
    }

    /// Elements per output channel (product of all dimensions but the first).
    public var rowLength: Int { shape.count <= 1 ? 1 : shape.dropFirst().reduce(1, *) }

    /// All elements as FP32 (FP16 converted through the F16C kernels, int8 dequantised).
    public func floats() -> [Float] {
        switch storage {
        case .float32(let v):
            return v
        case .float16(let v):
            return FP16Conversion.toFloat32(v)
        case .int8(let v, let scales):
            let rows = scales.count
            let len = rows == 0 ? 0 : v.count / rows
            var out = [Float](repeating: 0, count: v.count)
            out.withUnsafeMutableBufferPointer { dst in
                v.withUnsafeBufferPointer { src in
                    Dequantize.rows(src, scales: scales, rowLength: len, firstRow: 0, rowCount: rows, into: dst)
                }
            }
            return out
        }
    }

    /// This tensor stored as FP32.
    public func toFloat32() -> Tensor {
        if case .float32 = storage { return self }
        // Element count is unchanged, so the initializer cannot fail.
        return Tensor(uncheckedShape: shape, storage: .float32(floats()))
    }

    /// This tensor stored as FP16 (round-to-nearest-even; int8 is dequantised first).
    public func toFloat16() -> Tensor {
        if case .float16 = storage { return self }
        return Tensor(uncheckedShape: shape, storage: .float16(FP16Conversion.toFloat16(floats())))
    }

    /// Copies the tensor with another shape holding the same number of elements.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        let n = try Tensor.elementCount(of: newShape)
        guard n == count else {
            throw ComputeError.shapeMismatch("cannot reshape \(shape) (\(count) elements) to \(newShape) (\(n) elements)")
        }
        if case .int8 = storage, newShape.first != shape.first {
            throw ComputeError.shapeMismatch("reshaping int8 tensor \(shape) to \(newShape) would change its output channels")
        }
        return Tensor(uncheckedShape: newShape, storage: storage)
    }

    init(uncheckedShape: [Int], storage: TensorStorage) {
        self.shape = uncheckedShape
        self.storage = storage
    }
}
