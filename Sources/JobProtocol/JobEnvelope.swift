import Foundation

/// Errors in reading an envelope: each names the field and the problem.
public enum EnvelopeError: Error, CustomStringConvertible, Sendable, Equatable {
    case notJSON(String)
    case missingField(String)
    case invalidField(String, String)
    case unsupportedVersion(Int)
    case corruptPayload(String)

    public var description: String {
        switch self {
        case .notJSON(let detail): return "not a JSON object: \(detail)"
        case .missingField(let name): return "envelope has no '\(name)' field"
        case .invalidField(let name, let why): return "envelope field '\(name)' \(why)"
        case .unsupportedVersion(let version): return "envelope version \(version) is not supported (this build reads version 1)"
        case .corruptPayload(let why): return "compressed payload is corrupt: \(why)"
        }
    }
}

/// The versioned job envelope: what a producer writes and a worker reads (docs/PROTOCOL.md, "Envelope").
///
/// Immutable once enqueued; the live counters (attempts, lease, state) live in the job hash beside it.
public struct JobEnvelope: Sendable, Equatable {
    /// The protocol version this build writes.
    public static let version = 1

    public var id: String
    public var kind: String
    public var queue: String
    public var tier: String
    /// The job's parameters: any JSON value.
    public var payload: JSONValue
    /// Attempts already made when this envelope was written (0 for a new job).
    public var attempts: Int
    public var maxAttempts: Int
    /// Milliseconds since 1970.
    public var enqueuedAt: Int64
    /// Earliest start (ms since 1970); `nil` runs as soon as possible.
    public var runAt: Int64?
    /// Wall time allowed for one attempt.
    public var timeoutMilliseconds: Int64
    public var idempotencyKey: String?
    /// W3C trace context (`traceparent`, `tracestate`) or other propagation fields.
    public var trace: [String: String]

    public init(
        id: String = JobID.make(), kind: String, queue: String = "default", tier: String = "standard",
        payload: JSONValue = .null, attempts: Int = 0, maxAttempts: Int = 5,
        enqueuedAt: Int64 = WallClock.nowMilliseconds(), runAt: Int64? = nil, timeoutMilliseconds: Int64 = 300_000,
        idempotencyKey: String? = nil, trace: [String: String] = [:]
    ) {
        self.id = id
        self.kind = kind
        self.queue = queue
        self.tier = tier
        self.payload = payload
        self.attempts = attempts
        self.maxAttempts = maxAttempts
        self.enqueuedAt = enqueuedAt
        self.runAt = runAt
        self.timeoutMilliseconds = timeoutMilliseconds
        self.idempotencyKey = idempotencyKey
        self.trace = trace
    }

    /// The envelope as compact JSON; a payload over 1 KiB is zlib-compressed into `payload_z` with `payload_crc32`
    /// when that makes it smaller (`PayloadCompression.compressIfWorthIt`: base64 tensor data does not compress).
    public func encoded() -> String {
        encoded(payloadText: payload.jsonText)
    }

