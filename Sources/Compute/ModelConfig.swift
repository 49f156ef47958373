import Foundation

/// Element-wise (or, for `softmax`, row-wise) activation applied after a dense layer.
///
/// `relu` = max(0, x); `gelu` = exact 0.5·x·(1 + erf(x/√2)) (PyTorch's default);
/// `tanh`; `sigmoid` = 1/(1 + e⁻ˣ); `softmax` over each row; `none` = identity.
public enum Activation: String, Codable, Sendable, CaseIterable {
    case relu, gelu, tanh, sigmoid, softmax, none
}

/// One dense (PyTorch `Linear`) layer: `y = x · weightᵀ + bias`, then `activation`.
public struct DenseLayerConfig: Codable, Sendable, Equatable {
    /// Name of the `[out_features, in_features]` weight tensor.
    public var weight: String
    /// Name of the `[out_features]` bias tensor, or nil for no bias.
    public var bias: String?
    /// Activation after the affine map.
    public var activation: Activation

    /// Creates a layer description.
    public init(weight: String, bias: String?, activation: Activation) {
        self.weight = weight
        self.bias = bias
        self.activation = activation
    }
}

/// Input standardisation `x' = (x - mean) / std`, given inline or as tensor names.
public struct StandardizationConfig: Codable, Sendable, Equatable {
    /// Per-feature means (inline).
    public var mean: [Float]?
    /// Per-feature standard deviations (inline, all > 0).
    public var std: [Float]?
    /// Name of a 1-D tensor holding the means (alternative to `mean`).
    public var meanTensor: String?
    /// Name of a 1-D tensor holding the standard deviations (alternative to `std`).
    public var stdTensor: String?

    /// Creates a standardisation description.
    public init(mean: [Float]? = nil, std: [Float]? = nil, meanTensor: String? = nil, stdTensor: String? = nil) {
        self.mean = mean
        self.std = std
        self.meanTensor = meanTensor
        self.stdTensor = stdTensor
    }

    enum CodingKeys: String, CodingKey {
        case mean, std
        case meanTensor = "mean_tensor"
        case stdTensor = "std_tensor"
    }
}

/// JSON description of a multi-layer perceptron over named tensors.
///
/// ```json
/// {"layers": [{"weight": "0.weight", "bias": "0.bias", "activation": "relu"},
///             {"weight": "2.weight", "bias": "2.bias", "activation": "none"}],
///  "input_standardization": {"mean": [...], "std": [...]},
///  "class_labels": ["cat", "dog"]}
/// ```
public struct ModelConfig: Codable, Sendable, Equatable {
    /// Dense layers, input first.
    public var layers: [DenseLayerConfig]
    /// Optional standardisation applied to inputs before the first layer.
    public var inputStandardization: StandardizationConfig?
    /// Optional names of the output classes.
    public var classLabels: [String]?

    /// Key under which `MLPModel` stores its config in safetensors `__metadata__`.
    public static let metadataKey = "jobfarm.model_config"

    /// Creates a config.
    public init(layers: [DenseLayerConfig], inputStandardization: StandardizationConfig? = nil, classLabels: [String]? = nil) {
        self.layers = layers
        self.inputStandardization = inputStandardization
        self.classLabels = classLabels
    }

    /// Decodes a config from JSON, turning decoding failures into `ComputeError.invalidFormat`.
    public init(json: Data) throws {
        do {
            self = try JSONDecoder().decode(ModelConfig.self, from: json)
        } catch let error as DecodingError {
            throw ComputeError.invalidFormat("model config: \(Self.describe(error))")
        } catch {
            throw ComputeError.invalidFormat("model config is not valid JSON: \(error.localizedDescription)")
        }
    }

    /// Decodes a config from a JSON string.
    public init(jsonString: String) throws {
        try self.init(json: Data(jsonString.utf8))
    }

    /// Encodes the config as compact JSON with sorted keys.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }

    /// The config as a JSON string.
    public func jsonString() throws -> String {
        String(decoding: try jsonData(), as: UTF8.self)
    }

    enum CodingKeys: String, CodingKey {
        case layers
        case inputStandardization = "input_standardization"
        case classLabels = "class_labels"
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ p: [CodingKey]) -> String {
            p.isEmpty ? "<root>" : p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let ctx):
            return "missing key \"\(key.stringValue)\" at \(path(ctx.codingPath))"
        case .typeMismatch(let type, let ctx):
            return "expected \(type) at \(path(ctx.codingPath))"
        case .valueNotFound(let type, let ctx):
            return "missing \(type) value at \(path(ctx.codingPath))"
        case .dataCorrupted(let ctx):
            return "\(ctx.debugDescription) at \(path(ctx.codingPath))"
        @unknown default:
            return "\(error)"
        }
    }
}
