import Crypto
import Foundation
import JobProtocol
import RedisClient

/// Streaming writes into a `BlobStore`: the bytes arrive in pieces of any size (an HTTP request body, a file read
/// in blocks), are cut into chunks of the store's chunk size, hashed (SHA-256) and compressed as they come, and sent
/// a few chunks per pipelined round trip, so at most a few chunks are ever held.
///
/// The chunks go to a temporary key (`<prefix>upload:<uuid>`, expiring after `uploadTTL` should the writer die);
/// once the last chunk is in and the hash is known, one script (`BLOB PUBLISH`, docs/PROTOCOL.md) renames it to
/// `<prefix><sha256>`, or drops it when that blob is already stored. A reader therefore sees a whole blob or none;
/// on any error (over the limit, a refused header, the body failing) the temporary key is deleted.
extension BlobStore {
    /// How long a temporary upload key lives without a write (its writer died): one hour.
    public static let uploadTTLMilliseconds = 3_600_000

    /// Chunks sent per pipelined round trip while streaming.
    static let chunksPerRoundTrip = 4

    /// BLOB PUBLISH: KEYS[1] = the temporary upload key, KEYS[2] = the blob's final key. Renames the upload to the
    /// final key and removes its expiry, unless a complete blob is there already (then the upload is deleted).
    /// Returns 1 when the upload became the blob, 0 when an identical blob was already stored.
    static let publish = RedisScript(name: "blobPublish", source: """
        if redis.call('HGET', KEYS[2], 'complete') == '1' then
          redis.call('DEL', KEYS[1])
          return 0
        end
        redis.call('RENAME', KEYS[1], KEYS[2])
        redis.call('PERSIST', KEYS[2])
        return 1
        """)

    /// Stores the bytes `pieces` yields, never holding more than a few chunks, and returns their SHA-256.
    ///
    /// - Parameters:
    ///   - pieces: the bytes in order, in pieces of any size (a `ByteBuffer`'s `readableBytesView`, `[UInt8]`, …).
    ///   - limit: most bytes accepted; the upload stops with `ModelStoreError.tooLarge` as soon as more arrive.
    ///   - inspect: sees every chunk before it is written, with its offset in the file; throwing refuses the upload
    ///     (the model registry reads the safetensors header from the first chunks this way).
    ///   - finish: called with the total size once every byte arrived, before the blob becomes visible; throwing
    ///     refuses the upload (a file shorter than its header says).
    /// - Returns: the hash, whether new data was written (false: an identical blob was stored), the compressed size,
    ///   and the number of bytes.
    /// - Throws: `.tooLarge` over `limit`; whatever `inspect` or `pieces` throw; Redis errors. Nothing is left
    ///   visible on any of them.
    @discardableResult
    public func put<Pieces: AsyncSequence>(
        streaming pieces: Pieces, limit: Int = BlobStore.maxBytes,
        inspect: (_ chunk: ArraySlice<UInt8>, _ offset: Int) throws -> Void = { _, _ in },
        finish: (_ bytes: Int) throws -> Void = { _ in }
    ) async throws -> (sha256: String, written: Bool, storedBytes: Int, bytes: Int)
    where Pieces.Element: Collection, Pieces.Element.Element == UInt8 {
        let limit = min(limit, Self.maxBytes)
        let temporary = prefix + "upload:" + UUID().uuidString.lowercased()
        do {
            var hasher = SHA256()
            var pending: [UInt8] = []
            pending.reserveCapacity(chunkSize)
            var commands: [RedisCommand] = []
            var chunkCount = 0
            var stored = 0
            var total = 0

            func sendCommands() async throws {
                guard !commands.isEmpty else { return }
                commands.append(RedisCommand("PEXPIRE", temporary, String(Self.uploadTTLMilliseconds)))
                let replies = try await client.send(commands)
                commands.removeAll(keepingCapacity: true)
                if let message = replies.compactMap(\.errorMessage).first {
                    throw RedisError(reply: message, context: "storing an uploaded blob")
                }
            }
            func cutChunk(_ bytes: ArraySlice<UInt8>) throws {
                try inspect(bytes, chunkCount * chunkSize)
                hasher.update(data: bytes)
                let compressed = PayloadCompression.compress(Array(bytes), level: 6)  // stored for long: the default level
                var command = RedisCommand("HSET", temporary, "c:\(chunkCount)")
                command.append(bytes: compressed)
                commands.append(command)
                stored += compressed.count
                chunkCount += 1
            }

            for try await piece in pieces {
                total += piece.count
                guard total <= limit else {
                    throw ModelStoreError.tooLarge("the upload is over the limit of \(limit) bytes; nothing was stored")
                }
                var rest = piece[...]
                while !rest.isEmpty {
                    let take = min(chunkSize - pending.count, rest.count)
                    let end = rest.index(rest.startIndex, offsetBy: take)
                    pending.append(contentsOf: rest[rest.startIndex..<end])
                    rest = rest[end...]
                    if pending.count == chunkSize {
                        try cutChunk(pending[...])
                        pending.removeAll(keepingCapacity: true)
                        if commands.count >= Self.chunksPerRoundTrip { try await sendCommands() }
                    }
                }
            }
            if !pending.isEmpty || chunkCount == 0 { try cutChunk(pending[...]) }
            try finish(total)
            let sha = hasher.finalize().map { String(format: "%02x", $0) }.joined()
            commands.append(RedisCommand(
                "HSET", temporary, "size", String(total), "chunks", String(chunkCount), "chunk_size", String(chunkSize),
                "stored_bytes", String(stored), "complete", "1"))
            try await sendCommands()
            let written = try await publish(temporary, as: sha, chunks: chunkCount)
            return (sha, written, written ? stored : 0, total)
        } catch {
            // Best effort: the key also expires on its own.
            _ = try? await client.execute(RedisCommand("DEL", temporary))
            throw error
        }
    }
}