    /// The envelope as compact JSON, with the payload's JSON text given (bulk enqueue encodes a shared payload once).
    public func encoded(payloadText: String) -> String {
        var bytes: [UInt8] = []
        encode(payloadText: payloadText, into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Appends the envelope's compact JSON (the bytes `encoded(payloadText:)` returns) to `out`: bulk enqueue writes
    /// thousands of envelopes per call, and building each as a `String` first cost more than the rest of the call.
    public func encode(payloadText: String, into out: inout [UInt8]) {
        out.reserveCapacity(out.count + 200 + payloadText.utf8.count)
        Self.append("{\"v\":1,\"id\":", to: &out)
        Self.appendJSONString(id, to: &out)
        Self.append(",\"kind\":", to: &out)
        Self.appendJSONString(kind, to: &out)
        Self.append(",\"queue\":", to: &out)
        Self.appendJSONString(queue, to: &out)
        Self.append(",\"tier\":", to: &out)
        Self.appendJSONString(tier, to: &out)
        var compressed: [UInt8]?
        if payloadText.utf8.count > PayloadCompression.threshold {
            compressed = payloadText.utf8.withContiguousStorageIfAvailable { PayloadCompression.compressIfWorthIt($0) }
                ?? PayloadCompression.compressIfWorthIt(Array(payloadText.utf8))
        }
        if let compressed {
            Self.append(",\"payload_z\":\"", to: &out)
            Self.append(Data(compressed).base64EncodedString(), to: &out)
            Self.append("\",\"payload_crc32\":", to: &out)
            Self.appendDecimal(Int64(PayloadCompression.crc32(Array(payloadText.utf8))), to: &out)
        } else {
            Self.append(",\"payload\":", to: &out)
            Self.append(payloadText, to: &out)
        }
        Self.append(",\"attempts\":", to: &out)
        Self.appendDecimal(Int64(attempts), to: &out)
        Self.append(",\"max_attempts\":", to: &out)
        Self.appendDecimal(Int64(maxAttempts), to: &out)
        Self.append(",\"enqueued_at\":", to: &out)
        Self.appendDecimal(enqueuedAt, to: &out)
        if let runAt {
            Self.append(",\"run_at\":", to: &out)
            Self.appendDecimal(runAt, to: &out)
        }
        Self.append(",\"timeout_ms\":", to: &out)
        Self.appendDecimal(timeoutMilliseconds, to: &out)
        if let idempotencyKey {
            Self.append(",\"idempotency_key\":", to: &out)
            Self.appendJSONString(idempotencyKey, to: &out)
        }
        if !trace.isEmpty {
            var text = ",\"trace\":"
            JSONValue.object(trace.mapValues(JSONValue.string)).write(to: &text)
            Self.append(text, to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    private static func append(_ text: String, to out: inout [UInt8]) {
        var text = text
        text.withUTF8 { out.append(contentsOf: $0) }
    }

    /// A JSON string, escaped exactly as `JSONValue.writeString` escapes it.
    private static func appendJSONString(_ value: String, to out: inout [UInt8]) {
        var value = value
        let plain = value.withUTF8 { bytes in
            !bytes.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }
        }
        if plain {
            out.append(UInt8(ascii: "\""))
            value.withUTF8 { out.append(contentsOf: $0) }
            out.append(UInt8(ascii: "\""))
        } else {
            var text = ""
            JSONValue.writeString(value, to: &text)
            append(text, to: &out)
        }
    }

    private static func appendDecimal(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[19 - count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            } while magnitude > 0
            out.append(contentsOf: buffer[(20 - count)...])
        }
    }

    /// Reads an envelope, checking every field; a compressed payload is inflated and its CRC verified.
    public init(decoding text: String) throws {
        // The worker's hot path: walk the top-level members straight into the fields the envelope has,
        // without a dictionary in between. Unknown members are parsed (to validate) and dropped.
        var slots = [JSONValue?](repeating: nil, count: EnvelopeKey.names.count)
        var text = text
        do {
            try text.withUTF8 { bytes in
                try JSONParser.forEachMember(of: bytes) { key, cursor in
                    let value = try cursor.value(depth: 1)
                    if let index = EnvelopeKey.match(key) { slots[index] = value }
                }
            }
        } catch let failure as JSONParser.Failure {
            throw EnvelopeError.notJSON(failure.message == "expected an object" ? "expected an object, found something else" : "\(failure)")
        }
        try self.init(field: { slots[$0] })
    }

    /// Reads an envelope from JSON bytes.
    public init(decoding data: Data) throws {
        try self.init(decoding: String(decoding: data, as: UTF8.self))
    }

    /// Reads an envelope from parsed JSON.
    public init(json root: JSONValue) throws {
        guard case .object(let fields) = root else { throw EnvelopeError.notJSON("expected an object, found something else") }
        try self.init(field: { fields[EnvelopeKey.names[$0]] })
    }

    /// `field(i)` is the value of member `EnvelopeKey.names[i]`.
    private init(field: (Int) -> JSONValue?) throws {
        func string(_ key: Int) throws -> String? {
            let name = EnvelopeKey.names[key]
            guard let value = field(key), value != .null else { return nil }
            guard case .string(let text) = value else { throw EnvelopeError.invalidField(name, "has the wrong type (expected a string)") }
            return text
        }
        func integer(_ key: Int) throws -> Int64? {
            let name = EnvelopeKey.names[key]
            guard let value = field(key), value != .null else { return nil }
            guard case .number(let number) = value, number == number.rounded(), abs(number) < 9.2e18 else {
                throw EnvelopeError.invalidField(name, "has the wrong type (expected an integer)")
            }
            return Int64(number)
        }
        guard let version = try integer(EnvelopeKey.v) else { throw EnvelopeError.missingField("v") }
        guard version == 1 else { throw EnvelopeError.unsupportedVersion(Int(version)) }
        guard let id = try string(EnvelopeKey.id) else { throw EnvelopeError.missingField("id") }
        guard JobID.isValid(id) else { throw EnvelopeError.invalidField("id", "must be 1–128 characters of A–Z a–z 0–9 - _ . :") }
        guard let kind = try string(EnvelopeKey.kind), !kind.isEmpty else { throw EnvelopeError.missingField("kind") }
        self.id = id
        self.kind = kind
        self.queue = try string(EnvelopeKey.queue) ?? "default"
        self.tier = try string(EnvelopeKey.tier) ?? "standard"
        if let compressed = try string(EnvelopeKey.payloadZ) {
            guard let bytes = Data(base64Encoded: compressed) else {
                throw EnvelopeError.invalidField("payload_z", "is not base64")
            }
            guard let expected = try integer(EnvelopeKey.payloadCRC32) else { throw EnvelopeError.missingField("payload_crc32") }
            guard (0...Int64(UInt32.max)).contains(expected) else { throw EnvelopeError.invalidField("payload_crc32", "must be 0…4294967295") }
            let inflated = try PayloadCompression.decompress(Array(bytes))
            let actual = PayloadCompression.crc32(inflated)
            guard actual == UInt32(expected) else {
                throw EnvelopeError.corruptPayload("CRC-32 is \(actual), the envelope says \(expected)")
            }
            do {
                self.payload = try JSONValue(parsing: inflated)
            } catch {
                throw EnvelopeError.corruptPayload("inflated payload is not JSON")
            }
        } else {
            self.payload = field(EnvelopeKey.payload) ?? .null
        }
        self.attempts = Int(try integer(EnvelopeKey.attempts) ?? 0)
        self.maxAttempts = Int(try integer(EnvelopeKey.maxAttempts) ?? 5)
        guard maxAttempts >= 1 else { throw EnvelopeError.invalidField("max_attempts", "must be at least 1") }
        self.enqueuedAt = try integer(EnvelopeKey.enqueuedAt) ?? 0
        self.runAt = try integer(EnvelopeKey.runAt)
        self.timeoutMilliseconds = try integer(EnvelopeKey.timeoutMs) ?? 300_000
        guard timeoutMilliseconds > 0 else { throw EnvelopeError.invalidField("timeout_ms", "must be positive") }
        self.idempotencyKey = try string(EnvelopeKey.idempotencyKey)
        var trace: [String: String] = [:]
        if let value = field(EnvelopeKey.trace), value != .null {
            guard case .object(let members) = value else { throw EnvelopeError.invalidField("trace", "has the wrong type (expected an object)") }
            for (key, member) in members {
                guard case .string(let text) = member else { throw EnvelopeError.invalidField("trace.\(key)", "has the wrong type (expected a string)") }
                trace[key] = text
            }
        }
        self.trace = trace
    }
}


/// The envelope's member names, matched on raw key bytes (no String allocated for each key).
enum EnvelopeKey {
    static let names = ["v", "id", "kind", "queue", "tier", "payload", "payload_z", "payload_crc32", "attempts",
                        "max_attempts", "enqueued_at", "run_at", "timeout_ms", "idempotency_key", "trace"]
    private static let utf8 = names.map { Array($0.utf8) }
    // Indexes into `names`.
    static let v = 0
    static let id = 1
    static let kind = 2
    static let queue = 3
    static let tier = 4
    static let payload = 5
    static let payloadZ = 6
    static let payloadCRC32 = 7
    static let attempts = 8
    static let maxAttempts = 9
    static let enqueuedAt = 10
    static let runAt = 11
    static let timeoutMs = 12
    static let idempotencyKey = 13
    static let trace = 14

    static func match(_ key: UnsafeBufferPointer<UInt8>) -> Int? {
        for (index, name) in utf8.enumerated() where name.count == key.count {
            if name.withUnsafeBufferPointer({ memcmp($0.baseAddress!, key.baseAddress!, key.count) == 0 }) { return index }
        }
        return nil
    }

}

#if canImport(Glibc)
import Glibc
#endif
