/// Every error thrown by the Compute library.
///
/// Each case carries a human-readable message that names the offending
/// tensor, file, line, column or value; `description` returns it.
public enum ComputeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Shapes or element counts that do not fit together.
    case shapeMismatch(String)
    /// An argument outside its valid range (negative size, bad fraction, ...).
    case invalidArgument(String)
    /// NaN or ±Inf found where finite numbers are required.
    case nonFiniteValue(String)
    /// A malformed file or buffer (safetensors, .npy, CSV, model config).
    case invalidFormat(String)
    /// A data type the reader does not handle (for example safetensors "U16").
    case unsupportedDType(String)
    /// A tensor referenced by a model config is absent from the tensor set.
    case missingTensor(String)
    /// Reading or writing a file failed.
    case io(String)
    /// A LAPACK routine reported failure.
    case numericalFailure(String)

    /// The message describing the problem.
    public var message: String {
        switch self {
        case .shapeMismatch(let m), .invalidArgument(let m), .nonFiniteValue(let m),
             .invalidFormat(let m), .unsupportedDType(let m), .missingTensor(let m),
             .io(let m), .numericalFailure(let m):
            return m
        }
    }

    /// The message prefixed with the error kind, e.g. "invalid format: ...".
    public var description: String {
        switch self {
        case .shapeMismatch(let m): return "shape mismatch: \(m)"
        case .invalidArgument(let m): return "invalid argument: \(m)"
        case .nonFiniteValue(let m): return "non-finite value: \(m)"
        case .invalidFormat(let m): return "invalid format: \(m)"
        case .unsupportedDType(let m): return "unsupported dtype: \(m)"
        case .missingTensor(let m): return "missing tensor: \(m)"
        case .io(let m): return "I/O error: \(m)"
        case .numericalFailure(let m): return "numerical failure: \(m)"
        }
    }
}
