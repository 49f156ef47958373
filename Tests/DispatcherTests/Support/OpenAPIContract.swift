import Foundation
import JobFarmTesting
import JobProtocol
import Synchronization
import Yams

/// docs/openapi.yaml, read with Yams, and the checks the hand-written routes must pass against it: every answer's
/// route, status and content type documented, and its JSON body valid against the documented schema.
///
/// The schema check covers the JSON Schema keywords the document uses (`$ref`, `type`, `required`, `properties`,
/// `additionalProperties: false`, `items`, `enum`, `const`, `minimum`, `maximum`, `minLength`, `maxLength`,
/// `minItems`, `maxItems`); `unsupportedKeywords` fails the test if the document starts using another one.
struct OpenAPIContract: @unchecked Sendable {  // immutable after init; Yams gives `Any` trees
    let document: [String: Any]

    private static let cache = Mutex<OpenAPIContract?>(nil)

    static func shared() throws -> OpenAPIContract {
        if let cached = cache.withLock({ $0 }) { return cached }
        let contract = try OpenAPIContract(path: openAPIPath)
        cache.withLock { $0 = contract }
        return contract
    }

    init(path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard let document = try Yams.load(yaml: text) as? [String: Any] else { throw TestFailure("\(path) is not a YAML mapping") }
        self.document = document
    }

    var paths: [String: Any] { document["paths"] as? [String: Any] ?? [:] }

    /// Every (method, path template) of the document, methods upper-case.
    var operations: Set<String> {
        var result: Set<String> = []
        for (path, item) in paths {
            for key in (item as? [String: Any] ?? [:]).keys where ["get", "post", "put", "patch", "delete"].contains(key) {
                result.insert("\(key.uppercased()) \(path)")
            }
        }
        return result
    }

