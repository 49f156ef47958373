import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import JobWorker
import RedisClient
import Testing

@Suite("Redis URLs")
struct RedisURLTests {
    @Test func fullURL() throws {
        let config = try RedisConfiguration(url: "redis://alice:s%40cret@10.1.2.3:6390/4")
        #expect(config.endpoint == .tcp(host: "10.1.2.3", port: 6390))
        #expect(config.username == "alice")
        #expect(config.password == "s@cret")
        #expect(config.database == 4)
        #expect(config.description == "redis://alice:***@10.1.2.3:6390/4")
    }

    @Test func passwordOnlyAndDefaults() throws {
        let config = try RedisConfiguration(url: "redis://:pw@localhost")
        #expect(config.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(config.username == nil)
        #expect(config.password == "pw")
        #expect(config.database == 0)
    }

    @Test func ipv6() throws {
        let config = try RedisConfiguration(url: "redis://[::1]:7000")
        #expect(config.endpoint == .tcp(host: "::1", port: 7000))
    }

    @Test func unixSocket() throws {
        let config = try RedisConfiguration(url: "unix:///var/run/redis.sock?db=2&password=x")
        #expect(config.endpoint == .unix(path: "/var/run/redis.sock"))
        #expect(config.database == 2)
        #expect(config.password == "x")
    }

    @Test(arguments: ["http://x", "redis://host:notaport", "redis://host/abc", "rediss://host", "unix://relative.sock"])
    func rejected(url: String) {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
    }
}

@Suite("Envelope")
struct EnvelopeTests {
    @Test func roundTrip() throws {
        let envelope = JobEnvelope(
            kind: "echo", queue: "ml", tier: "premium", payload: .object(["text": .string("é \"quoted\"\n"), "n": .number(3)]),
            maxAttempts: 7, runAt: 1_700_000_000_000, timeoutMilliseconds: 5000, idempotencyKey: "k1",
            trace: ["traceparent": "00-abc-def-01"])
        let decoded = try JobEnvelope(decoding: envelope.encoded())
        #expect(decoded == envelope)
    }

    @Test func largePayloadIsCompressedWithChecksum() throws {
        let big = JSONValue.object(["rows": .array((0..<1000).map { .number(Double($0 % 10)) })])
        let envelope = JobEnvelope(kind: "inference", payload: big)
        let text = envelope.encoded()
        #expect(text.contains("\"payload_z\""))
        #expect(text.contains("\"payload_crc32\""))
        #expect(!text.contains("\"payload\":"))
        #expect(text.utf8.count < big.jsonText.utf8.count)
        #expect(try JobEnvelope(decoding: text).payload == big)
    }

    @Test func incompressiblePayloadsAreStoredAsTheyAre() throws {
        // Base64 of random float bytes (a tensor) shrinks too little to pay for deflating it and base64 again.
        var generator = SystemRandomNumberGenerator()
        for size in [1500, 200_000] {
            let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let payload = JSONValue.object(["inputs": .object(["data": .string(Data(bytes).base64EncodedString()), "dtype": .string("float32")])])
            let text = JobEnvelope(kind: "inference", payload: payload).encoded()
            #expect(!text.contains("\"payload_z\""), "\(size) random bytes")
            #expect(try JobEnvelope(decoding: text).payload == payload)
        }
    }

