import Compute
import Foundation

/// The header of a safetensors file (its first `8 + n` bytes: a little-endian length `n`, then `n` bytes of JSON),
/// read without the tensor data: what a streamed upload is checked against before its weights arrive.
///
/// It applies the checks `SafetensorsFile` applies to a whole file (JSON object, dtypes, shapes against
/// `data_offsets`, no overlaps) and the layer rules of `MLPModel` (the config's tensors exist, weights are 2-D
/// `[out, in]`, biases match, layers chain; without a config, the embedded one or the `nn.Sequential` naming) on the
/// shapes alone. What needs the values (a standardisation tensor's numbers) is checked when a worker loads the model.
public struct SafetensorsHeader: Sendable {
    /// One tensor as the header declares it.
    public typealias Entry = SafetensorsFile.HeaderEntry

    /// Tensors by name.
    public var entries: [String: Entry]
    /// The `__metadata__` object.
    public var metadata: [String: String]
    /// Bytes before the tensor data (8 + the header's length).
    public var dataStart: Int
    /// Where the last tensor's bytes end within the data section: the file must be at least `dataStart + dataEnd`.
    public var dataEnd: Int

    /// How many bytes of the file the header needs, once its first 8 bytes are known; `nil` before that.
    /// - Throws: `ModelStoreError.invalidModel` when the declared length is over `SafetensorsFile.maxHeaderBytes` or
    ///   too small for a JSON object.
    public static func neededBytes(_ prefix: [UInt8]) throws -> Int? {
        guard prefix.count >= 8 else { return nil }
        var length: UInt64 = 0
        for index in 0..<8 { length |= UInt64(prefix[index]) << (8 * UInt64(index)) }
        guard length <= UInt64(SafetensorsFile.maxHeaderBytes) else {
            throw ModelStoreError.invalidModel("safetensors header length \(length) exceeds the \(SafetensorsFile.maxHeaderBytes)-byte limit: is this a safetensors file?")
        }
        guard length >= 2 else {
            throw ModelStoreError.invalidModel("safetensors header length \(length) is too small for a JSON object")
        }
        return 8 + Int(length)
    }

