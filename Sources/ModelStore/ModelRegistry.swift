import Compute
import Foundation
import RedisClient

/// One stored version of a model: what `model show` prints and what the version HASH holds (as JSON).
public struct ModelVersion: Sendable, Codable, Equatable {
    /// Model name, e.g. `digits-mlp`.
    public var name: String
    /// 1, 2, 3… per name, assigned on push.
    public var version: Int
    /// SHA-256 of the safetensors bytes (the blob's address).
    public var sha256: String
    /// Size of the safetensors file in bytes.
    public var bytes: Int
    /// Bytes of the layer tensors (weights, biases, int8 scales), headers aside.
    public var tensorBytes: Int
    /// `fp32`, `fp16`, `int8`, or `mixed`.
    public var precision: String
    /// The network config (JSON text of `ModelConfig`), stored beside the weights.
    public var config: String
    /// Inputs per row and outputs per row.
    public var inputs: Int
    public var outputs: Int
    /// Push time (ms since 1970).
    public var createdAt: Int64
    /// Free-form facts: `source` (the version it was derived from), `job` (the job that made it), metrics.
    public var metadata: [String: String]

    /// `name:version`.
    public var reference: String { "\(name):\(version)" }
}

/// A parsed model reference: `name`, `name:7`, `name:latest`, `name:latest@int8`, `name:production`.
///
/// `name` and `name:latest` select the highest version **in the precision of the name's first version**, so a
/// quantized version pushed under the same name never replaces the model a plain reference runs;
/// `name:latest@int8` (or `@fp16`, `@fp32`, `@mixed`) selects the highest version in that precision. Versions and
/// aliases select exactly the version they name, whatever its precision.
public struct ModelReference: Sendable, Hashable, CustomStringConvertible {
    /// Which version a reference selects.
    public enum Selector: Sendable, Hashable {
        case latest
        case version(Int)
        case alias(String)
    }

    /// The precisions a `latest@…` selector may name (a stored version's `precision`).
    public static let precisions = ["fp32", "fp16", "int8", "mixed"]

    public var name: String
    public var selector: Selector
    /// With `.latest`: the precision asked for (`name:latest@int8`); `nil`: the precision of the name's first version.
    public var precision: String?

    public init(name: String, selector: Selector, precision: String? = nil) {
        self.name = name
        self.selector = selector
        self.precision = precision
    }

    /// Parses `name[:version|:alias|:latest[@precision]]`.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard isValidRegistryName(parts[0]) else {
            if parts[0].contains("@") {
                throw ModelStoreError.invalidArgument("model reference '\(text)': a precision goes after latest, as in \(parts[0].split(separator: "@").first ?? ""):latest@int8")
            }
            throw ModelStoreError.invalidArgument("model reference '\(text)': name must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        name = parts[0]
        precision = nil
        if parts.count == 1 || parts[1] == "latest" {
            selector = .latest
        } else if parts[1].hasPrefix("latest@") {
            let asked = String(parts[1].dropFirst("latest@".count)).lowercased()
            guard Self.precisions.contains(asked) else {
                throw ModelStoreError.invalidArgument("model reference '\(text)': precision '\(asked.prefix(16))' is not one of \(Self.precisions.joined(separator: ", "))")
            }
            selector = .latest
            precision = asked
        } else if parts[1].contains("@") {
            throw ModelStoreError.invalidArgument("model reference '\(text)': only latest takes a precision (name:latest@int8); a version or an alias selects one version, whatever its precision")
        } else if let number = Int(parts[1]) {
            guard number >= 1 else { throw ModelStoreError.invalidArgument("model reference '\(text)': versions start at 1") }
            selector = .version(number)
        } else {
            guard isValidRegistryName(parts[1]) else {
                throw ModelStoreError.invalidArgument("model reference '\(text)': alias must be 1–64 of A–Z a–z 0–9 _ - .")
            }
            selector = .alias(parts[1])
        }
    }

