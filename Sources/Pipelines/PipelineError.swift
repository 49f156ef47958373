/// Where a value sits in a definition file: 1-based line and column, and the key path that leads to it
/// (`steps[2].payload.model`), so every error can name file, line and key.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    /// The file as the caller named it (a path, or `<string>`).
    public var file: String
    public var line: Int
    public var column: Int
    /// The key path from the document's root, e.g. `steps[1].needs[0]` (empty for the root itself).
    public var key: String

    public init(file: String, line: Int, column: Int, key: String) {
        self.file = file
        self.line = line
        self.column = column
        self.key = key
    }

    /// `file:line:column`.
    public var description: String { "\(file):\(line):\(column)" }

    /// The same place moved `columns` to the right (a position inside a scalar on the same line).
    func shifted(by columns: Int) -> SourceLocation {
        SourceLocation(file: file, line: line, column: column + columns, key: key)
    }
}

/// One problem in a pipeline or schedule file, with what to do about it.
public struct DefinitionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of problem: tests and tools match on it, people read `message`.
    public enum Code: String, Sendable, Hashable {
        case yamlSyntax = "yaml_syntax"
        case unknownKey = "unknown_key"
        case missingKey = "missing_key"
        case wrongType = "wrong_type"
        case invalidValue = "invalid_value"
        case duplicateID = "duplicate_id"
        case unknownParent = "unknown_parent"
        case cycle
        case unknownKind = "unknown_kind"
        case badTemplate = "bad_template"
        case templateNotAncestor = "template_not_ancestor"
        case unknownRunField = "unknown_run_field"
        case unknownParam = "unknown_param"
        case badCondition = "bad_condition"
        case badCron = "bad_cron"
        case unknownTimeZone = "unknown_time_zone"
    }

    public var code: Code
    public var location: SourceLocation
    public var message: String

    public init(_ code: Code, at location: SourceLocation, _ message: String) {
        self.code = code
        self.location = location
        self.message = message
    }

    /// `file:line:column: key: message`.
    public var description: String {
        location.key.isEmpty ? "\(location): \(message)" : "\(location): \(location.key): \(message)"
    }
}

/// Every problem found in one file, in file order (validation goes on after the first error).
public struct DefinitionErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [DefinitionError]

    /// The errors sorted by file, line and column.
    public init(_ errors: [DefinitionError]) {
        self.errors = errors.sorted { ($0.location.file, $0.location.line, $0.location.column) < ($1.location.file, $1.location.line, $1.location.column) }
    }

    /// One error a line.
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
