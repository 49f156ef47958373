import Compute
import Foundation
import RedisClient

/// Streaming pushes: a model or a dataset arrives in pieces (an HTTP body) and is checked and stored as it comes,
/// never held whole (`BlobStore.put(streaming:)`).
extension ModelRegistry {
    /// Pushes the safetensors file `pieces` yields as the next version of `name`, never holding it whole.
    ///
    /// The header is read from the first chunks and checked (`SafetensorsHeader`: dtypes, shapes, offsets, and the
    /// model's layers by `config`, the embedded config or the `nn.Sequential` naming with `activation`) before the
    /// rest is stored; a file shorter than its header says is refused at the end. A refused or failed upload leaves
    /// nothing visible, and no version is made.
    /// `expectedBytes` (an HTTP Content-Length, an array's count), when known, lets a file shorter than its header
    /// says be refused with the header, before its weights are sent.
    /// - Throws: `ModelStoreError.invalidArgument` (name), `.invalidModel` (the file), `.tooLarge` (over `limit`).
    public func push<Pieces: AsyncSequence>(
        streaming pieces: Pieces, config: ModelConfig?, activation: Activation = .relu, name: String,
        limit: Int = BlobStore.maxBytes, expectedBytes: Int? = nil, metadata: [String: String] = [:]
    ) async throws -> ModelVersion where Pieces.Element: Collection, Pieces.Element.Element == UInt8 {
        guard isValidRegistryName(name) else {
            throw ModelStoreError.invalidArgument("model name '\(name)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        var prefix: [UInt8] = []
        var header: SafetensorsHeader?
        var layers: SafetensorsHeader.Layers?
        let stored: (sha256: String, written: Bool, storedBytes: Int, bytes: Int)
        do {
            stored = try await blobs.put(streaming: pieces, limit: limit) { chunk, _ in
                guard header == nil else { return }
                prefix.append(contentsOf: chunk)
                guard let needed = try SafetensorsHeader.neededBytes(prefix), prefix.count >= needed else { return }
                let parsed = try SafetensorsHeader(prefix: prefix)
                if let expectedBytes { try parsed.checkLength(expectedBytes) }
                layers = try parsed.layers(config: config, activation: activation)
                header = parsed
                prefix = []
            } finish: { total in
                guard let header else {
                    if total < 8 {
                        throw ModelStoreError.invalidModel("the file is \(total) bytes, too short for the 8-byte safetensors header length")
                    }
                    throw ModelStoreError.invalidModel("safetensors header length runs past the end of the \(total)-byte file")
                }
                try header.checkLength(total)
            }
        } catch ModelStoreError.invalidModel(let message) {
            throw ModelStoreError.invalidModel("\(name): \(message)")
        }
        guard let layers else { throw ModelStoreError.invalidModel("\(name): the safetensors header was not read") }
        let configText = try layers.config.jsonString()
        let version = try await client.execute(RedisCommand("INCR", seqKey(name))).int ?? 1
        let record = ModelVersion(
            name: name, version: version, sha256: stored.sha256, bytes: stored.bytes, tensorBytes: layers.tensorBytes,
            precision: layers.precision, config: configText, inputs: layers.inputs,
            outputs: layers.outputs, createdAt: nowMilliseconds(), metadata: metadata)
        let json = String(decoding: try JSONEncoder().encode(record), as: UTF8.self)
        let replies = try await client.send([
            RedisCommand("HSET", versionsKey(name), String(version), json),
            RedisCommand("SADD", namesKey, name),
        ])
        if let message = replies.compactMap(\.errorMessage).first { throw RedisError(reply: message, context: "model push") }
        return record
    }
}

extension DatasetStore {
    /// The formats a dataset may have.
    public static let formats = ["npy", "csv"]

    /// Stores the bytes `pieces` yields under `name`, never holding them whole; `format` nil: `npy` when the bytes
    /// start with the NumPy magic, else `csv`. A `npy` dataset must start with the magic; pushing a name again
    /// replaces its record. A refused or failed upload leaves nothing visible.
    /// - Throws: `ModelStoreError.invalidArgument` (name, format, bytes not of the format), `.tooLarge` (over `limit`).
    @discardableResult
    public func push<Pieces: AsyncSequence>(
        name: String, streaming pieces: Pieces, format: String? = nil, limit: Int = BlobStore.maxBytes,
        metadata: [String: String] = [:]
    ) async throws -> DatasetRecord where Pieces.Element: Collection, Pieces.Element.Element == UInt8 {
        guard isValidRegistryName(name), name != "names" else {
            throw ModelStoreError.invalidArgument("dataset name '\(name)' must be 1–64 of A–Z a–z 0–9 _ - . (and not 'names')")
        }
        if let format, !Self.formats.contains(format) {
            throw ModelStoreError.invalidArgument("dataset format '\(format)' is not npy or csv")
        }
        var detected = format
        let stored = try await blobs.put(streaming: pieces, limit: limit) { chunk, offset in
            guard offset == 0 else { return }
            let found = Self.detectFormat(Array(chunk.prefix(6)))
            if detected == "npy", found != "npy" {
                throw ModelStoreError.invalidArgument("dataset '\(name)' is said to be npy but does not start with the NumPy magic (\\x93NUMPY)")
            }
            if detected == nil { detected = found }
        }
        let record = DatasetRecord(name: name, format: detected ?? "csv", sha256: stored.sha256, bytes: stored.bytes,
                                   createdAt: nowMilliseconds(), metadata: metadata)
        let json = String(decoding: try JSONEncoder().encode(record), as: UTF8.self)
        let replies = try await client.send([RedisCommand("SET", recordKey(name), json), RedisCommand("SADD", namesKey, name)])
        if let message = replies.compactMap(\.errorMessage).first { throw RedisError(reply: message, context: "dataset push") }
        return record
    }
}
