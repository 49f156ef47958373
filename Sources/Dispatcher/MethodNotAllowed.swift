import Hummingbird

/// 405 with `Allow` for a method the document does not have on a path it does (RFC 9110 §15.5.6), instead of the
/// router's 404. The methods come from `Dispatcher.operations`, the list the contract test holds to the document.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    /// path template → methods, e.g. `/v1/jobs/{id}` → GET, DELETE.
    let templates: [(segments: [Substring], methods: [String])]

    init(operations: [(method: String, path: String)] = Dispatcher.operations) {
        var byPath: [String: [String]] = [:]
        var order: [String] = []
        for operation in operations {
            if byPath[operation.path] == nil { order.append(operation.path) }
            byPath[operation.path, default: []].append(operation.method)
        }
        templates = order.map { (segments: $0.split(separator: "/", omittingEmptySubsequences: false), methods: byPath[$0]!) }
    }

    /// The methods of the documented path that `path` is an instance of; empty when it is none.
    func methods(for path: String) -> [String] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for template in templates where template.segments.count == segments.count {
            let matches = zip(template.segments, segments).allSatisfy { pattern, segment in
                pattern.hasPrefix("{") && pattern.hasSuffix("}") ? !segment.isEmpty : pattern == segment
            }
            if matches { return template.methods }
        }
        return []
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let allowed = methods(for: request.uri.path)
        if !allowed.isEmpty, !allowed.contains(request.method.rawValue) {
            let allow = allowed.sorted().joined(separator: ", ")
            throw Problem(.methodNotAllowed, detail: "\(request.method.rawValue) is not served on \(request.uri.path): use \(allow)",
                          headers: [.allow: allow])
        }
        return try await next(request, context)
    }
}
