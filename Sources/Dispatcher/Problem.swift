import Foundation
import Hummingbird
import JobProtocol

/// One thing wrong with a request: where (a JSON Pointer into the body, RFC 6901, or a query parameter) and what.
public struct FieldProblem: Sendable, Equatable, CustomStringConvertible {
    /// JSON Pointer into the body (`/jobs/2/kind`; `""` is the whole body); `nil` when `parameter` says where.
    public var pointer: String?
    /// Name of the query parameter at fault.
    public var parameter: String?
    /// What is wrong and what would be right, for the client's developer.
    public var detail: String

    public init(pointer: String, _ detail: String) {
        self.pointer = pointer
        self.detail = detail
    }

    public init(parameter: String, _ detail: String) {
        self.parameter = parameter
        self.detail = detail
    }

    public var description: String { "\(pointer ?? parameter ?? ""): \(detail)" }

    var json: JSONValue {
        var object: [String: JSONValue] = ["detail": .string(detail)]
        if let pointer { object["pointer"] = .string(pointer) }
        if let parameter { object["parameter"] = .string(parameter) }
        return .object(object)
    }
}

/// An RFC 9457 problem (`application/problem+json`): what the client gets for every error, with every problem
/// found in `errors`. Thrown by the route handlers and turned into a response by `ProblemMiddleware`.
public struct Problem: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    /// A short, fixed summary of the problem type.
    public var title: String
    /// This occurrence, for a person.
    public var detail: String
    public var errors: [FieldProblem]
    /// Extra response headers (`Retry-After`).
    public var headers: HTTPFields

    public init(_ status: HTTPResponse.Status, title: String? = nil, detail: String, errors: [FieldProblem] = [], headers: HTTPFields = [:]) {
        self.status = status
        self.title = title ?? status.reasonPhrase
        self.detail = detail
        self.errors = errors
        self.headers = headers
    }

    public var description: String { "\(status.code) \(detail)" + (errors.isEmpty ? "" : ": " + errors.map(\.description).joined(separator: "; ")) }

    /// The problem document.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "type": .string("about:blank"), "title": .string(title), "status": .number(Double(status.code)),
            "detail": .string(detail),
        ]
        if !errors.isEmpty { object["errors"] = .array(errors.map(\.json)) }
        return .object(object)
    }

    var response: Response {
        var fields = headers
        fields[.contentType] = "application/problem+json"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: json.jsonText)))
    }

    static func notFound(job id: String) -> Problem {
        Problem(.notFound, detail: "no job '\(id)': never submitted, or removed after the retention period (24 h by default)")
    }
}

/// JSON Pointer (RFC 6901) building.
enum JSONPointer {
    /// `base` + `/token`, with `~` and `/` escaped.
    static func appending(_ base: String, _ token: String) -> String {
        base + "/" + token.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }

    static func appending(_ base: String, _ index: Int) -> String { base + "/" + String(index) }
}