    /// Parses the header from the file's first bytes (at least `neededBytes`).
    public init(prefix: [UInt8]) throws {
        guard let needed = try Self.neededBytes(prefix), prefix.count >= needed else {
            throw ModelStoreError.invalidModel("the file ends before its safetensors header does (\(prefix.count) bytes)")
        }
        // The checks `SafetensorsFile` applies to a whole file's header; the data section's size is not known yet.
        let parsed: (entries: [Entry], metadata: [String: String])
        do {
            parsed = try SafetensorsFile.parseHeader(json: Data(prefix[8..<needed]), dataSize: nil)
        } catch let error as ComputeError {
            throw ModelStoreError.invalidModel(error.message)
        }
        let entries = Dictionary(parsed.entries.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let metadata = parsed.metadata
        self.entries = entries
        self.metadata = metadata
        self.dataStart = needed
        self.dataEnd = parsed.entries.map(\.end).max() ?? 0
    }

    /// Throws `ModelStoreError.invalidModel` when a file of `bytes` is too short for the tensors the header declares.
    public func checkLength(_ bytes: Int) throws {
        guard dataStart + dataEnd <= bytes else {
            throw ModelStoreError.invalidModel("tensor data_offsets run to byte \(dataEnd) of the data section, past the end of the \(bytes)-byte file (\(max(0, bytes - dataStart)) bytes of data)")
        }
    }

    /// What the registry records of a model, found from the header alone.
    public struct Layers: Sendable {
        /// The config that runs the file: the one given, else the embedded one, else the `nn.Sequential` naming.
        public var config: ModelConfig
        public var inputs: Int
        public var outputs: Int
        /// `fp32`, `fp16`, `int8` or `mixed` (as `MLPModel.precision`).
        public var precision: String
        /// Bytes of the layer tensors once loaded (as `MLPModel.tensorByteCount`: F64 and BF16 load as FP32).
        public var tensorBytes: Int
    }

    /// The model's layers: `config`, else the config under `ModelConfig.metadataKey`, else the layers of a PyTorch
    /// `nn.Sequential` with `activation` between them; every layer's tensors checked on their shapes.
    /// - Throws: `ModelStoreError.invalidModel` naming the tensor or layer at fault.
    public func layers(config given: ModelConfig?, activation: Activation = .relu) throws -> Layers {
        let config: ModelConfig
        do {
            if let given {
                config = given
            } else if let json = metadata[ModelConfig.metadataKey] {
                config = try ModelConfig(jsonString: json)
            } else {
                // int8 scale companions are not tensors of their own once loaded.
                let shapes = entries.filter { !isScaleCompanion($0.key) }.mapValues(\.shape)
                config = try ModelConfig.sequential(shapes: shapes, activation: activation)
            }
        } catch let error as ComputeError {
            throw ModelStoreError.invalidModel("\(error)")
        }
        guard !config.layers.isEmpty else { throw ModelStoreError.invalidModel("model config has no layers") }
        func lookup(_ name: String, _ role: String) throws -> Entry {
            guard let entry = entries[name], !isScaleCompanion(name) else {
                let have = entries.keys.filter { !isScaleCompanion($0) }.sorted().prefix(20).joined(separator: ", ")
                throw ModelStoreError.invalidModel("\(role) tensor \"\(name)\" is not in the file (have: \(have))")
            }
            return entry
        }
        var previousOutputs: Int?
        var inputs = 0
        var tensorBytes = 0
        var dtypes = Set<String>()
        for (index, layer) in config.layers.enumerated() {
            let weight = try lookup(layer.weight, "layer \(index) weight")
            guard weight.shape.count == 2 else {
                throw ModelStoreError.invalidModel("layer \(index) (\(layer.weight)): dense weight must be 2-D [out, in], got shape \(weight.shape)")
            }
            let (outputs, layerInputs) = (weight.shape[0], weight.shape[1])
            if let scale = entries[layer.weight + SafetensorsFile.int8ScaleSuffix], weight.dtype == "I8",
               scale.shape.reduce(1, *) != outputs {
                throw ModelStoreError.invalidModel("int8 tensor \"\(layer.weight)\" has \(outputs) output channels but \"\(scale.name)\" holds \(scale.shape.reduce(1, *)) scales")
            }
            tensorBytes += loadedBytes(weight)
            if let biasName = layer.bias {
                let bias = try lookup(biasName, "layer \(index) bias")
                guard bias.shape.reduce(1, *) == outputs else {
                    throw ModelStoreError.invalidModel("layer \(index) (\(layer.weight)): bias has \(bias.shape.reduce(1, *)) elements but the weight \(weight.shape) has \(outputs) output features")
                }
                guard bias.dtype != "I8" else {
                    throw ModelStoreError.invalidModel("layer \(index) (\(layer.weight)): int8 biases are not supported; store biases as FP32 or FP16")
                }
                tensorBytes += loadedBytes(bias)
            }
            if let previousOutputs, previousOutputs != layerInputs {
                throw ModelStoreError.invalidModel("layer \(index) (\(layer.weight)) expects \(layerInputs) inputs but layer \(index - 1) produces \(previousOutputs)")
            }
            if index == 0 { inputs = layerInputs }
            previousOutputs = outputs
            dtypes.insert(weight.dtype == "F64" || weight.dtype == "BF16" ? "F32" : weight.dtype)
        }
        if let standardization = config.inputStandardization {
            for (values, tensor, role) in [(standardization.mean, standardization.meanTensor, "mean"), (standardization.std, standardization.stdTensor, "std")] {
                let count = try values?.count ?? tensor.map { try lookup($0, "standardisation \(role)").shape.reduce(1, *) }
                guard let count else {
                    throw ModelStoreError.invalidModel("input standardisation needs both mean and std")
                }
                guard count == inputs else {
                    throw ModelStoreError.invalidModel("standardisation has \(count) \(role) values but the model takes \(inputs) inputs")
                }
            }
            if let index = standardization.mean?.firstIndex(where: { !$0.isFinite }) {
                throw ModelStoreError.invalidModel("standardisation mean[\(index)] is not finite")
            }
            if let index = standardization.std?.firstIndex(where: { !($0.isFinite && $0 > 0) }) {
                throw ModelStoreError.invalidModel("standardisation std[\(index)] must be finite and > 0")
            }
        }
        let precision = dtypes.count == 1 ? ["F32": "fp32", "F16": "fp16", "I8": "int8"][dtypes.first!] ?? "mixed" : "mixed"
        return Layers(config: config, inputs: inputs, outputs: previousOutputs ?? 0, precision: precision, tensorBytes: tensorBytes)
    }

    private func isScaleCompanion(_ name: String) -> Bool {
        guard name.hasSuffix(SafetensorsFile.int8ScaleSuffix) else { return false }
        return entries[String(name.dropLast(SafetensorsFile.int8ScaleSuffix.count))]?.dtype == "I8"
    }

    private func loadedBytes(_ entry: Entry) -> Int {
        let count = entry.shape.reduce(1, *)
        switch entry.dtype {
        case "F16": return count * 2
        case "I8": return count + (entry.shape.first ?? 1) * 4
        default: return count * 4
        }
    }
}
