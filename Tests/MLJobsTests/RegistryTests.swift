import JobFarmTesting
import Compute
import Foundation
import JobProtocol
import JobQueue
import ModelStore
import RedisClient
import Testing

@Suite("Model registry", .enabled(if: TestRedis.available))
struct RegistryTests {
    @Test("push, versions, aliases, pull round trip")
    func roundTrip() async throws {
        let client = try testClient()
        defer { client.close() }
        let namespace = "tml-reg-" + UUID().uuidString.prefix(8).lowercased()
        // Small chunks so that the model spans several of them.
        let registry = ModelRegistry(client: client, namespace: namespace, chunkSize: 4096)
        let model = try randomModel(inputs: 64, hidden: 64, outputs: 10)
        let bytes = [UInt8](try model.safetensorsFile().serialized())
        #expect(bytes.count > 3 * 4096)

        let v1 = try await registry.push(safetensors: bytes, config: model.config, name: "m")
        let v2 = try await registry.push(safetensors: bytes, config: model.config, name: "m")
        #expect(v1.version == 1 && v2.version == 2)
        #expect(v1.sha256 == v2.sha256, "same bytes, same content address")
        #expect(v1.sha256 == sha256Hex(bytes))
        #expect(v1.precision == "fp32" && v1.inputs == 64 && v1.outputs == 10)
        #expect(v1.tensorBytes == model.tensorByteCount)

        #expect(try await registry.resolve("m").version == 2)
        #expect(try await registry.resolve("m:latest").version == 2)
        #expect(try await registry.resolve("m:1").version == 1)
        #expect(try await registry.setAlias("production", name: "m", version: 1) == nil)
        #expect(try await registry.resolve("m:production").version == 1)
        #expect(try await registry.setAlias("production", name: "m", version: 2) == 1)
        #expect(try await registry.resolve("m:production").version == 2)
        #expect(try await registry.aliases("m") == ["production": 2])
        #expect(try await registry.names() == ["m"])
        #expect(try await registry.versions("m").map(\.version) == [1, 2])

        let pulled = try await registry.bytes(of: v1)
        #expect(pulled == bytes)
        let loaded = try await registry.load(v2)
        let x = (0..<64).map { Float($0) / 64 }
        #expect(try loaded.logits(rows: x, batch: 1) == model.logits(rows: x, batch: 1))

        await #expect(throws: ModelStoreError.self) { try await registry.resolve("m:staging") }
        await #expect(throws: ModelStoreError.self) { try await registry.resolve("m:9") }
        await #expect(throws: ModelStoreError.self) { try await registry.resolve("nope") }
        await #expect(throws: ModelStoreError.self) { try await registry.setAlias("latest", name: "m", version: 1) }
        await #expect(throws: ModelStoreError.self) { try await registry.setAlias("prod", name: "m", version: 7) }
        try await deleteNamespace(client, namespace)
    }

    @Test("a corrupt or swapped chunk fails the checksum with a clear error")
    func corruptChunk() async throws {
        let client = try testClient()
        defer { client.close() }
        let namespace = "tml-reg-" + UUID().uuidString.prefix(8).lowercased()
        let registry = ModelRegistry(client: client, namespace: namespace, chunkSize: 4096)
        let model = try randomModel(inputs: 64, hidden: 32, outputs: 10)
        let version = try await registry.push(model: model, name: "m")
        let key = registry.blobs.key(version.sha256)

        // 1. Garbage in a chunk: it no longer inflates.
        var garbage = RedisCommand("HSET", key, "c:1")
        garbage.append(bytes: [UInt8](repeating: 0x42, count: 100))
        _ = try await client.execute(garbage)
        do {
            _ = try await registry.load(version)
            Issue.record("a corrupt chunk loaded")
        } catch let error as ModelStoreError {
            guard case .corrupt(let message) = error else { Issue.record("wrong error \(error)"); return }
            #expect(message.contains("chunk 1") && message.contains("m:1"), "\(message)")
        }

        // 2. A valid zlib chunk with different bytes: inflates fine, fails the SHA-256.
        let original = try await client.execute(RedisCommand("HGET", key, "c:0")).bytes ?? []
        var inflated = try JobProtocolBridge.inflate(original)
        inflated[100] ^= 0xFF
        var swapped = RedisCommand("HSET", key, "c:1")
        swapped.append(bytes: JobProtocolBridge.deflate(inflated))
        _ = try await client.execute(swapped)
        do {
            _ = try await registry.bytes(of: version)
            Issue.record("a swapped chunk loaded")
        } catch let error as ModelStoreError {
            #expect("\(error)".contains("checksum mismatch"), "\(error)")
        }
        try await deleteNamespace(client, namespace)
    }

