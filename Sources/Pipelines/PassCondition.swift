import JobProtocol

/// A step's `pass_when`: a small condition on its result, parsed once when the file is validated and evaluated
/// when the job succeeds. A job that succeeds but whose condition is false ends `not_passed`.
///
/// Grammar (no calls, no loops, nothing but reading values):
/// ```
/// condition  := or
/// or         := and ("||" and)*
/// and        := unary ("&&" unary)*
/// unary      := "!" unary | comparison
/// comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
/// operand    := "true" | "false" | "null" | number | "text" | 'text' | path | "(" condition ")"
/// path       := ("result" | "params") ("." name)*      name := [A-Za-z0-9_-]+ (an index into a list is a number)
/// ```
/// A missing field reads as `null`. A bare operand is true only when it is `true`. `<`, `<=`, `>`, `>=` compare two
/// numbers or two strings and are false for anything else; `==` and `!=` compare any JSON values.
public struct PassCondition: Sendable, Hashable, CustomStringConvertible {
    /// The text as written.
    public let source: String
    let expression: ConditionExpression

    /// Parses `source`; the error names the line and column inside it.
    public init(parsing source: String) throws(ConditionSyntaxError) {
        self.source = source
        var parser = ConditionParser(source)
        self.expression = try parser.parseAll()
    }

    public var description: String { source }

    /// The paths it reads, e.g. `["result", "accuracy"]`.
    public var paths: [[String]] { expression.paths }

    /// True when the result passes.
    public func evaluate(result: JSONValue, params: [String: JSONValue] = [:]) -> Bool {
        expression.truth(ConditionInput(result: result, params: params))
    }

    /// Why a result did not pass, with the values it read: "`result.passed == true` is false (result.passed = false)".
    public func explain(result: JSONValue, params: [String: JSONValue] = [:]) -> String {
        let input = ConditionInput(result: result, params: params)
        var seen: Set<[String]> = []
        var values: [String] = []
        for path in paths where seen.insert(path).inserted {
            values.append("\(path.joined(separator: ".")) = \(input.read(path).jsonText)")
        }
        let verdict = expression.truth(input) ? "true" : "false"
        return "`\(source)` is \(verdict)" + (values.isEmpty ? "" : " (\(values.joined(separator: ", ")))")
    }
}

/// Where and why a `pass_when` does not parse (line and column are 1-based, inside the condition's text).
public struct ConditionSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var line: Int
    public var column: Int
    public var description: String { "line \(line), column \(column): \(message)" }
}

struct ConditionInput {
    var result: JSONValue
    var params: [String: JSONValue]

    func read(_ path: [String]) -> JSONValue {
        var current: JSONValue
        switch path.first {
        case "result": current = result
        case "params":
            guard path.count >= 2, let value = params[path[1]] else { return .null }
            current = value
            for segment in path.dropFirst(2) { current = Self.step(current, segment) }
            return current
        default: return .null
        }
        for segment in path.dropFirst() { current = Self.step(current, segment) }
        return current
    }

    static func step(_ value: JSONValue, _ segment: String) -> JSONValue {
        switch value {
        case .object(let fields): return fields[segment] ?? .null
        case .array(let items): return Int(segment).flatMap { items.indices.contains($0) ? items[$0] : nil } ?? .null
        default: return .null
        }
    }
}

enum ComparisonOperator: String, Sendable, Hashable {
    case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
}