    public var description: String {
        switch selector {
        case .latest: return "\(name):latest" + (precision.map { "@\($0)" } ?? "")
        case .version(let v): return "\(name):\(v)"
        case .alias(let a): return "\(name):\(a)"
        }
    }
}

/// The model registry: safetensors files content-addressed in Redis, with named versions and aliases.
///
/// Keys (namespace `jf` by default; see docs/JOBS.md):
/// - `jf:models:names` SET of model names
/// - `jf:models:blob:<sha256>` HASH: the chunked, zlib-compressed safetensors bytes (`BlobStore`)
/// - `jf:models:<name>:seq` STRING: the last version number handed out
/// - `jf:models:<name>:versions` HASH version → `ModelVersion` JSON
/// - `jf:models:<name>:aliases` HASH alias → version
public struct ModelRegistry: Sendable {
    /// The connection used for every call.
    public let client: RedisClient
    /// The farm namespace (`jf`).
    public let namespace: String
    /// The blob storage under `<ns>:models:blob:`.
    public let blobs: BlobStore

    /// Creates a registry over an existing client.
    public init(client: RedisClient, namespace: String, chunkSize: Int = 512 * 1024) {
        self.client = client
        self.namespace = namespace
        self.blobs = BlobStore(client: client, prefix: "\(namespace):models:blob:", chunkSize: chunkSize)
    }

    var namesKey: String { "\(namespace):models:names" }
    func seqKey(_ name: String) -> String { "\(namespace):models:\(name):seq" }
    func versionsKey(_ name: String) -> String { "\(namespace):models:\(name):versions" }
    func aliasesKey(_ name: String) -> String { "\(namespace):models:\(name):aliases" }

    /// Pushes a safetensors file as the next version of `name`: `push(streaming:)` (ModelUpload.swift) over one
    /// piece, so both paths check and store a file the same way.
    ///
    /// The header is checked first (bad header, unsupported dtype and config mismatches are refused before anything
    /// is stored). `config` defaults to the config embedded in the file's metadata.
    public func push(
        safetensors bytes: [UInt8], config: ModelConfig?, name: String, metadata: [String: String] = [:]
    ) async throws -> ModelVersion {
        try await push(streaming: SinglePiece(bytes: bytes), config: config, name: name, expectedBytes: bytes.count, metadata: metadata)
    }

    /// Pushes a model held in memory (its config embedded).
    public func push(model: MLPModel, name: String, metadata: [String: String] = [:]) async throws -> ModelVersion {
        let file = try model.safetensorsFile()
        return try await push(safetensors: [UInt8](try file.serialized()), config: model.config, name: name, metadata: metadata)
    }

    /// The version a reference selects (aliases and `latest` read from Redis on every call).
    public func resolve(_ reference: ModelReference) async throws -> ModelVersion {
        let number: Int
        switch reference.selector {
        case .version(let v):
            number = v
        case .latest:
            return try await latest(reference.name, precision: reference.precision)
        case .alias(let alias):
            let reply = try await client.execute(RedisCommand("HGET", aliasesKey(reference.name), alias))
            guard let v = reply.int else {
                throw ModelStoreError.notFound("model '\(reference.name)' has no alias '\(alias)'")
            }
            number = v
        }
        return try await version(reference.name, number)
    }

    /// The highest version of `name` in `precision`; `nil`: in the precision of its first version (what plain
    /// `name` and `name:latest` select).
    public func latest(_ name: String, precision: String? = nil) async throws -> ModelVersion {
        let records = try await versions(name)
        guard let first = records.first else {
            throw ModelStoreError.notFound("model '\(name)' has no versions (push one with `jobfarm model push`)")
        }
        let wanted = precision ?? first.precision
        guard let found = records.last(where: { $0.precision == wanted }) else {
            let held = records.map { "\($0.version) \($0.precision)" }.joined(separator: ", ")
            throw ModelStoreError.notFound("model '\(name)' has no \(wanted) version (it has \(held)): quantize one, or name a version (\(name):\(records.last!.version))")
        }
        return found
    }

