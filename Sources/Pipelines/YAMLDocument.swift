import Foundation
import JobProtocol
import Yams

/// Reads a YAML document through Yams' node API, so every value keeps its line and column, and collects errors
/// instead of stopping at the first.
struct YAMLDocument {
    let file: String
    private(set) var errors: [DefinitionError] = []

    init(file: String) {
        self.file = file
    }

    /// Composes `text` into a node tree; a syntax error is recorded with its line and column.
    mutating func compose(_ text: String) -> Node? {
        do {
            guard let root = try Yams.compose(yaml: text) else {
                record(.missingKey, at: SourceLocation(file: file, line: 1, column: 1, key: ""), "the file is empty; a pipeline needs at least `name` and `steps`")
                return nil
            }
            return root
        } catch let error as YamlError {
            record(.yamlSyntax, at: location(of: error), "YAML syntax: \(Self.problem(of: error)); fix the YAML first (quote values that hold `: ` or start with `{`, `[`, `*`, `&`)")
            return nil
        } catch {
            record(.yamlSyntax, at: SourceLocation(file: file, line: 1, column: 1, key: ""), "YAML syntax: \(error)")
            return nil
        }
    }

    private func location(of error: YamlError) -> SourceLocation {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return SourceLocation(file: file, line: mark.line, column: mark.column, key: "")
        case .duplicatedKeysInMapping(_, let context):
            return SourceLocation(file: file, line: context.mark.line, column: context.mark.column, key: "")
        default:
            return SourceLocation(file: file, line: 1, column: 1, key: "")
        }
    }

    private static func problem(of error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, _, _), .parser(let context, let problem, _, _), .composer(let context, let problem, _, _):
            if let context { return "\(problem) (\(context.text))" }
            return problem
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicate keys \(duplicates.joined(separator: ", "))"
        default:
            return "\(error)".split(separator: "\n").first.map(String.init) ?? "\(error)"
        }
    }

    mutating func record(_ code: DefinitionError.Code, at location: SourceLocation, _ message: String) {
        errors.append(DefinitionError(code, at: location, message))
    }

    func location(of node: Node, key: String) -> SourceLocation {
        let mark = node.mark
        return SourceLocation(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, key: key)
    }

    /// The pairs of a mapping with string keys. Keys outside `allowed` are errors that list the allowed ones;
    /// a key given twice is an error. Nil (and an error) when `node` is not a mapping.
    mutating func mapping(_ node: Node, key: String, allowed: [String], what: String) -> [(key: String, value: Node, location: SourceLocation)]? {
        guard case .mapping(let mapping) = node else {
            record(.wrongType, at: location(of: node, key: key), "\(what) must be a mapping of \(allowed.joined(separator: ", ")); got \(Self.describe(node))")
            return nil
        }
        var seen: Set<String> = []
        var pairs: [(key: String, value: Node, location: SourceLocation)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                record(.wrongType, at: location(of: keyNode, key: key), "keys of \(what) must be plain names")
                continue
            }
            let name = scalar.string
            let path = key.isEmpty ? name : "\(key).\(name)"
            let keyLocation = location(of: keyNode, key: path)
            guard allowed.contains(name) else {
                let near = allowed.first { Self.isNear($0, name) }
                let hint = near.map { " (did you mean `\($0)`?)" } ?? ""
                record(.unknownKey, at: keyLocation, "unknown key `\(name)` in \(what)\(hint); allowed: \(allowed.joined(separator: ", "))")
                continue
            }
            guard seen.insert(name).inserted else {
                record(.invalidValue, at: keyLocation, "`\(name)` is given twice in \(what); keep one")
                continue
            }
            pairs.append((name, value, location(of: value, key: path)))
        }
        return pairs
    }

    /// A mapping whose keys are free names (payload objects, params), in file order.
    mutating func freeMapping(_ node: Node, key: String, what: String) -> [(key: String, value: Node, location: SourceLocation)]? {
        guard case .mapping(let mapping) = node else {
            record(.wrongType, at: location(of: node, key: key), "\(what) must be a mapping; got \(Self.describe(node))")
            return nil
        }
        var seen: Set<String> = []
        var pairs: [(key: String, value: Node, location: SourceLocation)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                record(.wrongType, at: location(of: keyNode, key: key), "keys of \(what) must be strings")
                continue
            }
            let path = key.isEmpty ? scalar.string : "\(key).\(scalar.string)"
            guard seen.insert(scalar.string).inserted else {
                record(.invalidValue, at: location(of: keyNode, key: path), "`\(scalar.string)` is given twice in \(what); keep one")
                continue
            }
            pairs.append((scalar.string, value, location(of: value, key: path)))
        }
        return pairs
    }

    /// A string scalar (a number or boolean written plainly is refused: names are text).
    mutating func string(_ node: Node, key: String, what: String) -> String? {
        guard case .scalar(let scalar) = node, !(scalar.style == .plain && [Tag.Name.null].contains(node.resolvedTag)) else {
            record(.wrongType, at: location(of: node, key: key), "\(what) must be text; got \(Self.describe(node))")
            return nil
        }
        return scalar.string
    }

    mutating func stringList(_ node: Node, key: String, what: String) -> [(String, SourceLocation)]? {
        if case .scalar = node, let one = string(node, key: key, what: what) { return [(one, location(of: node, key: key))] }
        guard case .sequence(let sequence) = node else {
            record(.wrongType, at: location(of: node, key: key), "\(what) must be a list of names; got \(Self.describe(node))")
            return nil
        }
        var out: [(String, SourceLocation)] = []
        for (index, item) in sequence.enumerated() {
            let path = "\(key)[\(index)]"
            if let text = string(item, key: path, what: "each entry of \(what)") { out.append((text, location(of: item, key: path))) }
        }
        return out
    }

    mutating func integer(_ node: Node, key: String, what: String, range: ClosedRange<Int>) -> Int? {
        guard case .scalar = node, node.resolvedTag == .int, let value = node.int else {
            record(.wrongType, at: location(of: node, key: key), "\(what) must be a whole number \(range.lowerBound)…\(range.upperBound); got \(Self.describe(node))")
            return nil
        }
        guard range.contains(value) else {
            record(.invalidValue, at: location(of: node, key: key), "\(what) must be \(range.lowerBound)…\(range.upperBound); got \(value)")
            return nil
        }
        return value
    }

    /// A duration: a number of seconds, or text such as `90s`, `30m`, `2h`, `1h30m`, `500ms`.
    mutating func duration(_ node: Node, key: String, what: String) -> Duration? {
        guard case .scalar(let scalar) = node else {
            record(.wrongType, at: location(of: node, key: key), "\(what) must be a duration such as 90s, 30m, 2h or 1h30m; got \(Self.describe(node))")
            return nil
        }
        if scalar.style == .plain, node.resolvedTag == .int || node.resolvedTag == .float, let seconds = node.float, seconds > 0, seconds.isFinite {
            return .milliseconds(Int64((seconds * 1000).rounded()))
        }
        if let parsed = Self.parseDuration(scalar.string), parsed > .zero { return parsed }
        record(.invalidValue, at: location(of: node, key: key), "\(what) must be a positive duration such as 90s, 30m, 2h or 1h30m (or a number of seconds); got `\(scalar.string)`")
        return nil
    }

    /// `1h30m`, `90s`, `500ms`, `2d` → a duration; nil when the text is not one.
    static func parseDuration(_ text: String) -> Duration? {
        var total: Double = 0
        var number = ""
        var unit = ""
        var sawAny = false
        func flush() -> Bool {
            guard let value = Double(number) else { return false }
            let scale: Double
            switch unit {
            case "ms": scale = 0.001
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            case "d": scale = 86_400
            default: return false
            }
            total += value * scale
            number = ""
            unit = ""
            sawAny = true
            return true
        }
        for character in text.trimmingCharacters(in: .whitespaces) {
            if character.isNumber || character == "." {
                if !unit.isEmpty { guard flush() else { return nil } }
                number.append(character)
            } else if character.isLetter {
                guard !number.isEmpty else { return nil }
                unit.append(character)
            } else {
                return nil
            }
        }
        if !number.isEmpty || !unit.isEmpty { guard flush() else { return nil } }
        guard sawAny, total.isFinite else { return nil }
        return .milliseconds(Int64((total * 1000).rounded()))
    }

    /// The node as JSON: scalars typed as YAML 1.2's core schema does (null, booleans, numbers; quoted text
    /// stays text), mappings and sequences recursively. Anchors and aliases are refused.
    mutating func json(_ node: Node, key: String) -> JSONValue? {
        switch node {
        case .scalar(let scalar):
            guard scalar.style == .plain else { return .string(scalar.string) }
            switch node.resolvedTag {
            case .null: return .null
            case .bool: return node.bool.map(JSONValue.bool) ?? .string(scalar.string)
            case .int: return node.int.map { .number(Double($0)) } ?? .string(scalar.string)
            case .float:
                guard let value = node.float, value.isFinite else {
                    record(.invalidValue, at: location(of: node, key: key), "`\(scalar.string)` is not a finite number; JSON has no NaN or infinity (quote it to keep it as text)")
                    return nil
                }
                return .number(value)
            default: return .string(scalar.string)
            }
        case .sequence(let sequence):
            var items: [JSONValue] = []
            var ok = true
            for (index, item) in sequence.enumerated() {
                if let value = json(item, key: "\(key)[\(index)]") { items.append(value) } else { ok = false }
            }
            return ok ? .array(items) : nil
        case .mapping:
            guard let pairs = freeMapping(node, key: key, what: "`\(key)`") else { return nil }
            var object: [String: JSONValue] = [:]
            var ok = true
            for pair in pairs {
                if let value = json(pair.value, key: pair.location.key) { object[pair.key] = value } else { ok = false }
            }
            return ok ? .object(object) : nil
        case .alias:
            record(.invalidValue, at: location(of: node, key: key), "YAML aliases (`*name`) are not supported here; write the value out")
            return nil
        }
    }

    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): return scalar.string.isEmpty ? "an empty value" : "`\(scalar.string)`"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    /// Edit distance ≤ 2 (for "did you mean").
    static func isNear(_ a: String, _ b: String) -> Bool {
        let a = Array(a), b = Array(b)
        guard abs(a.count - b.count) <= 2 else { return false }
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count] <= 2
    }
}

extension Node {
    /// The node's tag after resolution (`tag:yaml.org,2002:int` for a plain `3`); Yams keeps `Tag.name` internal.
    var resolvedTag: Tag.Name { Tag.Name(rawValue: tag.description) }
}
