import Compute
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import MLJobs
import ModelStore
import RedisClient
import Testing

/// `farm:NAME` datasets are streamed from Redis chunk by chunk into a local, content-addressed spool file and read
/// from there like any file, never loaded whole.
@Suite("Farm datasets streamed to a local spool", .enabled(if: TestRedis.available))
struct FarmDatasetTests {
    /// A fresh directory under the temporary directory, removed by the caller.
    func scratchDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-spool-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    /// digits.csv pushed as `digits` in a fresh namespace with 4 KiB chunks (265 KB spans 65 of them, so 5 pipelined
    /// round trips of 16), and a scratch file path to write it to; the namespace and directory are removed after.
    func withChunkedDigits(
        _ body: (_ client: RedisClient, _ store: DatasetStore, _ record: DatasetRecord, _ bytes: [UInt8], _ file: URL) async throws -> Void
    ) async throws {
        let client = try testClient()
        defer { client.close() }
        let namespace = "tml-spool-" + UUID().uuidString.prefix(8).lowercased()
        let store = DatasetStore(client: client, namespace: namespace, chunkSize: 4096)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: PackagePaths.digits)))
        let record = try await store.push(name: "digits", bytes: bytes)
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await body(client, store, record, bytes, directory.appendingPathComponent("digits.csv"))
        try await deleteNamespace(client, namespace)
    }

    @Test("BlobStore.write streams a many-chunk blob to a file equal to the original bytes")
    func roundTrip() async throws {
        try await withChunkedDigits { client, store, record, bytes, file in
            #expect(try await client.execute(RedisCommand("HGET", store.blobs.key(record.sha256), "chunks")).int == (bytes.count + 4095) / 4096)
            let written = try await store.write(record, to: file)
            #expect(written == bytes.count)
            #expect(try [UInt8](Data(contentsOf: file)) == bytes)
            #expect(try await store.bytes("digits").bytes == bytes, "get, which shares the chunk reader, still agrees")
            // An existing file is truncated, not appended to.
            try await store.write(record, to: file)
            #expect(try [UInt8](Data(contentsOf: file)) == bytes)
        }
    }

    @Test("a chunk replaced by other valid zlib data fails the checksum; a chunk of another length fails the size; no file is left")
    func corruptChunk() async throws {
        try await withChunkedDigits { client, store, record, _, file in
            let key = store.blobs.key(record.sha256)

            // Chunk 20 (in the second round trip) inflates fine to 4096 other bytes.
            let original = try await client.execute(RedisCommand("HGET", key, "c:20")).bytes ?? []
            var inflated = try JobProtocolBridge.inflate(original)
            inflated[10] ^= 0x01
            var forged = RedisCommand("HSET", key, "c:20")
            forged.append(bytes: JobProtocolBridge.deflate(inflated))
            _ = try await client.execute(forged)
            do {
                try await store.write(record, to: file)
                Issue.record("a corrupted dataset was written")
            } catch let error as ModelStoreError {
                guard case .corrupt(let message) = error else { Issue.record("wrong error \(error)"); return }
                #expect(message.contains("checksum mismatch") && message.contains("dataset 'digits'"), "\(message)")
            }
            #expect(!FileManager.default.fileExists(atPath: file.path), "the partial file is removed")

            // A valid zlib chunk of the wrong length.
            var short = RedisCommand("HSET", key, "c:20")
            short.append(bytes: JobProtocolBridge.deflate(Array(inflated.prefix(100))))
            _ = try await client.execute(short)
            do {
                try await store.write(record, to: file)
                Issue.record("a short dataset was written")
            } catch let error as ModelStoreError {
                #expect("\(error)".contains("corrupt") && "\(error)".contains("after inflating"), "\(error)")
            }
            #expect(!FileManager.default.fileExists(atPath: file.path))
        }
    }

    @Test("batch_analysis on a corrupted farm dataset fails non-retryably naming the dataset; nothing is left in the spool")
    func corruptDatasetFailsTheJob() async throws {
        let farm = try mlTestFarm()
        let spool = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: spool) }
        var options = testOptions()
        options.spoolDirectory = spool.path
        try await withMLWorker(farm: farm, options: options) { environment in
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: PackagePaths.digits)))
            let record = try await environment.datasets.push(name: "digits-bad", bytes: bytes)
            let key = environment.datasets.blobs.key(record.sha256)
            let original = try await environment.datasets.client.execute(RedisCommand("HGET", key, "c:0")).bytes ?? []
            var inflated = try JobProtocolBridge.inflate(original)
            inflated[1000] = UInt8(ascii: "7")
            var forged = RedisCommand("HSET", key, "c:0")
            forged.append(bytes: JobProtocolBridge.deflate(inflated))
            _ = try await environment.datasets.client.execute(forged)

            let status = try await runJob(farm, "batch_analysis", #"{"dataset": "farm:digits-bad", "labelColumn": "target"}"#)
            #expect(status.state == .dead && status.reason == "non_retryable", "\(status.state.rawValue) \(status.reason ?? "")")
            let message = status.error ?? ""
            for word in ["farm:digits-bad", "corrupt", "checksum mismatch", "jobfarm dataset push"] {
                #expect(message.contains(word), "'\(message)' should mention '\(word)'")
            }
            let left = (try? FileManager.default.contentsOfDirectory(atPath: spool.appendingPathComponent("jobfarm-datasets").path)) ?? []
            #expect(left.isEmpty, "no spooled or partial file is left: \(left)")
        }
    }
}
