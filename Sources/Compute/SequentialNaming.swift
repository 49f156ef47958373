/// Reads the layers of a PyTorch `nn.Sequential` of `nn.Linear` from its tensor names, so that a safetensors file
/// saved from `model.state_dict()` needs no hand-written config.
///
/// PyTorch names a `Sequential`'s parameters `<prefix><i>.weight` / `<prefix><i>.bias`, where `i` counts every
/// module, activations included: `Linear, ReLU, Linear, ReLU, Linear` stores `0.`, `2.` and `4.`. The layers are
/// therefore ordered by index (not counted), each weight `[out, in]` must take the previous layer's outputs, and
/// the activation between layers (which holds no tensors) is given: ReLU unless told otherwise. The last layer has
/// none: its outputs are the logits (probabilities are their softmax).
extension ModelConfig {
    /// The config of a `Sequential` of `Linear` layers named as PyTorch names them (any common prefix such as
    /// `net.` or `model.layers.`), `activation` between the layers. Throws when the names do not follow that
    /// pattern or the shapes do not chain, saying so (give a config then).
    public static func sequential(tensors: [String: Tensor], activation: Activation = .relu) throws -> ModelConfig {
        try sequential(shapes: tensors.mapValues(\.shape), activation: activation)
    }

    /// The same rules as `sequential(tensors:activation:)` over the tensors' shapes alone (name → shape), so a
    /// file's header is enough: the model registry checks a streamed upload with it before the weights arrive.
    public static func sequential(shapes tensors: [String: [Int]], activation: Activation = .relu) throws -> ModelConfig {
        var layers: [(prefix: String, index: Int, weight: String)] = []
        for (name, shape) in tensors where name.hasSuffix(".weight") && shape.count == 2 {
            let stem = name.dropLast(".weight".count)
            let digits = stem.reversed().prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let index = Int(String(digits.reversed())) else { continue }
            let prefix = String(stem.dropLast(digits.count))
            guard prefix.isEmpty || prefix.hasSuffix(".") else { continue }
            layers.append((prefix, index, name))
        }
        guard !layers.isEmpty else {
            throw ComputeError.invalidArgument("no model config given, the file has no \"\(metadataKey)\" metadata, and no tensor is named like a PyTorch Sequential's Linear layer (<prefix><i>.weight, 2-D): give a config (--config)")
        }
        let prefixes = Set(layers.map(\.prefix))
        guard prefixes.count == 1 else {
            throw ComputeError.invalidArgument("the tensors name more than one Sequential (prefixes \(prefixes.sorted().map { "'\($0)'" }.joined(separator: ", "))): give a config (--config) saying which layers to run")
        }
        layers.sort { $0.index < $1.index }
        var configs: [DenseLayerConfig] = []
        var previousOutputs: Int?
        for (position, layer) in layers.enumerated() {
            let shape = tensors[layer.weight]!
            if let previousOutputs, shape[1] != previousOutputs {
                throw ComputeError.shapeMismatch("\(layer.weight) is \(shape) but the layer before it gives \(previousOutputs) outputs: the Linear layers do not chain; give a config (--config)")
            }
            previousOutputs = shape[0]
            let biasName = layer.prefix + String(layer.index) + ".bias"
            let bias = tensors[biasName].map { _ in biasName }
            let isLast = position == layers.count - 1
            configs.append(DenseLayerConfig(weight: layer.weight, bias: bias, activation: isLast ? .none : activation))
        }
        return ModelConfig(layers: configs)
    }
}
