import Foundation
import JobProtocol

/// What a `${…}` refers to.
public enum TemplateReference: Sendable, Hashable, CustomStringConvertible {
    /// `${steps.<id>.result}` or `${steps.<id>.result.<path>}`: an ancestor step's result (for a `for_each` step,
    /// the list of its items' results, in item order).
    case stepResult(step: String, path: [String])
    /// `${run.<field>}`: one of `RunContext.fields`.
    case run(field: String)
    /// `${params.<name>}` or `${params.<name>.<path>}`.
    case param(name: String, path: [String])
    /// `${item}` or `${item.<path>}`: the current element of a `for_each` step.
    case item(path: [String])

    public var description: String {
        switch self {
        case .stepResult(let step, let path): return (["steps", step, "result"] + path).joined(separator: ".")
        case .run(let field): return "run.\(field)"
        case .param(let name, let path): return (["params", name] + path).joined(separator: ".")
        case .item(let path): return (["item"] + path).joined(separator: ".")
        }
    }
}

/// A piece of a string with `${…}` inside it.
public enum TemplatePart: Sendable, Hashable {
    case text(String)
    case reference(TemplateReference)
}

/// A payload (or `for_each` list) as written in the file: JSON with `${…}` references still in it.
///
/// A string that is exactly one `${…}` is replaced by the value itself, keeping its JSON type (a number stays a
/// number, an object stays an object). A `${…}` inside longer text is replaced by its text (numbers as JSON
/// writes them, objects and lists as compact JSON). `$${` writes a literal `${`.
public indirect enum PayloadTemplate: Sendable, Hashable {
    case literal(JSONValue)
    case whole(TemplateReference, SourceLocation)
    case text([TemplatePart], SourceLocation)
    case array([PayloadTemplate])
    case object([String: PayloadTemplate])

    /// Every reference with where it was written.
    public var references: [(TemplateReference, SourceLocation)] {
        switch self {
        case .literal: return []
        case .whole(let reference, let location): return [(reference, location)]
        case .text(let parts, let location):
            return parts.compactMap { if case .reference(let reference) = $0 { return (reference, location) } else { return nil } }
        case .array(let items): return items.flatMap(\.references)
        case .object(let fields): return fields.keys.sorted().flatMap { fields[$0]!.references }
        }
    }

    /// The payload with every reference replaced from `context`.
    public func resolve(in context: RunContext) throws(TemplateResolutionError) -> JSONValue {
        switch self {
        case .literal(let value): return value
        case .whole(let reference, let location): return try context.value(of: reference, at: location, asText: false)
        case .text(let parts, let location):
            var out = ""
            for part in parts {
                switch part {
                case .text(let text): out += text
                case .reference(let reference):
                    let value = try context.value(of: reference, at: location, asText: true)
                    if case .string(let text) = value { out += text } else { value.write(to: &out) }
                }
            }
            return .string(out)
        case .array(let items):
            var values: [JSONValue] = []
            values.reserveCapacity(items.count)
            for item in items { values.append(try item.resolve(in: context)) }
            return .array(values)
        case .object(let fields):
            var values: [String: JSONValue] = [:]
            for (key, field) in fields { values[key] = try field.resolve(in: context) }
            return .object(values)
        }
    }
}

/// A `${…}` that cannot be read: the message says where in the text and what is allowed.
public struct TemplateSyntaxError: Error, Sendable, Equatable {
    public var message: String
    /// Character offset in the string where the bad `${` starts.
    public var offset: Int
}

/// A reference that has no value in this run (a field missing from a parent's result, say).
public struct TemplateResolutionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reference: String
    public var location: SourceLocation?
    public var message: String
    public var description: String {
        let place = location.map { "\($0): \($0.key): " } ?? ""
        return "\(place)${\(reference)}: \(message)"
    }
}

enum TemplateParser {
    /// Roots a reference may start with.
    static let roots = ["steps", "run", "params", "item"]

    /// Parses one YAML string: `.literal` when it holds no `${`, `.whole` when it is exactly one reference.
    static func parse(_ text: String, location: SourceLocation) throws(TemplateSyntaxError) -> PayloadTemplate {
        let characters = Array(text)
        guard text.contains("${") else { return .literal(.string(text)) }
        var parts: [TemplatePart] = []
        var literal = ""
        var index = 0
        while index < characters.count {
            if characters[index] == "$" {
                // `$${` is a literal `${`.
                if index + 2 < characters.count, characters[index + 1] == "$", characters[index + 2] == "{" {
                    literal += "${"
                    index += 3
                    continue
                }
                if index + 1 < characters.count, characters[index + 1] == "{" {
                    guard let close = characters[(index + 2)...].firstIndex(of: "}") else {
                        throw TemplateSyntaxError(message: "`${` is not closed by `}` (write `$${` for a literal `${`)", offset: index)
                    }
                    let inner = String(characters[(index + 2)..<close])
                    let reference = try parseReference(inner, offset: index)
                    if !literal.isEmpty { parts.append(.text(literal)); literal = "" }
                    parts.append(.reference(reference))
                    index = close + 1
                    continue
                }
            }
            literal.append(characters[index])
            index += 1
        }
        if !literal.isEmpty { parts.append(.text(literal)) }
        if parts.count == 1, case .reference(let reference) = parts[0] { return .whole(reference, location) }
        if parts.allSatisfy({ if case .text = $0 { return true } else { return false } }) {
            return .literal(.string(parts.map { if case .text(let t) = $0 { return t } else { return "" } }.joined()))
        }
        return .text(parts, location)
    }

