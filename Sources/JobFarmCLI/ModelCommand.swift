import ArgumentParser
import Compute
import Foundation
import JobQueue
import ModelStore
import RedisClient

/// `jobfarm model push|pull|list|show|alias`: the model registry in Redis.
struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Store, list and name models (safetensors + JSON config) in the farm's registry.",
        subcommands: [Push.self, Pull.self, List.self, Show.self, Alias.self, Rollback.self])

    /// Opens the registry of the farm the global options point at.
    static func registry(_ global: GlobalOptions) throws -> ModelRegistry {
        let configuration = try global.farmConfiguration()
        global.bootstrapLogging()
        return ModelRegistry(client: RedisClient(configuration: configuration.redis, name: "cli-models"), namespace: configuration.namespace)
    }

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Push a safetensors file as the next version of a model.",
            discussion: "The config (JSON: layers with weight/bias tensor names and activations, optional inputStandardization and classLabels) may be omitted when the file carries it in its metadata, or when its tensors are a PyTorch nn.Sequential of nn.Linear as state_dict() names them (<prefix><i>.weight / .bias, ordered by index; --activation between the layers, none after the last).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The .safetensors file.") var file: String
        @Option(help: "Model config: a JSON file path, or inline JSON.") var config: String?
        @Option(help: "Model name (1–64 of A–Z a–z 0–9 _ - .).") var name: String
        @Option(help: "Also point this alias at the new version.") var alias: String?
        @Option(help: "Without a config: the activation between the layers of a PyTorch Sequential (relu, gelu, tanh, sigmoid, none).")
        var activation: String?

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read '\(file)'; check the path")
            }
            var modelConfig: ModelConfig?
            if let activation {
                guard config == nil else { throw ValidationError("--activation is for files without a config; put the activations in --config instead") }
                guard let chosen = Activation(rawValue: activation.lowercased()), chosen != .softmax else {
                    throw ValidationError("--activation '\(activation)' must be relu, gelu, tanh, sigmoid or none")
                }
                do {
                    modelConfig = try ModelConfig.sequential(tensors: SafetensorsFile(data: data).tensors, activation: chosen)
                } catch {
                    throw ValidationError("\(file): \(error)")
                }
            }
            if let config {
                let text = FileManager.default.fileExists(atPath: config)
                    ? String(decoding: FileManager.default.contents(atPath: config) ?? Data(), as: UTF8.self) : config
                do { modelConfig = try ModelConfig(jsonString: text) } catch {
                    throw ValidationError("--config is not a valid model config: \(error)")
                }
            }
            let registry = try ModelCommand.registry(global)
            try await cliErrors {
                let version = try await registry.push(safetensors: [UInt8](data), config: modelConfig, name: name,
                                                      metadata: ["source": "push", "file": URL(fileURLWithPath: file).lastPathComponent])
                if let alias { try await registry.setAlias(alias, name: name, version: version.version) }
                print("\(version.reference)  sha256:\(version.sha256)  \(version.precision)  \(version.inputs)→\(version.outputs)  \(version.bytes) bytes\(alias.map { "  alias \(name):\($0)" } ?? "")")
            }
        }
    }

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a model version's safetensors file (checksum verified) and its config.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model reference: name, name:3, name:production, name:latest.") var reference: String
        @Option(name: .shortAndLong, help: "Output file (default NAME-VERSION.safetensors).") var output: String?

        func run() async throws {
            let registry = try ModelCommand.registry(global)
            try await cliErrors {
                let version = try await registry.resolve(reference)
                let bytes = try await registry.bytes(of: version)
                let path = output ?? "\(version.name)-\(version.version).safetensors"
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                let configPath = (path.hasSuffix(".safetensors") ? String(path.dropLast(12)) : path) + ".config.json"
                try Data(version.config.utf8).write(to: URL(fileURLWithPath: configPath))
                print("\(version.reference) → \(path) (\(bytes.count) bytes, sha256 verified), config → \(configPath)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List models with their versions and aliases.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Only this model.") var name: String?

        func run() async throws {
            let registry = try ModelCommand.registry(global)
            try await cliErrors {
                var names: [String]
                if let name { names = [name] } else { names = try await registry.names() }
                if names.isEmpty { print("no models (push one with `jobfarm model push FILE --name N`)") }
                for name in names {
                    let aliases = try await registry.aliases(name)
                    print(name)
                    for version in try await registry.versions(name) {
                        let tags = aliases.filter { $0.value == version.version }.keys.sorted()
                        print("  \(String(version.version).padding(toLength: 4, withPad: " ", startingAt: 0)) \(version.precision.padding(toLength: 5, withPad: " ", startingAt: 0)) \(version.tensorBytes) tensor bytes  \(isoTime(version.createdAt))  \(version.sha256.prefix(12))\(tags.isEmpty ? "" : "  [" + tags.joined(separator: ", ") + "]")\(version.metadata["source"].map { "  from \($0)" } ?? "")")
                    }
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one version: record, config and aliases, as JSON.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model reference.") var reference: String

        func run() async throws {
            let registry = try ModelCommand.registry(global)
            try await cliErrors {
                let version = try await registry.resolve(reference)
                let aliases = try await registry.aliases(version.name).filter { $0.value == version.version }.keys.sorted()
                var object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(version)) as? [String: Any] ?? [:]
                object["config"] = try? JSONSerialization.jsonObject(with: Data(version.config.utf8))
                object["aliases"] = aliases
                object["reference"] = version.reference
                let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            }
        }
    }

    struct Alias: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Point an alias at a version: `model alias digits-mlp production 3` (or --delete).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Model name.") var name: String
        @Argument(help: "Alias, e.g. production.") var alias: String
        @Argument(help: "Version number (or a reference such as latest or another alias).") var version: String?
        @Flag(help: "Remove the alias.") var delete = false

        func run() async throws {
            let registry = try ModelCommand.registry(global)
            try await cliErrors {
                if delete {
                    let existed = try await registry.removeAlias(alias, name: name)
                    print(existed ? "removed \(name):\(alias)" : "\(name):\(alias) did not exist")
                    return
                }
                guard let version else { throw ValidationError("give the version to point \(name):\(alias) at, or --delete") }
                let target = try await registry.resolve("\(name):\(version)")
                let previous = try await registry.setAlias(alias, name: name, version: target.version)
                print("\(name):\(alias) → \(target.version)\(previous.map { " (was \($0))" } ?? "")")
            }
        }
    }
}

/// Turns registry and Redis errors into CLI errors with their message.
func cliErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ModelStoreError {
        throw CLIError(message: "\(error)")
    } catch let error as RedisError {
        throw CLIError(error)
    } catch let error as ComputeError {
        throw CLIError(message: "\(error)")
    }
}