indirect enum ConditionExpression: Sendable, Hashable {
    case literal(JSONValue)
    case path([String])
    case not(ConditionExpression)
    case and(ConditionExpression, ConditionExpression)
    case or(ConditionExpression, ConditionExpression)
    case compare(ConditionExpression, ComparisonOperator, ConditionExpression)

    var paths: [[String]] {
        switch self {
        case .literal: return []
        case .path(let path): return [path]
        case .not(let inner): return inner.paths
        case .and(let a, let b), .or(let a, let b), .compare(let a, _, let b): return a.paths + b.paths
        }
    }

    func value(_ input: ConditionInput) -> JSONValue {
        switch self {
        case .literal(let value): return value
        case .path(let path): return input.read(path)
        default: return .bool(truth(input))
        }
    }

    func truth(_ input: ConditionInput) -> Bool {
        switch self {
        case .literal, .path: return value(input) == .bool(true)
        case .not(let inner): return !inner.truth(input)
        case .and(let a, let b): return a.truth(input) && b.truth(input)
        case .or(let a, let b): return a.truth(input) || b.truth(input)
        case .compare(let a, let op, let b):
            let left = a.value(input), right = b.value(input)
            switch op {
            case .equal: return left == right
            case .notEqual: return left != right
            default:
                switch (left, right) {
                case (.number(let x), .number(let y)): return Self.order(x, y, op)
                case (.string(let x), .string(let y)): return Self.order(x, y, op)
                default: return false
                }
            }
        }
    }

    static func order<T: Comparable>(_ x: T, _ y: T, _ op: ComparisonOperator) -> Bool {
        switch op {
        case .less: return x < y
        case .lessOrEqual: return x <= y
        case .greater: return x > y
        case .greaterOrEqual: return x >= y
        case .equal: return x == y
        case .notEqual: return x != y
        }
    }
}

struct ConditionParser {
    enum Token: Equatable {
        case number(Double), string(String), name([String]), keyword(String), symbol(String), end
    }

    private let characters: [Character]
    private var tokens: [(token: Token, offset: Int)] = []
    private var position = 0
    private var lexError: ConditionSyntaxError?

    init(_ source: String) {
        characters = Array(source)
    }

    mutating func parseAll() throws(ConditionSyntaxError) -> ConditionExpression {
        try tokenize()
        guard tokens.count > 1 else { throw error("the condition is empty; write e.g. `result.passed == true`", at: 0) }
        let expression = try parseOr()
        guard case .end = tokens[position].token else {
            throw error("unexpected \(describe(tokens[position].token)) after a complete condition; join conditions with && or ||", at: tokens[position].offset)
        }
        return expression
    }

    private func error(_ message: String, at offset: Int) -> ConditionSyntaxError {
        var line = 1, column = 1
        for character in characters.prefix(offset) {
            if character == "\n" { line += 1; column = 1 } else { column += 1 }
        }
        return ConditionSyntaxError(message: message, line: line, column: column)
    }

    private func describe(_ token: Token) -> String {
        switch token {
        case .number(let value): return "number \(JSONValue.number(value).jsonText)"
        case .string(let text): return "text \"\(text)\""
        case .name(let path): return "`\(path.joined(separator: "."))`"
        case .keyword(let word): return "`\(word)`"
        case .symbol(let symbol): return "`\(symbol)`"
        case .end: return "the end"
        }
    }