    /// The template matching a concrete path (`/v1/jobs/01ABC/wait` → `/v1/jobs/{id}/wait`).
    func template(for path: String) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        return paths.keys.sorted().first { template in
            let templateParts = template.split(separator: "/", omittingEmptySubsequences: false)
            guard templateParts.count == parts.count else { return false }
            return zip(templateParts, parts).allSatisfy { t, p in (t.hasPrefix("{") && t.hasSuffix("}") && !p.isEmpty) || t == p }
        }
    }

    /// Everything wrong with one answer (empty when it fits the document).
    func check(method: String, path: String, status: Int, contentType: String, body: JSONValue?) -> [String] {
        guard let template = template(for: path) else { return ["the path is not in docs/openapi.yaml"] }
        guard let operation = (paths[template] as? [String: Any])?[method.lowercased()] as? [String: Any] else {
            return ["\(method) \(template) is not in docs/openapi.yaml"]
        }
        guard var response = (operation["responses"] as? [String: Any])?[String(status)] as? [String: Any] else {
            return ["status \(status) is not documented for \(method) \(template)"]
        }
        if let ref = response["$ref"] as? String, let resolved = resolve(ref) as? [String: Any] { response = resolved }
        guard let content = response["content"] as? [String: Any] else {
            return contentType.isEmpty ? [] : ["the document has no body for \(status), the answer has \(contentType)"]
        }
        let mediaType = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard let media = content[mediaType] as? [String: Any] else {
            return ["content type '\(contentType)' is not documented for \(status) (documented: \(content.keys.sorted()))"]
        }
        guard mediaType.contains("json"), let schema = media["schema"] else { return [] }
        guard let body else { return ["the body is not JSON"] }
        var problems: [String] = []
        validate(body, against: schema, at: "", problems: &problems)
        return problems
    }

    func resolve(_ ref: String) -> Any? {
        guard ref.hasPrefix("#/") else { return nil }
        var node: Any? = document
        for token in ref.dropFirst(2).split(separator: "/") {
            node = (node as? [String: Any])?[String(token).replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")]
        }
        return node
    }

    static let supportedKeywords: Set<String> = [
        "$ref", "type", "required", "properties", "additionalProperties", "items", "enum", "const", "minimum", "maximum",
        "minLength", "maxLength", "minItems", "maxItems", "description", "examples", "example", "default", "format", "pattern",
    ]

    /// Schema keywords in the document that `validate` does not check.
    var unsupportedKeywords: Set<String> {
        var found: Set<String> = []
        func walk(_ schema: Any) {
            guard let schema = schema as? [String: Any] else { return }
            for (key, value) in schema {
                if !Self.supportedKeywords.contains(key) { found.insert(key) }
                if key == "properties", let properties = value as? [String: Any] { properties.values.forEach(walk) }
                if key == "items" { walk(value) }
            }
        }
        for schema in ((document["components"] as? [String: Any])?["schemas"] as? [String: Any] ?? [:]).values { walk(schema) }
        return found
    }

    func validate(_ value: JSONValue, against schemaNode: Any, at pointer: String, problems: inout [String]) {
        guard var schema = schemaNode as? [String: Any] else { return }
        if let ref = schema["$ref"] as? String {
            guard let resolved = resolve(ref) as? [String: Any] else { problems.append("\(pointer): unresolvable \(ref)"); return }
            schema = resolved
        }
        func fail(_ text: String) { problems.append("\(pointer.isEmpty ? "(body)" : pointer): \(text)") }
        if let type = schema["type"] {
            let types = (type as? [String]) ?? [(type as? String) ?? ""]
            guard types.contains(where: { Self.matches(value, type: $0) }) else { return fail("expected \(types), got \(value.jsonText.prefix(80))") }
        }
        if let options = schema["enum"] as? [Any], !options.contains(where: { Self.equal(value, $0) }) { fail("\(value.jsonText) is not one of \(options)") }
        if let constant = schema["const"], !Self.equal(value, constant) { fail("\(value.jsonText) is not \(constant)") }
        if case .number(let number) = value {
            if let minimum = Self.double(schema["minimum"]), number < minimum { fail("\(number) < minimum \(minimum)") }
            if let maximum = Self.double(schema["maximum"]), number > maximum { fail("\(number) > maximum \(maximum)") }
        }
        if case .string(let text) = value {
            if let minimum = schema["minLength"] as? Int, text.count < minimum { fail("shorter than \(minimum)") }
            if let maximum = schema["maxLength"] as? Int, text.count > maximum { fail("longer than \(maximum)") }
            if schema["format"] as? String == "date-time", ISO8601DateFormatter.withFractions.date(from: text) == nil {
                fail("'\(text)' is not an RFC 3339 date-time")
            }
        }
        if case .array(let items) = value {
            if let minimum = schema["minItems"] as? Int, items.count < minimum { fail("fewer than \(minimum) items") }
            if let maximum = schema["maxItems"] as? Int, items.count > maximum { fail("more than \(maximum) items") }
            if let itemSchema = schema["items"] {
                for (index, item) in items.enumerated() { validate(item, against: itemSchema, at: "\(pointer)/\(index)", problems: &problems) }
            }
        }
        if case .object(let members) = value {
            let properties = schema["properties"] as? [String: Any] ?? [:]
            for name in schema["required"] as? [String] ?? [] where members[name] == nil { fail("required member '\(name)' is missing") }
            for (name, member) in members {
                if let propertySchema = properties[name] {
                    validate(member, against: propertySchema, at: "\(pointer)/\(name)", problems: &problems)
                } else if schema["additionalProperties"] as? Bool == false {
                    fail("member '\(name)' is not in the schema")
                }
            }
        }
    }

    static func matches(_ value: JSONValue, type: String) -> Bool {
        switch (type, value) {
        case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool), ("null", .null), ("number", .number): return true
        case ("integer", .number(let number)): return number == number.rounded()
        default: return false
        }
    }

    static func double(_ any: Any?) -> Double? {
        if let int = any as? Int { return Double(int) }
        return any as? Double
    }

    static func equal(_ value: JSONValue, _ any: Any) -> Bool {
        switch value {
        case .string(let text): return any as? String == text
        case .number(let number): return double(any) == number
        case .bool(let flag): return any as? Bool == flag
        default: return false
        }
    }
}

extension ISO8601DateFormatter {
    nonisolated(unsafe) static let withFractions: ISO8601DateFormatter = {  // read-only after creation
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()
}
