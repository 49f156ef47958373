import JobProtocol

/// One thing wrong with a job's payload: where (a JSON Pointer into the payload, RFC 6901) and what.
public struct PayloadProblem: Sendable, Equatable, CustomStringConvertible {
    /// JSON Pointer relative to the payload: `""` is the payload itself, `/inputs/3` its fourth input row.
    public var pointer: String
    /// What is wrong and what would be right.
    public var detail: String

    public init(_ pointer: String, _ detail: String) {
        self.pointer = pointer
        self.detail = detail
    }

    /// `/inputs/3: row 3 has 5 values, row 0 has 4` (the pointer first, when there is one).
    public var description: String { pointer.isEmpty ? detail : "\(pointer): \(detail)" }
}

/// Every problem of a payload that does not fit its kind. The worker dead-letters the job (`non_retryable`)
/// with `description` as its error; the dispatcher answers 422 with each problem under `/payload`.
public struct PayloadError: Error, Sendable, Equatable, CustomStringConvertible {
    public var kind: String
    public var problems: [PayloadProblem]

    public init(kind: String, problems: [PayloadProblem]) {
        self.kind = kind
        self.problems = problems
    }

    /// `payload does not fit kind 'inference': /inputs/3: row 3 has 5 values, row 0 has 4; …`
    public var description: String {
        "payload does not fit kind '\(kind)': " + problems.map(\.description).joined(separator: "; ")
    }
}

/// A kind's payload, read and checked from the envelope's `JSONValue` by the same code in the dispatcher and the
/// worker (so they cannot disagree).
public protocol KindPayload: Sendable {
    /// The job kind this payload belongs to.
    static var kind: String { get }
    /// Reads `payload`, collecting every problem; throws them all at once.
    init(parsing payload: JSONValue) throws(PayloadError)
    /// Every problem of `payload` for this kind (what `init(parsing:)` finds, and what the worker finds later
    /// without the model: a tensor's data decoded and checked); empty when it fits.
    static func problems(in payload: JSONValue) -> [PayloadProblem]
}

extension KindPayload {
    /// The problems `init(parsing:)` finds.
    public static func problems(in payload: JSONValue) -> [PayloadProblem] {
        do {
            _ = try Self(parsing: payload)
            return []
        } catch {
            return error.problems
        }
    }
}

/// The payload checks of the ML kinds, by kind: what the dispatcher registers and the worker's handlers run.
public enum KindPayloads {
    /// Every kind with a payload check, and its type.
    public static let all: [any KindPayload.Type] = [
        InferencePayload.self, BatchAnalysisPayload.self, QuantizePayload.self, ValidatePayload.self, TrainPayload.self,
    ]

    /// The problems of `payload` for `kind`; nil when `kind` has no payload check here.
    public static func problems(kind: String, in payload: JSONValue) -> [PayloadProblem]? {
        guard let type = all.first(where: { $0.kind == kind }) else { return nil }
        return type.problems(in: payload)
    }
}

/// JSON Pointer (RFC 6901) building.
public enum PayloadPointer {
    /// `base` + `/token`, with `~` and `/` escaped.
    public static func appending(_ base: String, _ token: String) -> String {
        var escaped = ""
        for character in token {
            switch character {
            case "~": escaped += "~0"
            case "/": escaped += "~1"
            default: escaped.append(character)
            }
        }
        return base + "/" + escaped
    }

    /// `base` + `/index`.
    public static func appending(_ base: String, _ index: Int) -> String { base + "/" + String(index) }
}

/// Registry names (models, aliases, datasets): 1–64 of A–Z a–z 0–9 _ - ., not starting with a dot.
public func isValidPayloadName(_ name: String) -> Bool {
    guard (1...64).contains(name.utf8.count), !name.hasPrefix(".") else { return false }
    return name.utf8.allSatisfy { byte in
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
    }
}