    private mutating func tokenize() throws(ConditionSyntaxError) {
        var index = 0
        while index < characters.count {
            let character = characters[index]
            if character.isWhitespace { index += 1; continue }
            let start = index
            if character.isNumber || (character == "-" && index + 1 < characters.count && characters[index + 1].isNumber) {
                index += 1
                while index < characters.count, characters[index].isNumber || ".eE".contains(characters[index])
                    || ((characters[index] == "-" || characters[index] == "+") && "eE".contains(characters[index - 1])) {
                    index += 1
                }
                let text = String(characters[start..<index])
                guard let value = Double(text), value.isFinite else { throw error("`\(text)` is not a number", at: start) }
                tokens.append((.number(value), start))
                continue
            }
            if character == "\"" || character == "'" {
                index += 1
                var text = ""
                var closed = false
                while index < characters.count {
                    let c = characters[index]
                    if c == "\\", index + 1 < characters.count { text.append(characters[index + 1]); index += 2; continue }
                    if c == character { closed = true; index += 1; break }
                    text.append(c)
                    index += 1
                }
                guard closed else { throw error("text opened with \(character) is not closed", at: start) }
                tokens.append((.string(text), start))
                continue
            }
            if character.isLetter || character == "_" {
                var segments: [String] = []
                var segment = ""
                while index < characters.count {
                    let c = characters[index]
                    if c.isASCII && (c.isLetter || c.isNumber || c == "_" || c == "-") {
                        segment.append(c)
                    } else if c == "." {
                        guard !segment.isEmpty else { throw error("empty name between dots", at: index) }
                        segments.append(segment)
                        segment = ""
                    } else {
                        break
                    }
                    index += 1
                }
                guard !segment.isEmpty else { throw error("a name cannot end with `.`", at: index - 1) }
                segments.append(segment)
                if segments.count == 1, ["true", "false", "null"].contains(segments[0]) {
                    tokens.append((.keyword(segments[0]), start))
                } else {
                    guard ["result", "params"].contains(segments[0]) else {
                        throw error("`\(segments.joined(separator: "."))`: a value is read from `result.<field>` or `params.<name>` (or write true, false, null, a number or \"text\")", at: start)
                    }
                    tokens.append((.name(segments), start))
                }
                continue
            }
            let two = index + 1 < characters.count ? String(characters[index...index + 1]) : ""
            if ["==", "!=", "<=", ">=", "&&", "||"].contains(two) {
                tokens.append((.symbol(two), start))
                index += 2
                continue
            }
            if "<>!()".contains(character) {
                tokens.append((.symbol(String(character)), start))
                index += 1
                continue
            }
            if character == "=" { throw error("`=` alone is not an operator; compare with `==`", at: start) }
            if character == "&" || character == "|" { throw error("write `\(character)\(character)`", at: start) }
            throw error("unexpected `\(character)`; allowed: paths, literals, == != < <= > >= && || ! ( )", at: start)
        }
        tokens.append((.end, characters.count))
    }

    private mutating func parseOr() throws(ConditionSyntaxError) -> ConditionExpression {
        var left = try parseAnd()
        while tokens[position].token == .symbol("||") {
            position += 1
            left = .or(left, try parseAnd())
        }
        return left
    }

    private mutating func parseAnd() throws(ConditionSyntaxError) -> ConditionExpression {
        var left = try parseUnary()
        while tokens[position].token == .symbol("&&") {
            position += 1
            left = .and(left, try parseUnary())
        }
        return left
    }

    private mutating func parseUnary() throws(ConditionSyntaxError) -> ConditionExpression {
        if tokens[position].token == .symbol("!") {
            position += 1
            return .not(try parseUnary())
        }
        let left = try parseOperand()
        if case .symbol(let symbol) = tokens[position].token, let op = ComparisonOperator(rawValue: symbol) {
            position += 1
            let right = try parseOperand()
            if case .symbol(let next) = tokens[position].token, ComparisonOperator(rawValue: next) != nil {
                throw error("comparisons do not chain; join them with && or ||", at: tokens[position].offset)
            }
            return .compare(left, op, right)
        }
        return left
    }

    private mutating func parseOperand() throws(ConditionSyntaxError) -> ConditionExpression {
        let (token, offset) = tokens[position]
        position += 1
        switch token {
        case .number(let value): return .literal(.number(value))
        case .string(let text): return .literal(.string(text))
        case .keyword("true"): return .literal(.bool(true))
        case .keyword("false"): return .literal(.bool(false))
        case .keyword: return .literal(.null)
        case .name(let path): return .path(path)
        case .symbol("("):
            let inner = try parseOr()
            guard tokens[position].token == .symbol(")") else {
                throw error("`(` at column \(offset + 1) is not closed", at: tokens[position].offset)
            }
            position += 1
            return inner
        default:
            throw error("expected a value (a path such as result.passed, a number, text, true, false, null or `(`), found \(describe(token))", at: offset)
        }
    }
}