    static func parseReference(_ inner: String, offset: Int) throws(TemplateSyntaxError) -> TemplateReference {
        let trimmed = inner.trimmingCharacters(in: .whitespaces)
        let segments = trimmed.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !trimmed.isEmpty else {
            throw TemplateSyntaxError(message: "`${}` is empty; write `${steps.<id>.result.<field>}`, `${run.date}`, `${params.<name>}` or `${item}`", offset: offset)
        }
        for segment in segments where segment.isEmpty || !segment.allSatisfy(isNameCharacter) {
            throw TemplateSyntaxError(message: "`${\(inner)}` has a bad part `\(segment)`: parts are separated by `.` and made of A–Z a–z 0–9 _ -", offset: offset)
        }
        switch segments[0] {
        case "steps":
            guard segments.count >= 3, segments[2] == "result" else {
                throw TemplateSyntaxError(message: "`${\(inner)}`: a step is referred to as `${steps.<id>.result}` or `${steps.<id>.result.<field>}`", offset: offset)
            }
            return .stepResult(step: segments[1], path: Array(segments.dropFirst(3)))
        case "run":
            guard segments.count == 2 else {
                throw TemplateSyntaxError(message: "`${\(inner)}`: write `${run.<field>}` with one of \(RunContext.fields.joined(separator: ", "))", offset: offset)
            }
            return .run(field: segments[1])
        case "params":
            guard segments.count >= 2 else {
                throw TemplateSyntaxError(message: "`${\(inner)}`: write `${params.<name>}`", offset: offset)
            }
            return .param(name: segments[1], path: Array(segments.dropFirst(2)))
        case "item":
            return .item(path: Array(segments.dropFirst()))
        default:
            throw TemplateSyntaxError(message: "`${\(inner)}` starts with `\(segments[0])`; a reference starts with one of \(roots.joined(separator: ", "))", offset: offset)
        }
    }

    static func isNameCharacter(_ character: Character) -> Bool {
        character.isASCII && (character.isLetter || character.isNumber || character == "_" || character == "-")
    }
}

/// What a run knows when it builds a step's payload: its own fields, the parameters, and the results of the steps
/// that ended (copied into the run record, so they outlive the jobs' retention).
public struct RunContext: Sendable {
    /// The fields `${run.<field>}` may name.
    public static let fields = ["id", "date", "time", "pipeline"]

    public var runID: String
    public var pipeline: String
    /// `YYYY-MM-DD` of the run's (or its firing's) time in the schedule's time zone.
    public var date: String
    /// ISO 8601 time of the run's start (or its firing).
    public var time: String
    public var params: [String: JSONValue]
    /// Result of each step that ended with one, by step id.
    public var results: [String: JSONValue]
    /// The element of the `for_each` list this job runs for.
    public var item: JSONValue?

    public init(runID: String, pipeline: String, date: String, time: String, params: [String: JSONValue] = [:], results: [String: JSONValue] = [:], item: JSONValue? = nil) {
        self.runID = runID
        self.pipeline = pipeline
        self.date = date
        self.time = time
        self.params = params
        self.results = results
        self.item = item
    }

    /// The value of one reference. A step with no recorded result (it failed or was skipped, possible only under
    /// `trigger: any_passed` or `all_ended`) gives `null` as a whole value and an error inside text.
    func value(of reference: TemplateReference, at location: SourceLocation?, asText: Bool) throws(TemplateResolutionError) -> JSONValue {
        func fail(_ message: String) -> TemplateResolutionError {
            TemplateResolutionError(reference: reference.description, location: location, message: message)
        }
        switch reference {
        case .run(let field):
            switch field {
            case "id": return .string(runID)
            case "date": return .string(date)
            case "time": return .string(time)
            case "pipeline": return .string(pipeline)
            default: throw fail("the run has no field `\(field)`; use one of \(Self.fields.joined(separator: ", "))")
            }
        case .param(let name, let path):
            guard let value = params[name] else { throw fail("no parameter `\(name)` was given and it has no default; pass --param \(name)=VALUE") }
            return try Self.follow(path, in: value, what: "parameter `\(name)`", fail: fail)
        case .item(let path):
            guard let item else { throw fail("`item` exists only in a step with `for_each`") }
            return try Self.follow(path, in: item, what: "the item", fail: fail)
        case .stepResult(let step, let path):
            guard let result = results[step] else {
                if !asText { return .null }
                throw fail("step `\(step)` has no result (it did not succeed)")
            }
            return try Self.follow(path, in: result, what: "the result of `\(step)`", fail: fail)
        }
    }

    static func follow(_ path: [String], in value: JSONValue, what: String, fail: (String) -> TemplateResolutionError) throws(TemplateResolutionError) -> JSONValue {
        var current = value
        var walked: [String] = []
        for segment in path {
            switch current {
            case .object(let fields):
                guard let next = fields[segment] else {
                    let known = fields.keys.sorted().prefix(12).joined(separator: ", ")
                    throw fail("\(what)\(walked.isEmpty ? "" : "." + walked.joined(separator: ".")) has no field `\(segment)` (it has: \(known))")
                }
                current = next
            case .array(let items):
                guard let index = Int(segment), items.indices.contains(index) else {
                    throw fail("\(what)\(walked.isEmpty ? "" : "." + walked.joined(separator: ".")) is a list of \(items.count); `\(segment)` is not an index 0…\(max(items.count - 1, 0))")
                }
                current = items[index]
            default:
                throw fail("\(what)\(walked.isEmpty ? "" : "." + walked.joined(separator: ".")) is \(current.kindDescription), it has no field `\(segment)`")
            }
            walked.append(segment)
        }
        return current
    }
}