    @Test("push refuses a bad safetensors header and an unsupported dtype")
    func pushRefusesBadFiles() async throws {
        let client = try testClient()
        defer { client.close() }
        let namespace = "tml-reg-" + UUID().uuidString.prefix(8).lowercased()
        let registry = ModelRegistry(client: client, namespace: namespace)
        let model = try randomModel()
        for (bytes, expected) in [(BadFiles.hugeHeaderLength, "header"), (BadFiles.unsupportedDType, "I16"), (BadFiles.offsetsPastEnd, "data_offsets")] {
            do {
                _ = try await registry.push(safetensors: bytes, config: model.config, name: "bad")
                Issue.record("a bad file was accepted")
            } catch let error as ModelStoreError {
                guard case .invalidModel(let message) = error else { Issue.record("wrong error \(error)"); continue }
                #expect(message.contains(expected), "\(message)")
            }
        }
        #expect(try await registry.names().isEmpty, "nothing stored")
    }

    @Test("datasets: push, list, bytes back")
    func datasets() async throws {
        let client = try testClient()
        defer { client.close() }
        let namespace = "tml-ds-" + UUID().uuidString.prefix(8).lowercased()
        let store = DatasetStore(client: client, namespace: namespace)
        let csv = Array("a,b,label\n1,2,0\n3,4,1\n".utf8)
        let npy = [UInt8](try NpyArray(shape: [2, 2], storage: .float32([1, 2, 3, 4])).serialized())
        #expect(try await store.push(name: "small", bytes: csv).format == "csv")
        #expect(try await store.push(name: "arr", bytes: npy).format == "npy")
        #expect(try await store.list().map(\.name) == ["arr", "small"])
        #expect(try await store.bytes("small").bytes == csv)
        await #expect(throws: ModelStoreError.self) { try await store.record("missing") }
        try await deleteNamespace(client, namespace)
    }
}

@Suite("Model cache")
struct ModelCacheTests {
    @Test("LRU bounded in bytes, one load per key even when concurrent")
    func lru() async throws {
        let model = try randomModel()  // 8·16 + 16 + 16·4 + 4 floats
        let bytes = model.tensorByteCount
        let cache = ModelCache(capacityBytes: bytes * 2, idleTimeout: nil)
        async let a = cache.model(for: "a") { try await Task.sleep(for: .milliseconds(20)); return model }
        async let b = cache.model(for: "a") { model }
        _ = try await (a, b)
        #expect(await cache.loads == 1)
        _ = try await cache.model(for: "b") { model }
        _ = try await cache.model(for: "a") { model }  // a is now most recent
        _ = try await cache.model(for: "c") { model }  // evicts b
        #expect(await cache.keys == ["c", "a"])
        #expect(await cache.cachedBytes == 2 * bytes)
        #expect(await cache.loads == 3)
    }

    @Test("idle entries are dropped")
    func idle() async throws {
        let model = try randomModel()
        let cache = ModelCache(capacityBytes: 1 << 20, idleTimeout: .milliseconds(30))
        _ = try await cache.model(for: "a") { model }
        try await Task.sleep(for: .milliseconds(60))
        _ = try await cache.model(for: "b") { model }
        #expect(await cache.keys == ["b"])
    }
}

/// Hand-made bad safetensors files.
enum BadFiles {
    static func file(header: String, body: [UInt8]) -> [UInt8] {
        let h = Array(header.utf8)
        var out = withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) }
        out += h
        out += body
        return out
    }
    /// A header length of 2^63.
    static var hugeHeaderLength: [UInt8] {
        withUnsafeBytes(of: (UInt64(1) << 63).littleEndian) { Array($0) } + Array("{}".utf8)
    }
    /// Int16 tensors.
    static var unsupportedDType: [UInt8] {
        file(header: #"{"0.weight":{"dtype":"I16","shape":[1,1],"data_offsets":[0,2]}}"#, body: [0, 0])
    }
    /// Offsets past the end of the data.
    static var offsetsPastEnd: [UInt8] {
        file(header: #"{"0.weight":{"dtype":"F32","shape":[16,8],"data_offsets":[0,512]}}"#, body: [UInt8](repeating: 0, count: 16))
    }
}

/// zlib through JobProtocol, for tests that forge chunks.
enum JobProtocolBridge {
    static func inflate(_ bytes: [UInt8]) throws -> [UInt8] { try PayloadCompressionShim.decompress(bytes) }
    static func deflate(_ bytes: [UInt8]) -> [UInt8] { PayloadCompressionShim.compress(bytes) }
}
