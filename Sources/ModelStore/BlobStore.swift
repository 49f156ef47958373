import Crypto
import Foundation
import JobProtocol
import RedisClient

/// Errors of the model and dataset registry. Each message names what was asked for and what is wrong.
public enum ModelStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No such model, version, alias or dataset.
    case notFound(String)
    /// Stored bytes do not match their SHA-256, or a chunk is missing or does not inflate.
    case corrupt(String)
    /// A name, alias or argument the registry does not accept.
    case invalidArgument(String)
    /// The bytes are not a usable model (bad safetensors header, unsupported dtype, config mismatch).
    case invalidModel(String)
    /// A local file could not be written (spooling a blob to disk).
    case io(String)
    /// An upload passed its size limit; nothing of it was kept.
    case tooLarge(String)

    public var description: String {
        switch self {
        case .notFound(let m): return "not found: \(m)"
        case .corrupt(let m): return "corrupt: \(m)"
        case .invalidArgument(let m): return "invalid argument: \(m)"
        case .invalidModel(let m): return "invalid model: \(m)"
        case .io(let m): return "i/o error: \(m)"
        case .tooLarge(let m): return "too large: \(m)"
        }
    }
}

/// Hex SHA-256 of some bytes.
public func sha256Hex(_ bytes: some DataProtocol) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

/// Content-addressed binary storage in Redis: one HASH per blob, keyed by the SHA-256 of the bytes.
///
/// The hash holds `size`, `chunks`, `chunk_size`, `complete` and one field per zlib-compressed chunk
/// (`c:0`, `c:1`, …). `complete` is written last, so a reader never sees a half-written blob. On load every
/// chunk is inflated and the SHA-256 of the whole is checked against the key: corruption is an error, never
/// silently wrong weights.
public struct BlobStore: Sendable {
    /// The Redis connection used for every call.
    public let client: RedisClient
    /// Key prefix, e.g. `jf:models:blob:`.
    public let prefix: String
    /// Uncompressed bytes per chunk (512 KiB by default): keeps every Redis value small.
    public let chunkSize: Int
    /// Largest blob accepted or loaded.
    public static let maxBytes = 2 << 30

    /// Creates a store writing blobs under `prefix`.
    public init(client: RedisClient, prefix: String, chunkSize: Int = 512 * 1024) {
        self.client = client
        self.prefix = prefix
        self.chunkSize = max(4096, chunkSize)
    }

    /// The key of the blob with this SHA-256.
    public func key(_ sha256: String) -> String { prefix + sha256 }

    /// True when a complete blob with this SHA-256 is stored.
    public func contains(_ sha256: String) async throws -> Bool {
        try await client.execute(RedisCommand("HGET", key(sha256), "complete")).string == "1"
    }

    /// Stores `bytes` (unless an identical blob is already there) and returns their SHA-256: the streaming
    /// `put(streaming:)` (BlobUpload.swift) over one piece.
    /// - Returns: the hash and whether new data was written.
    @discardableResult
    public func put(_ bytes: [UInt8]) async throws -> (sha256: String, written: Bool, storedBytes: Int) {
        guard bytes.count <= Self.maxBytes else {
            throw ModelStoreError.invalidArgument("blob of \(bytes.count) bytes is over the \(Self.maxBytes)-byte limit")
        }
        let result = try await put(streaming: SinglePiece(bytes: bytes))
        return (result.sha256, result.written, result.storedBytes)
    }

    /// Loads and verifies a blob. Throws `ModelStoreError.notFound` or `.corrupt` (checksum mismatch,
    /// missing chunk, chunk that does not inflate).
    public func get(_ sha256: String) async throws -> [UInt8] {
        var output = [UInt8]()
        try await forEachChunk(sha256) { size in
            output.reserveCapacity(size)
        } body: { chunk in
            output.append(contentsOf: chunk)
        }
        return output
    }

