import Foundation

/// What a call to the dispatcher failed with.
///
/// Every answer of `jobfarm serve` that is not a success is an RFC 9457 problem; `problem` carries it whole (status,
/// title, detail, and every `{pointer, detail}` of a refused body), so a frontend can show each field's error at once.
public enum JobFarmClientError: Error, Sendable, CustomStringConvertible {
    /// The dispatcher answered with a problem (4xx or 5xx).
    case problem(JobFarmProblem)
    /// No answer: the dispatcher could not be reached, or the connection failed mid-way. Safe to retry a submission
    /// only with an `idempotencyKey` (it may have been accepted).
    case transport(String)
    /// An answer that is not what the API documents (not JSON, a field missing); `body` is its start.
    case unexpectedAnswer(status: Int, body: String)

    /// The HTTP status (0 when there was no answer).
    public var status: Int {
        switch self {
        case .problem(let problem): return problem.status
        case .transport: return 0
        case .unexpectedAnswer(let status, _): return status
        }
    }

    /// The problem document, when the dispatcher sent one.
    public var problem: JobFarmProblem? {
        if case .problem(let problem) = self { return problem }
        return nil
    }

    /// How long to wait before trying again, on 429 (rate limit) and 503 (Redis or the outbox unavailable).
    public var retryAfter: Duration? { problem?.retryAfter }

    public var description: String {
        switch self {
        case .problem(let problem): return problem.description
        case .transport(let text): return "the dispatcher did not answer: \(text)"
        case .unexpectedAnswer(let status, let body): return "unexpected answer \(status): \(body)"
        }
    }
}

/// An RFC 9457 problem (`application/problem+json`) as the dispatcher sends it.
public struct JobFarmProblem: Sendable, Equatable, CustomStringConvertible {
    /// One thing wrong with the request: a JSON Pointer into the body (`/jobs/2/kind`) or a query parameter, and what.
    public struct FieldError: Sendable, Equatable, CustomStringConvertible {
        public var pointer: String?
        public var parameter: String?
        public var detail: String

        public init(pointer: String? = nil, parameter: String? = nil, detail: String) {
            self.pointer = pointer
            self.parameter = parameter
            self.detail = detail
        }

        public var description: String { "\(pointer ?? parameter ?? ""): \(detail)" }
    }

    public var status: Int
    public var title: String
    public var detail: String
    /// Every problem found in the request (422, 403 per job, 400 per parameter); empty for the others.
    public var errors: [FieldError]
    /// `Retry-After` in seconds, when the answer has one (429, 503).
    public var retryAfter: Duration?
    /// `RateLimit` and `RateLimit-Policy` when the tenant is rate limited.
    public var rateLimit: String?
    public var rateLimitPolicy: String?

    public init(status: Int, title: String, detail: String, errors: [FieldError] = [], retryAfter: Duration? = nil,
                rateLimit: String? = nil, rateLimitPolicy: String? = nil) {
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.retryAfter = retryAfter
        self.rateLimit = rateLimit
        self.rateLimitPolicy = rateLimitPolicy
    }

    /// The pointers of `errors`, sorted (handy in tests and for marking form fields).
    public var pointers: [String] { errors.compactMap(\.pointer).sorted() }

    public var description: String {
        "\(status) \(title): \(detail)" + (errors.isEmpty ? "" : " (" + errors.map(\.description).joined(separator: "; ") + ")")
    }
}