    /// Resolves a reference given as text.
    public func resolve(_ text: String) async throws -> ModelVersion {
        try await resolve(ModelReference(parsing: text))
    }

    /// One version's record.
    public func version(_ name: String, _ number: Int) async throws -> ModelVersion {
        let reply = try await client.execute(RedisCommand("HGET", versionsKey(name), String(number)))
        guard let bytes = reply.bytes else {
            throw ModelStoreError.notFound("model '\(name)' has no version \(number)")
        }
        do {
            return try JSONDecoder().decode(ModelVersion.self, from: Data(bytes))
        } catch {
            throw ModelStoreError.corrupt("record of \(name):\(number) is not valid JSON")
        }
    }

    /// Every version of `name`, oldest first.
    public func versions(_ name: String) async throws -> [ModelVersion] {
        let reply = try await client.execute(RedisCommand("HGETALL", versionsKey(name)))
        let items = reply.array ?? []
        var records: [ModelVersion] = []
        for index in stride(from: 1, to: items.count, by: 2) {
            if let bytes = items[index].bytes, let record = try? JSONDecoder().decode(ModelVersion.self, from: Data(bytes)) {
                records.append(record)
            }
        }
        return records.sorted { $0.version < $1.version }
    }

    func versionNumbers(_ name: String) async throws -> [Int] {
        let reply = try await client.execute(RedisCommand("HKEYS", versionsKey(name)))
        return (reply.array ?? []).compactMap(\.int).sorted()
    }

    /// Model names, sorted.
    public func names() async throws -> [String] {
        (try await client.execute(RedisCommand("SMEMBERS", namesKey)).array ?? []).compactMap(\.string).sorted()
    }

    /// Aliases of `name` → version.
    public func aliases(_ name: String) async throws -> [String: Int] {
        let items = try await client.execute(RedisCommand("HGETALL", aliasesKey(name))).array ?? []
        var result: [String: Int] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            // `previous:<alias>` fields keep a switched alias's old target (AliasSwitch.swift); they are not aliases.
            if let alias = items[index].string, !alias.contains(":"), let v = items[index + 1].int { result[alias] = v }
        }
        return result
    }

    /// Points `alias` at `version` of `name`; returns the version it pointed at before (nil if new).
    @discardableResult
    public func setAlias(_ alias: String, name: String, version: Int) async throws -> Int? {
        guard isValidRegistryName(alias), Int(alias) == nil, alias != "latest" else {
            throw ModelStoreError.invalidArgument("alias '\(alias)' must be 1–64 of A–Z a–z 0–9 _ - ., not a number and not 'latest'")
        }
        _ = try await self.version(name, version)  // must exist
        let replies = try await client.send([
            RedisCommand("HGET", aliasesKey(name), alias),
            RedisCommand("HSET", aliasesKey(name), alias, String(version)),
        ])
        if let message = replies.compactMap(\.errorMessage).first { throw RedisError(reply: message, context: "model alias") }
        return replies[0].int
    }

    /// Removes an alias; returns whether it existed.
    @discardableResult
    public func removeAlias(_ alias: String, name: String) async throws -> Bool {
        (try await client.execute(RedisCommand("HDEL", aliasesKey(name), alias)).int ?? 0) > 0
    }

    /// The safetensors bytes of a version, checksum verified.
    public func bytes(of version: ModelVersion) async throws -> [UInt8] {
        do {
            return try await blobs.get(version.sha256)
        } catch let error as ModelStoreError {
            if case .corrupt(let message) = error {
                throw ModelStoreError.corrupt("model \(version.reference): \(message)")
            }
            throw error
        }
    }

    /// Loads a version as a runnable model (its stored config applied).
    public func load(_ version: ModelVersion) async throws -> MLPModel {
        let bytes = try await self.bytes(of: version)
        do {
            let config = try ModelConfig(jsonString: version.config)
            return try MLPModel(file: SafetensorsFile(data: Data(bytes)), config: config)
        } catch let error as ComputeError {
            throw ModelStoreError.invalidModel("model \(version.reference): \(error)")
        }
    }
}
