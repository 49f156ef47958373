import Foundation
import JobProtocol
import JobQueue
import Logging

/// A kind of job: a `Codable` parameters value in, a `Codable` result out.
///
/// Register one per kind with `HandlerRegistry.register`. Throw `JobError.nonRetryable` for failures that a
/// retry cannot fix (bad input); any other error is retried under `retryPolicy`. Long handlers should call
/// `context.progress(_:)` and honour task cancellation (timeout, cancel requests and shutdown cancel the task).
public protocol JobHandler: Sendable {
    associatedtype Parameters: Decodable & Sendable
    associatedtype Output: Encodable & Sendable

    /// The stable name producers put in the envelope's `kind`.
    static var kind: String { get }
    /// Backoff and attempts for this kind.
    var retryPolicy: RetryPolicy { get }
    func run(_ parameters: Parameters, context: JobContext) async throws -> Output
}

extension JobHandler {
    public var retryPolicy: RetryPolicy { .standard }
}

/// Errors a handler throws to steer what happens next.
public enum JobError: Error, CustomStringConvertible, Sendable {
    /// Retrying cannot help (bad input, unknown model): the job goes to the dead letters at once.
    case nonRetryable(String)
    /// Try again under the retry policy.
    case retryable(String)

    public var description: String {
        switch self {
        case .nonRetryable(let message), .retryable(let message): return message
        }
    }
}

/// Exponential backoff with jitter: attempt n waits `base × multiplier^(n−1)`, capped, then ± jitter.
public struct RetryPolicy: Sendable, Equatable {
    public var base: Duration
    public var multiplier: Double
    public var cap: Duration
    public var maxAttempts: Int
    /// Fraction of the delay drawn at random (0 = none, 0.2 = ±20%); spreads retries of a failed batch.
    public var jitter: Double

    /// 1 s, ×2, capped at 5 min, 5 attempts, ±20% jitter.
    public static let standard = RetryPolicy(base: .seconds(1), multiplier: 2, cap: .seconds(300), maxAttempts: 5, jitter: 0.2)

    /// `.exponentialJitter(...)` in the style of swift-jobs.
    public static func exponentialJitter(base: Duration = .seconds(1), multiplier: Double = 2, cap: Duration = .seconds(300), maxAttempts: Int = 5, jitter: Double = 0.2) -> RetryPolicy {
        RetryPolicy(base: base, multiplier: multiplier, cap: cap, maxAttempts: maxAttempts, jitter: jitter)
    }

    public init(base: Duration, multiplier: Double, cap: Duration, maxAttempts: Int, jitter: Double) {
        self.base = base
        self.multiplier = multiplier
        self.cap = cap
        self.maxAttempts = maxAttempts
        self.jitter = jitter
    }

    /// The pause before the attempt after attempt `attempt` (1-based).
    public func delay<G: RandomNumberGenerator>(afterAttempt attempt: Int, using generator: inout G) -> Duration {
        let exponent = Double(max(0, attempt - 1))
        let raw = base.seconds * pow(multiplier, exponent)
        let capped = min(raw, cap.seconds)
        let spread = jitter > 0 ? Double.random(in: -jitter...jitter, using: &generator) : 0
        return .milliseconds(Int64(max(0, capped * (1 + spread)) * 1000))
    }

    public func delay(afterAttempt attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(afterAttempt: attempt, using: &generator)
    }
}

/// What a running handler knows about its job, and how it reports progress.
public struct JobContext: Sendable {
    public let id: String
    public let kind: String
    public let queue: String
    public let tier: String
    /// 1 for the first run.
    public let attempt: Int
    public let maxAttempts: Int
    /// When this attempt must end (its timeout).
    public let deadline: ContinuousClock.Instant
    public let trace: [String: String]
    public let logger: Logger
    let progressSink: @Sendable (Double) async -> Void

    public init(
        id: String, kind: String, queue: String, tier: String, attempt: Int, maxAttempts: Int,
        deadline: ContinuousClock.Instant, trace: [String: String], logger: Logger,
        progress: @escaping @Sendable (Double) async -> Void = { _ in }
    ) {
        self.id = id
        self.kind = kind
        self.queue = queue
        self.tier = tier
        self.attempt = attempt
        self.maxAttempts = maxAttempts
        self.deadline = deadline
        self.trace = trace
        self.logger = logger
        self.progressSink = progress
    }

    /// Reports progress (0…1); published to waiters. Cheap to call often: updates are rate-limited.
    public func progress(_ fraction: Double) async {
        await progressSink(fraction)
    }
}

/// The handlers a worker runs, by kind.
public struct HandlerRegistry: Sendable {
    struct Entry: Sendable {
        var retryPolicy: RetryPolicy
        /// The longest an attempt may run, whatever the job's own timeout (a pool's `timeouts:`); nil: the job's.
        var timeoutCap: Duration? = nil
        let run: @Sendable (JSONValue, JobContext) async throws -> String
    }

    private(set) var entries: [String: Entry] = [:]

    public init() {}

    /// Registers a handler under its kind (a later registration of the same kind replaces the earlier).
    public mutating func register<H: JobHandler>(_ handler: H) {
        // The payload was parsed once, with the envelope: parameters are decoded from that tree and the result is
        // written as text straight away (no JSON text in between, no Foundation coders).
        entries[H.kind] = Entry(retryPolicy: handler.retryPolicy) { payload, context in
            let parameters: H.Parameters
            if let direct = payload as? H.Parameters {
                parameters = direct
            } else {
                do {
                    parameters = try JSONValueDecoder().decode(H.Parameters.self, from: payload)
                } catch {
                    throw JobError.nonRetryable("payload does not fit kind '\(H.kind)': \(describe(error))")
                }
            }
            let output = try await handler.run(parameters, context: context)
            if let json = output as? JSONValue { return json.jsonText }
            return try JSONValueEncoder().encodeText(output)
        }
    }

    /// The registered kinds, sorted.
    public var kinds: [String] { entries.keys.sorted() }

    func entry(for kind: String) -> Entry? { entries[kind] }

    mutating func replace(_ kind: String, with entry: Entry) { entries[kind] = entry }
}

/// A readable account of a decoding error: which field, what was wrong.
func describe(_ error: Error) -> String {
    guard let error = error as? DecodingError else { return "\(error)" }
    func path(_ context: DecodingError.Context) -> String {
        let text = context.codingPath.map(\.stringValue).joined(separator: ".")
        return text.isEmpty ? "the payload" : "'\(text)'"
    }
    switch error {
    case .keyNotFound(let key, let context):
        let parent = context.codingPath.map(\.stringValue).joined(separator: ".")
        return "missing field '\(parent.isEmpty ? key.stringValue : parent + "." + key.stringValue)'"
    case .typeMismatch(let type, let context):
        // "… but found a string instead." (JSONDecoder's and JSONValueDecoder's wording) → ", found a string".
        var found = ""
        if let range = context.debugDescription.range(of: " but found ") {
            var tail = context.debugDescription[range.upperBound...]
            if tail.hasSuffix(" instead.") { tail = tail.dropLast(" instead.".count) }
            found = ", found \(tail)"
        }
        return "\(path(context)) should be \(type)\(found)"
    case .valueNotFound(let type, let context): return "\(path(context)) is null, expected \(type)"
    case .dataCorrupted(let context): return "\(path(context)): \(context.debugDescription)"
    @unknown default: return "\(error)"
    }
}