    @Test func rowsOfFloatNumbersAreStoredAsTheyAre() throws {
        // Digits with little repetition shrink to about 0.65 as base64: not worth deflating and inflating again.
        var state: UInt64 = 99
        let values: [Float] = (0..<(256 * 64)).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Double(state >> 11) / Double(1 << 53) * 16 - 4)
        }
        let rows = FloatMatrix(rows: 256, columns: 64, values: values).jsonValue
        let payload = JSONValue.object(["model": .string("m"), "inputs": rows])
        let text = JobEnvelope(kind: "inference", payload: payload).encoded()
        #expect(!text.contains("\"payload_z\""))
        #expect(try JobEnvelope(decoding: text).payload == payload)
        // The same size of repetitive JSON is still compressed.
        let repetitive = JSONValue.array((0..<2000).map { _ in .object(["label": .string("cat"), "score": .number(1)]) })
        #expect(JobEnvelope(kind: "echo", payload: repetitive).encoded().contains("\"payload_z\""))
    }

    @Test func corruptChecksumIsRejected() throws {
        let envelope = JobEnvelope(kind: "x", payload: .string(String(repeating: "a", count: 4000)))
        var object = try JSONSerialization.jsonObject(with: Data(envelope.encoded().utf8)) as! [String: Any]
        object["payload_crc32"] = 12345
        let tampered = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
        #expect(throws: EnvelopeError.self) { try JobEnvelope(decoding: tampered) }
    }

    @Test func errorsNameTheProblem() {
        func message(_ text: String) -> String {
            do { _ = try JobEnvelope(decoding: text); return "no error" } catch { return "\(error)" }
        }
        #expect(message("garbage").contains("not a JSON object"))
        #expect(message("[1,2]").contains("not a JSON object"))
        #expect(message("{\"v\":1,\"id\":\"a\"}").contains("'kind'"))
        #expect(message("{\"v\":2,\"id\":\"a\",\"kind\":\"k\"}").contains("version 2"))
        #expect(message("{\"v\":1,\"id\":\"a b\",\"kind\":\"k\"}").contains("'id'"))
        #expect(message("{\"v\":1,\"id\":\"a\",\"kind\":\"k\",\"max_attempts\":\"x\"}").contains("max_attempts"))
    }

    @Test func jobIDsAreSortableAndValid() {
        let first = JobID.make(milliseconds: 1_000)
        let second = JobID.make(milliseconds: 2_000)
        #expect(first.count == 26)
        #expect(first < second)
        #expect(JobID.isValid(first))
        #expect(Set((0..<1000).map { _ in JobID.make() }).count == 1000)
        #expect(!JobID.isValid("has space"))
        #expect(!JobID.isValid(""))
    }

    @Test func zlibRoundTripAndCRC() throws {
        let bytes = Array("hello hello hello hello".utf8)
        #expect(try PayloadCompression.decompress(PayloadCompression.compress(bytes)) == bytes)
        #expect(PayloadCompression.crc32(Array("123456789".utf8)) == 0xCBF4_3926)  // the CRC-32 check value
        #expect(throws: EnvelopeError.self) { try PayloadCompression.decompress([1, 2, 3, 4]) }
    }

    /// Sizes around the window-size steps and the output buffer's growth, random (incompressible) and repetitive
    /// bytes; truncated streams and outputs over the limit are refused.
    @Test func zlibSizesTruncationAndLimit() throws {
        var random = FastRandom(seed: 42)
        for size in [0, 1, 511, 512, 513, 4095, 4096, 4097, 40_000, 300_000] {
            let noise = (0..<size).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            #expect(try PayloadCompression.decompress(PayloadCompression.compress(noise)) == noise, "random \(size)")
            let text = Array(String(repeating: "{\"x\":[1.5,2.25]}", count: size / 16 + 1).utf8)
            let packed = PayloadCompression.compress(text)
            if text.count >= 256 { #expect(packed.count < text.count / 4) }
            #expect(try PayloadCompression.decompress(packed) == text, "text \(size)")
            // Any level inflates the same way.
            #expect(try PayloadCompression.decompress(PayloadCompression.compress(text, level: 9)) == text)
        }
        let text = Array(String(repeating: "abcdefgh", count: 10_000).utf8)
        let packed = PayloadCompression.compress(text)
        #expect(throws: EnvelopeError.self) { try PayloadCompression.decompress(Array(packed.prefix(packed.count / 2))) }
        #expect(throws: EnvelopeError.self) { try PayloadCompression.decompress(packed, limit: 1000) }
        #expect(try PayloadCompression.decompress(packed, limit: text.count) == text)
        // Levels outside 1…9 are clamped (zlib 1.2.13's bound is short for level 0 on tiny inputs).
        for size in 0..<8 {
            let bytes = [UInt8](repeating: 7, count: size)
            #expect(try PayloadCompression.decompress(PayloadCompression.compress(bytes, level: 0)) == bytes)
            #expect(try PayloadCompression.decompress(PayloadCompression.compress(bytes, level: 42)) == bytes)
        }
        #expect(try PayloadCompression.decompress(packed, limit: .max) == text)
        #expect(throws: EnvelopeError.self) { try PayloadCompression.decompress(packed, limit: -1) }
    }
}