extension BlobStore {
    /// Makes the finished upload at `temporary` the blob `sha256`: the `BLOB PUBLISH` script; on a Redis Cluster,
    /// where the two keys sit in different hash slots (CROSSSLOT), the chunks are copied to the final key a few per
    /// round trip and `complete` written last (so a reader still sees the whole blob or none), then the upload deleted.
    /// - Returns: whether the blob was written (false: it was stored already).
    func publish(_ temporary: String, as sha256: String, chunks: Int) async throws -> Bool {
        var message: String?
        do {
            let reply = try await client.run(Self.publish, keys: [temporary, key(sha256)], arguments: [])
            if reply.errorMessage == nil { return reply.int == 1 }
            message = reply.errorMessage
        } catch let error as RedisError where "\(error)".contains("CROSSSLOT") {
            message = "\(error)"
        }
        guard let message, message.contains("CROSSSLOT") else {
            throw RedisError(reply: message ?? "no reply", context: "publishing blob \(sha256)")
        }
        if try await contains(sha256) {
            _ = try await client.execute(RedisCommand("DEL", temporary))
            return false
        }
        let final = key(sha256)
        for first in stride(from: 0, to: chunks, by: Self.chunksPerRoundTrip) {
            let indices = first..<min(chunks, first + Self.chunksPerRoundTrip)
            let replies = try await client.send(indices.map { RedisCommand("HGET", temporary, "c:\($0)") })
            var commands: [RedisCommand] = []
            for (index, reply) in zip(indices, replies) {
                guard let bytes = reply.bytes else { throw ModelStoreError.corrupt("upload of blob \(sha256): chunk \(index) vanished before it was published") }
                var command = RedisCommand("HSET", final, "c:\(index)")
                command.append(bytes: bytes)
                commands.append(command)
            }
            if let failure = try await client.send(commands).compactMap(\.errorMessage).first {
                throw RedisError(reply: failure, context: "publishing blob \(sha256)")
            }
        }
        let meta = try await client.execute(RedisCommand("HMGET", temporary, "size", "chunks", "chunk_size", "stored_bytes")).array ?? []
        let values = meta.compactMap(\.string)
        guard values.count == 4 else { throw ModelStoreError.corrupt("upload of blob \(sha256) lost its size fields before it was published") }
        let replies = try await client.send([
            RedisCommand("HSET", final, "size", values[0], "chunks", values[1], "chunk_size", values[2], "stored_bytes", values[3], "complete", "1"),
            RedisCommand("DEL", temporary),
        ])
        if let failure = replies.compactMap(\.errorMessage).first { throw RedisError(reply: failure, context: "publishing blob \(sha256)") }
        return true
    }
}

/// One `[UInt8]` as an `AsyncSequence` of a single piece: how the whole-array `put` and `push` calls reach the
/// streaming ones.
struct SinglePiece: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    let bytes: [UInt8]

    struct AsyncIterator: AsyncIteratorProtocol {
        var bytes: [UInt8]?
        mutating func next() async -> [UInt8]? {
            defer { bytes = nil }
            return bytes
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bytes: bytes) }
}
