import Foundation
import RedisClient

/// One dataset stored in the farm.
public struct DatasetRecord: Sendable, Codable, Equatable {
    /// Name used in payloads as `farm:NAME`.
    public var name: String
    /// `npy` or `csv`.
    public var format: String
    /// SHA-256 of the bytes.
    public var sha256: String
    /// Size in bytes.
    public var bytes: Int
    /// Push time (ms since 1970).
    public var createdAt: Int64
    /// Free-form facts (e.g. `job` for outputs a job stored).
    public var metadata: [String: String]
}

/// Datasets stored in Redis the same way as models (chunked, compressed, content-addressed), one record per name.
///
/// Keys: `jf:datasets:names` SET, `jf:datasets:<name>` STRING (`DatasetRecord` JSON),
/// `jf:datasets:blob:<sha256>` HASH (the bytes, `BlobStore`). Pushing a name again replaces its record.
public struct DatasetStore: Sendable {
    /// The connection used for every call.
    public let client: RedisClient
    /// The farm namespace.
    public let namespace: String
    /// The blob storage under `<ns>:datasets:blob:`.
    public let blobs: BlobStore

    /// Creates a store over an existing client; `chunkSize` is the uncompressed bytes per stored chunk.
    public init(client: RedisClient, namespace: String, chunkSize: Int = 512 * 1024) {
        self.client = client
        self.namespace = namespace
        self.blobs = BlobStore(client: client, prefix: "\(namespace):datasets:blob:", chunkSize: chunkSize)
    }

    var namesKey: String { "\(namespace):datasets:names" }
    func recordKey(_ name: String) -> String { "\(namespace):datasets:\(name)" }

    /// The format of some bytes: `npy` when they start with the NumPy magic, else `csv`.
    public static func detectFormat(_ bytes: [UInt8]) -> String {
        bytes.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) ? "npy" : "csv"
    }

    /// Stores `bytes` under `name` (format detected when nil): `push(name:streaming:)` (ModelUpload.swift) over
    /// one piece.
    @discardableResult
    public func push(name: String, bytes: [UInt8], format: String? = nil, metadata: [String: String] = [:]) async throws -> DatasetRecord {
        try await push(name: name, streaming: SinglePiece(bytes: bytes), format: format, metadata: metadata)
    }

    /// The record of `name`.
    public func record(_ name: String) async throws -> DatasetRecord {
        guard isValidRegistryName(name) else {
            throw ModelStoreError.invalidArgument("dataset name '\(name)' must be 1–64 of A–Z a–z 0–9 _ - .")
        }
        guard let bytes = try await client.execute(RedisCommand("GET", recordKey(name))).bytes else {
            throw ModelStoreError.notFound("no dataset 'farm:\(name)' (push one with `jobfarm dataset push`)")
        }
        do {
            return try JSONDecoder().decode(DatasetRecord.self, from: Data(bytes))
        } catch {
            throw ModelStoreError.corrupt("record of dataset '\(name)' is not valid JSON")
        }
    }

    /// The bytes of `name`, checksum verified.
    public func bytes(_ name: String) async throws -> (record: DatasetRecord, bytes: [UInt8]) {
        let record = try await record(name)
        do {
            return (record, try await blobs.get(record.sha256))
        } catch let error as ModelStoreError {
            if case .corrupt(let message) = error { throw ModelStoreError.corrupt("dataset '\(name)': \(message)") }
            throw error
        }
    }

    /// Streams the bytes of the dataset `record` describes into the file at `url` (see `BlobStore.write`): never
    /// held whole in memory, size and checksum verified, the file removed on error.
    /// - Returns: the number of bytes written.
    @discardableResult
    public func write(_ record: DatasetRecord, to url: URL) async throws -> Int {
        do {
            return try await blobs.write(record.sha256, to: url)
        } catch let error as ModelStoreError {
            if case .corrupt(let message) = error { throw ModelStoreError.corrupt("dataset '\(record.name)': \(message)") }
            throw error
        }
    }

    /// Every dataset record, by name.
    public func list() async throws -> [DatasetRecord] {
        let names = (try await client.execute(RedisCommand("SMEMBERS", namesKey)).array ?? []).compactMap(\.string).sorted()
        var records: [DatasetRecord] = []
        for name in names {
            if let record = try? await record(name) { records.append(record) }
        }
        return records
    }
}