    /// Streams a blob into the file at `url` (created, or truncated if it exists) without holding it whole: chunks
    /// are fetched 16 per pipelined round trip, as `get` does, and each is inflated, hashed (SHA-256, incrementally)
    /// and appended to the file. The size and checksum are verified at the end; on any error the file is removed, so
    /// callers write to a temporary name and rename it once this returns.
    /// - Returns: the number of bytes written.
    /// - Throws: `ModelStoreError.notFound` or `.corrupt` with the messages of `get`; `ModelStoreError.io` when the
    ///   file cannot be written.
    @discardableResult
    public func write(_ sha256: String, to url: URL) async throws -> Int {
        func ioError(_ error: Error) -> ModelStoreError {
            ModelStoreError.io("writing blob \(sha256) to \(url.path): \(error.localizedDescription)")
        }
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw ModelStoreError.io("cannot create \(url.path) to write blob \(sha256) into")
        }
        var written = 0
        do {
            let handle: FileHandle
            do { handle = try FileHandle(forWritingTo: url) } catch { throw ioError(error) }
            defer { try? handle.close() }
            try await forEachChunk(sha256) { _ in } body: { chunk in
                do { try handle.write(contentsOf: chunk) } catch { throw ioError(error) }
                written += chunk.count
            }
            do { try handle.synchronize() } catch { throw ioError(error) }
        } catch {
            try? FileManager.default.removeItem(at: url)
            throw error
        }
        return written
    }

    /// Reads blob `sha256` chunk by chunk (16 per pipelined round trip) and hands each inflated chunk to `body`, in
    /// order, after `start` got the blob's size; hashes as it goes and checks size and SHA-256 at the end.
    private func forEachChunk(
        _ sha256: String, start: (_ size: Int) throws -> Void, body: ([UInt8]) throws -> Void
    ) async throws {
        let key = key(sha256)
        let meta = try await client.execute(RedisCommand("HMGET", key, "complete", "size", "chunks")).array ?? []
        guard meta.count == 3, meta[0].string == "1" else {
            throw ModelStoreError.notFound("blob \(sha256) is not stored (or its upload never completed)")
        }
        guard let size = meta[1].int, let chunks = meta[2].int, size >= 0, size <= Self.maxBytes, chunks >= 1 else {
            throw ModelStoreError.corrupt("blob \(sha256) has unreadable size/chunk fields")
        }
        try start(size)
        var hasher = SHA256()
        var total = 0
        for first in stride(from: 0, to: chunks, by: 16) {
            let indices = first..<min(chunks, first + 16)
            let replies = try await client.send(indices.map { RedisCommand("HGET", key, "c:\($0)") })
            for (index, reply) in zip(indices, replies) {
                guard let compressed = reply.bytes else {
                    throw ModelStoreError.corrupt("blob \(sha256): chunk \(index) of \(chunks) is missing")
                }
                let chunk: [UInt8]
                do {
                    chunk = try PayloadCompression.decompress(compressed, limit: max(chunkSize, size))
                } catch {
                    throw ModelStoreError.corrupt("blob \(sha256): chunk \(index) of \(chunks) does not inflate (\(error))")
                }
                total += chunk.count
                guard total <= size else {
                    throw ModelStoreError.corrupt("blob \(sha256): more than the expected \(size) bytes after inflating chunk \(index) of \(chunks)")
                }
                hasher.update(data: chunk)
                try body(chunk)
            }
        }
        guard total == size else {
            throw ModelStoreError.corrupt("blob \(sha256): \(total) bytes after inflating, expected \(size)")
        }
        let actual = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        guard actual == sha256 else {
            throw ModelStoreError.corrupt("checksum mismatch for blob \(sha256): the stored bytes hash to \(actual)")
        }
    }
}

/// Names accepted for models, datasets and aliases: 1–64 of `A–Z a–z 0–9 _ - .`, not starting with a dot.
public func isValidRegistryName(_ name: String) -> Bool {
    guard (1...64).contains(name.utf8.count), !name.hasPrefix(".") else { return false }
    return name.utf8.allSatisfy { byte in
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
    }
}

/// Milliseconds since 1970.
func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