@Suite("Policies")
struct PolicyTests {
    @Test func backoffDoublesUpToTheCap() {
        let policy = RetryPolicy(base: .seconds(1), multiplier: 2, cap: .seconds(5), maxAttempts: 10, jitter: 0)
        #expect((1...5).map { policy.delay(afterAttempt: $0) } == [.seconds(1), .seconds(2), .seconds(4), .seconds(5), .seconds(5)])
    }

    @Test func jitterStaysInItsBand() {
        let policy = RetryPolicy.standard
        for _ in 0..<200 {
            let delay = policy.delay(afterAttempt: 3).seconds
            #expect(delay >= 3.2 && delay <= 4.8)
        }
    }

    @Test func tierPolicyParsing() throws {
        #expect(try TierPolicy(parsing: "strict") == .strict(agingAfter: nil))
        #expect(try TierPolicy(parsing: "strict:aging=500ms") == .strict(agingAfter: .milliseconds(500)))
        #expect(try TierPolicy(parsing: "strict:aging=500ms") == .strict(agingAfter: .milliseconds(500), agedShare: 10))
        #expect(try TierPolicy(parsing: "strict:aging=2s,share=4") == .strict(agingAfter: .seconds(2), agedShare: 4))
        #expect(throws: JobFarmError.self) { try TierPolicy(parsing: "strict:aging=2s,share=0") }
        #expect(throws: JobFarmError.self) { try TierPolicy(parsing: "strict:aging=2s,every=4") }
        #expect(try TierPolicy(parsing: "weighted:premium=6,free=1") == .weighted(["premium": 6, "free": 1]))
        #expect(throws: JobFarmError.self) { try TierPolicy(parsing: "weighted:premium=0") }
        #expect(throws: JobFarmError.self) { try TierPolicy(parsing: "fastest") }
    }

    @Test func durations() {
        #expect(Duration.parse("250ms") == .milliseconds(250))
        #expect(Duration.parse("2m") == .seconds(120))
        #expect(Duration.parse("1.5") == .milliseconds(1500))
        #expect(Duration.parse("x") == nil)
    }

    @Test func configurationIsChecked() {
        #expect(throws: JobFarmError.self) { try JobFarmConfiguration(tiers: []).validate() }
        #expect(throws: JobFarmError.self) { try JobFarmConfiguration(tiers: ["a", "a"], defaultTier: "a").validate() }
        #expect(throws: JobFarmError.self) { try JobFarmConfiguration(leaseDuration: .seconds(1), heartbeatInterval: .seconds(2)).validate() }
        #expect(throws: Never.self) { try JobFarmConfiguration().validate() }
    }
}

/// A server that is up but still loading its data (after a restart with a large AOF) refuses commands with
/// `LOADING …`: that is treated like a lost connection (retried), not as a failed operation.
@Suite("Redis errors")
struct RedisErrorTests {
    @Test func notReadyRepliesAreRetriedLikeConnectionErrors() {
        #expect(RedisError.isNotReadyReply("LOADING Redis is loading the dataset in memory"))
        #expect(RedisError.isNotReadyReply("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."))
        #expect(RedisError.isNotReadyReply("TRYAGAIN Multiple keys request during rehashing of slot"))
        #expect(!RedisError.isNotReadyReply("ERR unknown command"))
        #expect(!RedisError.isNotReadyReply("NOSCRIPT No matching script"))
        #expect(RedisError.notReady("LOADING Redis is loading the dataset in memory").isConnectionError)
        #expect(!RedisError.server("ERR wrong number of arguments").isConnectionError)
    }
}

/// One reading of a registry entry's `queues` for every caller (`enqueue`'s kind check, the dispatcher's
/// `workersServing`).
@Suite("Worker registry entries")
struct WorkerInfoTests {
    @Test func servedQueues() {
        let listed = WorkerInfo(id: "w1", lastSeen: 0, fields: ["queues": "default,ml"])
        #expect(listed.servedQueues == ["default", "ml"])
        #expect(listed.serves(queue: "ml") && !listed.serves(queue: "other"))
        let every = WorkerInfo(id: "w2", lastSeen: 0, fields: ["queues": "*"])
        #expect(every.servedQueues == nil && every.serves(queue: "anything"))
        let unknown = WorkerInfo(id: "w3", lastSeen: 0, fields: ["pid": "1"])
        #expect(unknown.serves(queue: "default"), "an entry without the field may serve any queue")
    }
}
